import Foundation
import Pivot

/// What one request asks the model for, validated.
struct GenerationJob: Sendable {
    var prompt: [Int]
    var maxTokens: Int
    var sampler: Sampler
    var stop: [String]
    /// llama-server's extension: end-of-turn tokens do not stop generation.
    var ignoreEOS = false
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
}

enum GenerationEvent: Sendable {
    case text(String)
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
    /// Prompt tokens per forward pass before other slots get a turn.
    static let prefillPiece = 256

    init(model: LoadedModel, modelName: String, generators: [Generator], queueLimit: Int) {
        self.model = model
        self.modelName = modelName
        contextLength = generators[0].cache.capacity
        self.generators = generators
        slots = SlotPool(count: generators.count, queueLimit: queueLimit)
    }

    /// Runs `job` on slot `slot` (already acquired; released here when generation ends). Text
    /// arrives in pieces that never split a character or the start of a stop sequence.
    func start(_ job: GenerationJob, slot: Int, cancel: CancelFlag) -> AsyncStream<GenerationEvent> {
        let (stream, events) = AsyncStream<GenerationEvent>.makeStream()
        events.onTermination = { _ in cancel.set() }
        let thread = Thread { [self] in
            let completion = generate(job, slot: slot, cancel: cancel) { events.yield(.text($0)) }
            slots.release(slot)
            events.yield(.finished(completion))
            events.finish()
        }
        thread.stackSize = 8 << 20
        thread.start()
        return stream
    }

    private func generate(_ job: GenerationJob, slot: Int, cancel: CancelFlag, emit: (String) -> Void) -> Completion {
        let tokenizer = model.tokenizer
        let generator = generators[slot]
        turn.acquire()
        // Keep the longest cached prefix; at least one prompt token is fed to get logits.
        let reused = min(commonPrefix(slots.cachedTokens(slot), job.prompt), job.prompt.count - 1)
        generator.cache.truncate(to: reused)
        generator.stopsAtEndOfTurn = !job.ignoreEOS
        // A long prompt goes in pieces, with a turn for the other slots between them, so their
        // streams do not stall for the whole prefill. (With a drafter, the prompt is fed whole: the
        // drafter learns its n-grams from what `generate` is given.)
        var fed = reused
        var feedSeconds = 0.0
        if generator.drafter == nil {
            while job.prompt.count - 1 - fed > Self.prefillPiece {
                feedSeconds += generator.feed(Array(job.prompt[fed..<fed + Self.prefillPiece]))
                fed += Self.prefillPiece
                turn.release()
                turn.acquire()
            }
        }
        var sampler = job.sampler
        var stats = GenerationStats()
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var matcher = StopMatcher(stops: job.stop)
        var output: [Int] = []
        var stoppedBySequence = false
        let reason = generator.generate(prompt: Array(job.prompt[fed...]), maxTokens: job.maxTokens,
                                        sampler: &sampler, stats: &stats) { token in
            output.append(token)
            if !job.ignoreEOS && tokenizer.stopTokens.contains(token) { return false }
            let piece = tokenizer.isSpecial(token) ? "" : decoder.push(token)
            let (text, stopped) = matcher.push(piece)
            if !text.isEmpty { emit(text) }
            if stopped { stoppedBySequence = true; return false }
            // Let the other slots take a pass before this one's next token.
            turn.release()
            turn.acquire()
            return !cancel.isSet
        }
        slots.setCachedTokens(slot, Array((job.prompt + output).prefix(generator.cache.length)))
        turn.release()
        if !stoppedBySequence {
            let (text, stopped) = matcher.push(decoder.flush())
            let rest = stopped ? text : text + matcher.flush()
            if !rest.isEmpty { emit(rest) }
            stoppedBySequence = stopped
        }
        let finish = reason == .endOfSequence || stoppedBySequence ? "stop" : "length"
        return Completion(finishReason: finish, promptTokens: job.prompt.count, cachedTokens: reused,
                          completionTokens: stats.generatedTokens, prefillSeconds: stats.prefillSeconds + feedSeconds,
                          decodeSeconds: stats.decodeSeconds, slot: slot)
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
