import ArgumentParser
import Foundation
import Pivot

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Interactive chat using the model's chat template.",
        discussion: """
            Type a message and press Enter; the reply streams to stdout. Commands (never sent to the model): /help lists \
            commands and keys, /reset forgets the conversation, /exit or /quit leaves; //text sends "/text".

            At a terminal the line can be edited: Left/Right, Home/End (Ctrl-A/Ctrl-E), Backspace/Delete, Ctrl-U/Ctrl-K \
            (delete to the start/end), Ctrl-W (the word before), Up/Down for earlier lines (kept in \
            ~/.cache/pivot/chat_history unless --no-history). Ctrl-C during a reply stops it (what was said stays in \
            the conversation); at the prompt it clears the line; Ctrl-C twice on an empty line, or Ctrl-D, quits.

            Piped: each stdin line is one turn; stdout gets only the replies, each ended by a newline; status lines \
            (the banner, [interrupted], [reply cut at -n N tokens], [conversation cleared]) go to stderr. The KV cache \
            is kept between turns, so only new text is processed.
            """)


    @Option(name: .customLong("system"), help: "System prompt (default: the template's own, if any).")
    var system: String?

    @Option(name: [.customShort("n"), .customLong("n-predict")], parsing: .unconditional, help: "Maximum tokens per reply (at least 1).")
    var tokens: Int = 512

    @Flag(name: .customLong("no-history"), help: "Neither read nor save the line history (~/.cache/pivot/chat_history, the last 500 lines typed at a terminal).")
    var noHistory = false

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Context") var context: ContextOption
    @OptionGroup(title: "Sampling") var sampling: SamplingOptions
    @OptionGroup(title: "Drafting (faster, same output)") var drafting: DraftOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions
    @OptionGroup(title: "Output shortlist") var shortlist: ShortlistOptions

    func validate() throws { try checkRange("-n", tokens, 1...Int.max) }

    func run() throws {
        let (loaded, generator) = try model.startGenerating(context: context, kv: kv, drafting: drafting, shortlist: shortlist)
        var sampler = sampling.makeSampler(defaults: loaded.generationDefaults)
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        var cached: [Int] = []
        let input = ChatInput(historyFile: noHistory ? nil : ChatInput.defaultHistoryFile)
        if input.interactive { ReplyInterrupt.install() }
        writeErr("Chatting with \((loaded.path as NSString).lastPathComponent). /help for commands, Ctrl-D to quit.\n")
        /// Set by a Ctrl-C that stopped a reply or met an empty line: one more at an empty line quits.
        var quitArmed = false
        conversation: while true {
            let text: String
            switch input.next() {
            case .endOfInput:
                break conversation
            case .cancelled(let dropped):
                if dropped.isEmpty {
                    if quitArmed { break conversation }
                    writeErr("[Ctrl-C again or Ctrl-D to quit]\n")
                }
                quitArmed = dropped.isEmpty
                continue
            case .line(let line):
                quitArmed = false
                switch ChatCommand.parse(line) {
                case .empty: continue
                case .exit: break conversation
                case .help: writeErr(ChatCommand.helpText); continue
                case .unknown(let word): writeErr("[unknown command \(word); the commands are /help, /reset, /exit, /quit; //text sends /text]\n"); continue
                case .reset:
                    messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                    cached = []
                    generator.reset()
                    writeErr("[conversation cleared]\n")
                    continue
                case .message(let message): text = message
                }
            }
            messages.append(ChatMessage(role: "user", content: text))
            let prompt = loaded.tokenizer.encode(loaded.chatTemplate.render(messages))
            // Reuse the cached prefix; feed only what is new.
            var common = 0
            while common < min(cached.count, prompt.count) - 1 && cached[common] == prompt[common] { common += 1 }
            common = generator.cache.restorableLength(atMost: common)
            generator.cache.truncate(to: common)
            guard prompt.count + 1 < generator.cache.capacity else {
                writeErr("[the conversation is longer than the context (\(generator.cache.capacity) tokens); /reset to start over]\n")
                messages.removeLast()
                continue
            }
            var reply: [Int] = []
            var decoder = StreamingDecoder(tokenizer: loaded.tokenizer)
            var stats = GenerationStats()
            var interrupted = false
            ReplyInterrupt.clear()
            let reason = generator.generate(prompt: Array(prompt[common...]), maxTokens: tokens, sampler: &sampler, stats: &stats) { id in
                if ReplyInterrupt.requested { interrupted = true; return false }
                reply.append(id)
                if !loaded.tokenizer.isSpecial(id) { writeOut(decoder.push(id)) }
                return true
            }
            ReplyInterrupt.clear()
            writeOut(decoder.flush())
            if interrupted { writeErr(" [interrupted]") }
            writeOut("\n")
            if let line = drafting.summary(stats) { writeErr(String(format: "[%.1f t/s; ", stats.decodeTokensPerSecond) + line + "]\n") }
            if reason == .nonFiniteLogits { throw PivotError.nonFinite(file: loaded.path, "the model produced non-finite logits") }
            if reason == .contextFull { writeErr("[context full (\(generator.cache.capacity) tokens); /reset to start over]\n") }
            if reason == .maxTokens && !interrupted { writeErr("[reply cut at -n \(tokens) tokens]\n") }
            if interrupted {
                quitArmed = true
                // Every token handed out before the stop was fed to the cache.
                cached = prompt + reply
                if reply.isEmpty { messages.removeLast(); continue }
            } else {
                cached = prompt + reply
                // The cache holds everything but the last sampled token.
                cached.removeLast()
            }
            messages.append(ChatMessage(role: "assistant", content: loaded.tokenizer.decode(reply, skipSpecial: true)))
        }
    }
}

/// Where chat lines come from: the line editor when stdin and stdout are terminals, plain lines
/// otherwise; a piped stdout never sees a prompt.
private struct ChatInput {
    let editor: LineEditor?
    /// stdin is a terminal: Ctrl-C goes to `ReplyInterrupt` and a prompt is shown somewhere.
    let interactive = isatty(STDIN_FILENO) == 1

    static var defaultHistoryFile: URL {
        let environment = ProcessInfo.processInfo.environment
        let cache = environment["XDG_CACHE_HOME"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return cache.appendingPathComponent("pivot/chat_history")
    }

    init(historyFile: URL?) {
        editor = LineEditor(prompt: "> ", historyFile: historyFile)
    }

    func next() -> LineEditor.Input {
        if let editor { return editor.read() }
        // Typed at a terminal with stdout redirected: the prompt goes to stderr.
        if interactive { writeErr("> ") }
        guard let line = readLine() else {
            if interactive { writeErr("\n") }
            return .endOfInput
        }
        return .line(line)
    }
}
