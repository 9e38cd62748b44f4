import ArgumentParser
import Foundation
import Pivot

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Interactive chat using the model's chat template.",
        discussion: "Type a message and press Enter. Commands: /reset starts over, /exit (or Ctrl-D) quits. The KV cache is kept between turns, so only new text is processed.")


    @Option(name: .customLong("system"), help: "System prompt (default: the template's own, if any).")
    var system: String?

    @Option(name: [.customShort("n"), .customLong("n-predict")], parsing: .unconditional, help: "Maximum tokens per reply (at least 1).")
    var tokens: Int = 512

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Context") var context: ContextOption
    @OptionGroup(title: "Sampling") var sampling: SamplingOptions
    @OptionGroup(title: "Drafting (faster, same output)") var drafting: DraftOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions

    func validate() throws { try checkRange("-n", tokens, 1...Int.max) }

    func run() throws {
        let pool = model.makePool()
        let configuration = try model.configuration(kv: kv, draft: drafting)
        let loaded = try model.load(configuration, pool: pool)
        let generator = Generator(model: loaded, configuration: configuration, pool: pool, contextLength: context.cacheSize(for: loaded))
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
