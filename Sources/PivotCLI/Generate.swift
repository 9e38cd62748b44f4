import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate a continuation of a prompt, streamed to stdout.")

    @Option(name: [.customShort("p"), .customLong("prompt")], help: "The prompt text.")
    var prompt: String

    @Option(name: [.customShort("n"), .customLong("n-predict")], parsing: .unconditional, help: "Maximum number of tokens to generate (at least 1).")
    var tokens: Int = 128

    @Flag(help: "Do not print timings to stderr at the end.")
    var quiet = false

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Context") var context: ContextOption
    @OptionGroup(title: "Sampling") var sampling: SamplingOptions
    @OptionGroup(title: "Drafting (faster, same output)") var drafting: DraftOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions
    @OptionGroup(title: "Output shortlist") var shortlist: ShortlistOptions

    func validate() throws { try checkRange("-n", tokens, 1...Int.max) }

    func run() throws {
        let (loaded, generator) = try model.startGenerating(context: context, kv: kv, drafting: drafting, shortlist: shortlist)
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
        if reason == .nonFiniteLogits { throw PivotError.nonFinite(file: loaded.path, "the model produced non-finite logits") }
        if !quiet {
            writeErr(String(format: "\nprompt: %d tokens, %.1f t/s | generated: %d tokens, %.1f t/s\n",
                            stats.promptTokens, stats.promptTokensPerSecond, stats.generatedTokens, stats.decodeTokensPerSecond))
            if let line = drafting.summary(stats) { writeErr(line + "\n") }
            if let line = loaded.shortlist?.summary { writeErr(line + "\n") }
            writeErr(loaded.kvCache.spec.memorySummary(shape: AttentionShape(loaded.config), tokens: generator.cache.capacity) + "\n")
        }
    }
}
