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

/// The model, its slots and the scheduler that runs them: one thread builds each forward pass from
/// every running request (continuous batching: the next token of each decoding sequence, with its
/// draft, and chunks of pending prompts), runs it, and hands each sequence its logits.
/// `@unchecked` because Pivot's `LoadedModel` and `Generator` are not `Sendable`: the model is
/// read-only once loaded, and caches and generators are touched only by the scheduler thread.
final class Engine: @unchecked Sendable {
    let model: LoadedModel
    let modelName: String
    let contextLength: Int
    let slots: SlotPool
    /// One per slot: its KV cache and drafter (its own buffers are not used).
    private let generators: [Generator]
    let metrics = ServerMetrics()
    /// Set when draining runs out of time: every running generation stops at its next token.
    let stopAll = CancelFlag()
    /// Tokens each slot's cache holds now (updated by the scheduler), and the cost per token.
    private let heldTokens: Mutex<[Int]>
    private let bytesPerToken: [Double]
    /// Bytes per token of the costliest slot's cache: what the budget counts tokens in.
    let budgetBytesPerToken: Double
    private let scheduler: BatchScheduler

    /// KV cache bytes the running requests' caches may hold together.
    let kvBudgetBytes: Double
    /// `kvBudgetBytes` in tokens of the slots' cache (Int.max without a budget).
    let kvBudgetTokens: Int

    /// `kvBudget`: KV cache bytes the running requests' caches may hold together (beyond it the newest
    /// is preempted and recomputed later); nil: no limit but every slot's own context.
    init(model: LoadedModel, modelName: String, generators: [Generator], queueLimit: Int, kvBudget: Double? = nil) {
        self.model = model
        self.modelName = modelName
        contextLength = generators[0].cache.capacity
        self.generators = generators
        heldTokens = Mutex(Array(repeating: 0, count: generators.count))
        bytesPerToken = generators.map { $0.cache.bytesPerToken }
        slots = SlotPool(count: generators.count, queueLimit: queueLimit)
        let perToken = bytesPerToken.max()!
        budgetBytesPerToken = perToken
        kvBudgetBytes = kvBudget ?? perToken * Double(generators.count * generators[0].cache.capacity)
        // A recurrent state (Mamba) holds nothing per token: no budget can run out.
        kvBudgetTokens = perToken > 0 ? kvBudget.map { Int(($0 / perToken).rounded(.down)) } ?? .max : .max
        scheduler = BatchScheduler(model: model, slots: generators.count, drafting: generators[0].drafter != nil,
                                   maxBatch: generators.map(\.maxBatch).min()!, execution: generators[0].execution,
                                   budgetTokens: kvBudgetTokens, metrics: metrics)
    }

    /// Bytes of KV cache holding tokens now, and reserved in all (every slot's full context).
    var kvCacheBytes: (used: Double, capacity: Double) {
        let held = heldTokens.withLock { $0 }
        return (zip(held, bytesPerToken).map { Double($0) * $1 }.reduce(0, +),
                bytesPerToken.map { $0 * Double(contextLength) }.reduce(0, +))
    }

    /// KV bytes the running requests hold or are about to feed, as the budget counts them.
    var kvBudgetUsedBytes: Double { Double(scheduler.tokensClaimed) * budgetBytesPerToken }

    /// Requests whose KV caches are resident (the rest of the busy slots wait for KV memory).
    var sequencesResident: Int { scheduler.sequencesResident }

    func hold(_ tokens: Int, slot: Int) { heldTokens.withLock { $0[slot] = tokens } }

    /// Runs `job` on slot `slot` (already acquired; released here when generation ends). Text
    /// arrives in pieces that never split a character or the start of a stop sequence.
    func start(_ job: GenerationJob, slot: Int, cancel: CancelFlag) -> AsyncStream<GenerationEvent> {
        let (stream, events) = AsyncStream<GenerationEvent>.makeStream()
        events.onTermination = { _ in cancel.set() }
        // Keep the longest cached prefix (none when the prompt is scored); at least one prompt token is fed for logits.
        let reused = job.echo ? 0 : min(commonPrefix(slots.cachedTokens(slot), job.prompt), job.prompt.count - 1)
        scheduler.submit { [self] in
            RunningSequence(job: job, slot: slot, generator: generators[slot], reused: reused, cancel: cancel, stopAll: stopAll,
                            metrics: metrics) { events.yield($0) }
        } onFinish: { [self] sequence in
            let completion = sequence.finish()
            let cached = sequence.cachedTokens
            slots.setCachedTokens(slot, cached)
            hold(cached.count, slot: slot)
            metrics.count(completion)
            slots.release(slot)
            events.yield(.finished(completion))
            events.finish()
        } onPass: { [self] sequence in
            hold(sequence.cache.length, slot: slot)
        }
        return stream
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
