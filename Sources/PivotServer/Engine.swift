import Foundation
import Pivot
import Synchronization

/// What one request asks the model for, validated.
struct GenerationJob: Sendable {
    var prompt: [Int]
    var maxTokens: Int
    var sampler: Sampler
    var stop: [String]
    /// llama-server's extension: end-of-turn tokens do not stop generation.
    var ignoreEOS = false
    /// Report each generated token's logprob with this many alternatives; nil: no logprobs.
    var logprobs: Int?
    /// Score the prompt too (legacy completions' `echo`): its cached prefix is not reused, since
    /// every position's logits are needed.
    var echo = false
    /// When the request arrived (uptime nanoseconds), for time to first token.
    var arrival = DispatchTime.now().uptimeNanoseconds
}

/// How a request ended, with OpenAI's usage and llama-server's timings.
struct Completion: Sendable {
    var finishReason: String
    var promptTokens: Int
    /// Prompt tokens found in the slot's cache and not computed again.
    var cachedTokens: Int
    var completionTokens: Int
    var prefillSeconds: Double
    var decodeSeconds: Double
    var slot: Int
    /// From arrival to the first generated token (queueing and prefill included); nil if none.
    var firstTokenSeconds: Double?
}

enum GenerationEvent: Sendable {
    /// Text safe to send, with the logprobs of the tokens it completes (when asked for).
    case text(String, [TokenLogprob])
    /// The prompt's tokens scored (`echo` with logprobs); the first has no logprob.
    case prompt([TokenLogprob])
    case finished(Completion)
}

/// The model, its slots and the turn that serializes forward passes. Each running request has a
/// thread of its own (forward passes block; they never run on Swift's cooperative pool).
/// `@unchecked` because Pivot's `LoadedModel` and `Generator` are not `Sendable`: the model is
/// read-only once loaded, and a slot's generator is used only by the thread holding that slot.
final class Engine: @unchecked Sendable {
    let model: LoadedModel
    let modelName: String
    let contextLength: Int
    let slots: SlotPool
    /// One per slot, each with its own KV cache.
    private let generators: [Generator]
    private let turn = FairTurn()
    let metrics = ServerMetrics()
    /// Set when draining runs out of time: every running generation stops at its next token.
    let stopAll = CancelFlag()
    /// Tokens each slot's cache holds now (updated by its generation thread), and the cost per token.
    private let heldTokens: Mutex<[Int]>
    private let bytesPerToken: [Double]
    /// Prompt tokens per forward pass before other slots get a turn.
    static let prefillPiece = 256

    init(model: LoadedModel, modelName: String, generators: [Generator], queueLimit: Int) {
        self.model = model
        self.modelName = modelName
        contextLength = generators[0].cache.capacity
        self.generators = generators
        slots = SlotPool(count: generators.count, queueLimit: queueLimit)
        heldTokens = Mutex(Array(repeating: 0, count: generators.count))
        bytesPerToken = generators.map { $0.cache.bytesPerToken }
    }

    /// Bytes of KV cache holding tokens now, and reserved in all (every slot's full context).
    var kvCacheBytes: (used: Double, capacity: Double) {
        let held = heldTokens.withLock { $0 }
        return (zip(held, bytesPerToken).map { Double($0) * $1 }.reduce(0, +),
                bytesPerToken.map { $0 * Double(contextLength) }.reduce(0, +))
    }

    private func hold(_ tokens: Int, slot: Int) { heldTokens.withLock { $0[slot] = tokens } }

    /// Runs `job` on slot `slot` (already acquired; released here when generation ends). Text
    /// arrives in pieces that never split a character or the start of a stop sequence.
    func start(_ job: GenerationJob, slot: Int, cancel: CancelFlag) -> AsyncStream<GenerationEvent> {
        let (stream, events) = AsyncStream<GenerationEvent>.makeStream()
        events.onTermination = { _ in cancel.set() }
        let thread = Thread { [self] in
            let completion = generate(job, slot: slot, cancel: cancel) { events.yield($0) }
            metrics.count(completion)
            slots.release(slot)
            events.yield(.finished(completion))
            events.finish()
        }
        thread.stackSize = 8 << 20
        thread.start()
        return stream
    }

