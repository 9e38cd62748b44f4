import ArgumentParser
import Foundation
import Pivot

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Interactive chat using the model's chat template.",
        discussion: "Type a message and press Enter. Commands: /reset starts over, /exit (or Ctrl-D) quits. The KV cache is kept between turns, so only new text is processed.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var context: ContextOption

    @Option(name: .customLong("system"), help: "System prompt (default: the template's own, if any).")
    var system: String?

    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Maximum tokens per reply.")
    var tokens: Int = 512

    @OptionGroup var sampling: SamplingOptions

    @OptionGroup var drafting: DraftOptions

    @OptionGroup var precisionOption: PrecisionOption
    @OptionGroup var kv: KVCacheOptions
    var precision: ActivationPrecision { precisionOption.precision }

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
        var sampler = sampling.makeSampler(defaults: loaded.generationDefaults)
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        var cached: [Int] = []
        writeErr("Chatting with \((loaded.path as NSString).lastPathComponent). /reset to start over, /exit to quit.\n")
        while true {
            writeOut("> ")
            guard let line = readLine() else { writeOut("\n"); break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                cached = []
                generator.reset()
                continue
            }
            messages.append(ChatMessage(role: "user", content: input))
            let prompt = loaded.tokenizer.encode(loaded.chatTemplate.render(messages))
            // Reuse the cached prefix; feed only what is new.
            var common = 0
            while common < min(cached.count, prompt.count) - 1 && cached[common] == prompt[common] { common += 1 }
            generator.cache.truncate(to: common)
            guard prompt.count + 1 < generator.cache.capacity else {
                writeErr("[the conversation is longer than the context (\(generator.cache.capacity) tokens); /reset to start over]\n")
                messages.removeLast()
                continue
            }
            var reply: [Int] = []
            var decoder = StreamingDecoder(tokenizer: loaded.tokenizer)
            var stats = GenerationStats()
            let reason = generator.generate(prompt: Array(prompt[common...]), maxTokens: tokens, sampler: &sampler, stats: &stats) { id in
                reply.append(id)
                if !loaded.tokenizer.isSpecial(id) { writeOut(decoder.push(id)) }
                return true
            }
            writeOut(decoder.flush() + "\n")
            if let line = drafting.summary(stats) { writeErr(String(format: "[%.1f t/s; ", stats.decodeTokensPerSecond) + line + "]\n") }
            if reason == .contextFull { writeErr("[context full (\(generator.cache.capacity) tokens); /reset to start over]\n") }
            let text = loaded.tokenizer.decode(reply, skipSpecial: true)
            messages.append(ChatMessage(role: "assistant", content: text))
            cached = prompt + reply
            // The cache holds everything but the last sampled token.
            cached.removeLast()
        }
    }
}
