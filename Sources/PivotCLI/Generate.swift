import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate a continuation of a prompt, streamed to stdout.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var context: ContextOption

    @Option(name: [.customShort("p"), .customLong("prompt")], help: "The prompt text.")
    var prompt: String

    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Maximum number of tokens to generate.")
    var tokens: Int = 128

    @OptionGroup var sampling: SamplingOptions

    @OptionGroup var drafting: DraftOptions

    @OptionGroup var precisionOption: PrecisionOption
    @OptionGroup var kv: KVCacheOptions
    var precision: ActivationPrecision { precisionOption.precision }

    @Flag(help: "Do not print timings to stderr at the end.")
    var quiet = false

    func validate() throws {
        guard tokens > 0 else { throw ValidationError("-n must be positive") }
        try sampling.check()
        try drafting.check()
    }

    func run() throws {
        let loaded = try model.load()
        try kv.apply(to: loaded)
        let generator = Generator(model: loaded, pool: model.makePool(), contextLength: context.cacheSize(for: loaded), precision: precision,
                                  drafter: drafting.makeDrafter(), maxDraft: drafting.draftMax)
        let ids = loaded.tokenizer.encode(prompt)
        guard !ids.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
        guard ids.count < generator.cache.capacity else {
            throw ValidationError("the prompt has \(ids.count) tokens; the context holds \(generator.cache.capacity) (raise --ctx-size)")
        }
        var sampler = sampling.makeSampler(defaults: loaded.generationDefaults)
        var stats = GenerationStats()
        var decoder = StreamingDecoder(tokenizer: loaded.tokenizer)
        writeOut(prompt)
        let reason = generator.generate(prompt: ids, maxTokens: tokens, sampler: &sampler, stats: &stats) { id in
            if !loaded.tokenizer.isSpecial(id) { writeOut(decoder.push(id)) }
            return true
        }
        writeOut(decoder.flush() + "\n")
        if reason == .contextFull { writeErr("[stopped: the context of \(generator.cache.capacity) tokens is full; raise --ctx-size]\n") }
        if !quiet {
            writeErr(String(format: "\nprompt: %d tokens, %.1f t/s | generated: %d tokens, %.1f t/s\n",
                            stats.promptTokens, stats.promptTokensPerSecond, stats.generatedTokens, stats.decodeTokensPerSecond))
            if let line = drafting.summary(stats) { writeErr(line + "\n") }
            writeErr(loaded.kvCache.memorySummary(shape: AttentionShape(loaded.config), tokens: generator.cache.capacity) + "\n")
        }
    }
}