    private func generate(_ job: GenerationJob, slot: Int, cancel: CancelFlag, emit: (GenerationEvent) -> Void) -> Completion {
        let tokenizer = model.tokenizer
        let vocabulary = model.config.vocabularySize
        let generator = generators[slot]
        turn.acquire()
        // Keep the longest cached prefix; at least one prompt token is fed to get logits.
        let reused = job.echo ? 0 : min(commonPrefix(slots.cachedTokens(slot), job.prompt), job.prompt.count - 1)
        generator.cache.truncate(to: reused)
        generator.stopsAtEndOfTurn = !job.ignoreEOS
        // A long prompt goes in pieces, with a turn for the other slots between them, so their
        // streams do not stall for the whole prefill. (With a drafter, the prompt is fed whole: the
        // drafter learns its n-grams from what `generate` is given.) An echoed prompt is scored as it goes.
        var fed = reused
        var feedSeconds = 0.0
        var scored = [TokenLogprob(unpredicted: job.prompt[0])]
        while job.echo || generator.drafter == nil, job.prompt.count - 1 - fed > (job.echo ? 0 : Self.prefillPiece) {
            let piece = Array(job.prompt[fed..<min(fed + Self.prefillPiece, job.prompt.count - 1)])
            if job.echo {
                feedSeconds += generator.feed(piece) { p, row in
                    scored.append(TokenLogprob(token: job.prompt[fed + p + 1], logits: row, count: vocabulary, top: job.logprobs ?? 0))
                }
            } else {
                feedSeconds += generator.feed(piece)
            }
            fed += piece.count
            hold(fed, slot: slot)
            turn.release()
            turn.acquire()
        }
        if job.echo { emit(.prompt(scored)) }
        var sampler = job.sampler
        var stats = GenerationStats()
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var matcher = StopMatcher(stops: job.stop)
        var output: [Int] = []
        var pending: [TokenLogprob] = []
        var stoppedBySequence = false
        var firstToken: UInt64?, lastToken: UInt64 = 0
        var interrupted = false
        let reason = job.maxTokens == 0 ? .maxTokens : generator.generate(prompt: Array(job.prompt[fed...]), maxTokens: job.maxTokens,
                                                                         sampler: &sampler, stats: &stats) { token, row in
            let now = DispatchTime.now().uptimeNanoseconds
            if firstToken == nil {
                firstToken = now
                metrics.observeFirstToken(Double(now - min(now, job.arrival)) / 1e9)
            } else { metrics.observeInterToken(Double(now - lastToken) / 1e9) }
            lastToken = now
            output.append(token)
            hold(generator.cache.length, slot: slot)
            // Every generated token has its logprob, the end-of-turn one too (lm-evaluation-harness drops the last entry
            // of an echoed reply as the generated one).
            if let top = job.logprobs { pending.append(TokenLogprob(token: token, logits: row, count: vocabulary, top: top)) }
            if !job.ignoreEOS && tokenizer.stopTokens.contains(token) { return false }
            let piece = tokenizer.isSpecial(token) ? "" : decoder.push(token)
            let (text, stopped) = matcher.push(piece)
            if !text.isEmpty { emit(.text(text, pending)); pending = [] }
            if stopped { stoppedBySequence = true; return false }
            // Let the other slots take a pass before this one's next token.
            turn.release()
            turn.acquire()
            interrupted = cancel.isSet || stopAll.isSet
            return !interrupted
        }
        let cached = Array((job.prompt + output).prefix(generator.cache.length))
        slots.setCachedTokens(slot, cached)
        hold(cached.count, slot: slot)
        turn.release()
        if !stoppedBySequence {
            let (text, stopped) = matcher.push(decoder.flush())
            let rest = stopped ? text : text + matcher.flush()
            if !rest.isEmpty || !pending.isEmpty { emit(.text(rest, pending)) }
            stoppedBySequence = stopped
        }
        let firstTokenSeconds = firstToken.map { Double($0 - min($0, job.arrival)) / 1e9 }
        // Stopped by the client or a shutdown: cut short, as by max_tokens.
        let finish = !interrupted && (reason == .endOfSequence || stoppedBySequence) ? "stop" : "length"
        return Completion(finishReason: finish, promptTokens: job.prompt.count, cachedTokens: reused,
                          completionTokens: stats.generatedTokens, prefillSeconds: stats.prefillSeconds + feedSeconds,
                          decodeSeconds: stats.decodeSeconds, slot: slot, firstTokenSeconds: firstTokenSeconds)
    }
}

/// Finds stop sequences in streamed text. Text that could still become a stop sequence is held
/// back until it cannot, so a client never receives part of one.
struct StopMatcher {
    let stops: [String]
    private var pending = ""

    init(stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds `piece`; returns the text that is safe to send and whether a stop sequence was found
    /// (the text is then everything before it).
    mutating func push(_ piece: String) -> (text: String, stopped: Bool) {
        pending += piece
        guard !stops.isEmpty else { defer { pending = "" }; return (pending, false) }
        var earliest: String.Index?
        for stop in stops {
            if let range = pending.range(of: stop), earliest.map({ range.lowerBound < $0 }) ?? true { earliest = range.lowerBound }
        }
        if let earliest {
            defer { pending = "" }
            return (String(pending[..<earliest]), true)
        }
        var hold = 0
        for stop in stops {
            for length in stride(from: min(stop.count - 1, pending.count), to: hold, by: -1)
            where pending.hasSuffix(stop.prefix(length)) {
                hold = length
                break
            }
        }
        let text = String(pending.dropLast(hold))
        pending = String(pending.suffix(hold))
        return (text, false)
    }

    /// Text held back when generation ends without a stop sequence.
    mutating func flush() -> String { defer { pending = "" }; return pending }
}
