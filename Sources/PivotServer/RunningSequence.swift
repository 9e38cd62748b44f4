import Foundation
import Pivot
import PivotKernels

/// One request inside the continuous batch: what it still has to feed, how it samples, and what it
/// has sent. The scheduler asks it for its share of each pass (`plan`) and hands it the logits of
/// that share (`absorb`); everything between a token and the client happens here.
final class RunningSequence {
    enum Phase { case prefilling, decoding, finished }

    let job: GenerationJob
    let slot: Int
    let generator: Generator
    let cancel: CancelFlag
    let emit: (GenerationEvent) -> Void
    private(set) var phase = Phase.prefilling
    /// Prompt tokens found in the slot's cache.
    let reused: Int
    /// What prefill feeds: the prompt, or after a preemption everything the cache held.
    private var feedTokens: [Int]
    /// Tokens of `feedTokens` in the cache (reused ones included).
    private(set) var fed: Int
    /// Refeeding after a preemption: the prefill ends by going back to decoding `next`, sampling nothing.
    private var resuming = false
    /// Prompt tokens the slot's drafter already knows (the reused prefix; none after a preemption).
    private var drafterKnows: Int
    /// The scheduler counted this sequence's whole prefill against the KV budget (set when it may start).
    var admitted = false
    /// Times the cache was given back under memory pressure.
    private(set) var preemptions = 0
    /// Sampled and sent, not yet in the cache: the next pass feeds it (with any draft after it).
    private var next = 0
    private var draft: [Int] = []
    /// With drafting off for this step, the drafter's one-token guess: it keeps the acceptance estimate current.
    private var probe: Int?
    /// Tokens sent since the drafter last saw the sequence; it sees them when decoding goes on (as in `Generator`).
    private var unobserved: [Int] = []
    /// The tokens of this sequence's share of the pass being run.
    private(set) var planned: [Int] = []
    private var sampler: Sampler
    private var decoder: StreamingDecoder
    private var matcher: StopMatcher
    private var output: [Int] = []
    private var pending: [TokenLogprob] = []
    private var scored: [TokenLogprob]
    private var stoppedBySequence = false
    private var interrupted = false
    private var endedAtEndOfTurn = false
    private var firstToken: UInt64?
    private var lastToken: UInt64 = 0
    private(set) var prefillSeconds = 0.0
    private(set) var decodeSeconds = 0.0
    private let metrics: ServerMetrics
    private let stopAll: CancelFlag

    init(job: GenerationJob, slot: Int, generator: Generator, reused: Int, cancel: CancelFlag, stopAll: CancelFlag,
         metrics: ServerMetrics, emit: @escaping (GenerationEvent) -> Void) {
        // A recurrent state returns only to lengths it kept; the rest of the prefix is fed again.
        let reused = generator.cache.restorableLength(atMost: reused)
        self.job = job; self.slot = slot; self.generator = generator; self.reused = reused; self.cancel = cancel
        self.stopAll = stopAll; self.metrics = metrics; self.emit = emit
        fed = reused
        feedTokens = job.prompt
        drafterKnows = reused
        sampler = job.sampler
        decoder = StreamingDecoder(tokenizer: generator.model.tokenizer)
        matcher = StopMatcher(stops: job.stop)
        scored = [TokenLogprob(unpredicted: job.prompt[0])]
        generator.cache.truncate(to: reused)
        // A prompt that cannot fit with room for one more token ends at once, as `Generator` does.
        if job.prompt.count >= generator.cache.capacity { phase = .finished }
    }

    var cache: KVCache { generator.cache }
    var isPrefilling: Bool { phase == .prefilling }
    /// Tokens prefill still has to feed.
    var remainingFeed: Int { phase == .prefilling ? feedTokens.count - fed : 0 }
    var prompt: [Int] { job.prompt }

    /// This sequence's tokens for the next pass and which logits it needs: while decoding, the token
    /// last sent (plus a draft, verified on all rows); while prefilling, up to `budget` prompt tokens
    /// (an echoed prompt in pieces of at most `scoringRows`, every row scored). Nil: nothing to feed.
    /// `mayDraft`: false when the KV budget has no room for drafts this pass.
    func plan(budget: Int, scoringRows: Int, mayDraft: Bool = true) -> (tokens: [Int], logits: LogitRows)? {
        switch phase {
        case .finished: return nil
        case .decoding:
            if cancel.isSet || stopAll.isSet { interrupted = true; phase = .finished; return nil }
            if cache.length + 1 >= cache.capacity { phase = .finished; return nil }
            if let drafter = generator.drafter, !unobserved.isEmpty { drafter.observe(unobserved) }
            unobserved = []
            probe = nil
            draft = mayDraft ? makeDraft() : []
            planned = [next] + draft
            return (planned, draft.isEmpty ? .last : .all)
        case .prefilling:
            if cancel.isSet || stopAll.isSet { interrupted = true; phase = .finished; return nil }
            let scoring = job.echo && !resuming
            let limit = scoring ? min(budget, scoringRows) : budget
            guard limit > 0 else { return nil }
            planned = Array(feedTokens[fed..<min(feedTokens.count, fed + limit)])
            return (planned, scoring ? .all : .last)
        }
    }

    /// The draft for this step, as `Generator` makes it: only when the policy expects it to pay.
    private func makeDraft() -> [Int] {
        guard let drafter = generator.drafter else { return [] }
        let room = min(job.maxTokens - output.count - 1, cache.capacity - cache.length - 2, generator.draftPolicy.maxDraft)
        let wanted = room > 0 ? generator.draftPolicy.length(limit: room) : 0
        if room > 0 && wanted == 0 { probe = drafter.draft(limit: 1).first }
        return wanted > 0 ? drafter.draft(limit: wanted) : []
    }

    /// Takes the logits of its planned tokens (one row, or one per token for `.all`) after a pass
    /// of `seconds` that fed them (`alone`: no other sequence was in it, so the time is this share's cost).
    func absorb(_ rows: Matrix, seconds: Double, alone: Bool) {
        let vocabulary = generator.model.config.vocabularySize
        switch phase {
        case .finished: return
        case .prefilling:
            prefillSeconds += seconds
            let first = fed
            fed += planned.count
            if job.echo && !resuming {
                for r in 0..<planned.count where first + r + 1 < job.prompt.count {
                    scored.append(TokenLogprob(token: job.prompt[first + r + 1], logits: rows.row(r), count: vocabulary, top: job.logprobs ?? 0))
                }
            }
            guard fed == feedTokens.count else { return }
            if resuming {
                // Back where it was: the cache holds everything but `next`, which the drafter has yet to see.
                resuming = false
                generator.drafter?.reset(context: feedTokens)
                unobserved = [next]
                phase = .decoding
                return
            }
            if job.echo { emit(.prompt(scored)) }
            let last = UnsafePointer(rows.row(rows.rows - 1))
            guard job.maxTokens > 0, allFinite(last, count: vocabulary) else { phase = .finished; return }
            if let drafter = generator.drafter {
                if drafterKnows == 0 { drafter.reset(context: job.prompt) } else { drafter.observe(Array(job.prompt[drafterKnows...])) }
            }
            phase = .decoding
            take(sampler.sample(last, count: vocabulary), row: last)
        case .decoding:
            decodeSeconds += seconds
            // Pass costs are learnt from passes this sequence had to itself; a shared pass's time is not its share's.
            let learns = alone && generator.drafter != nil
            guard !draft.isEmpty else {
                if learns { generator.draftPolicy.recordPass(tokens: planned.count, seconds: seconds) }
                let row = UnsafePointer(rows.row(0))
                let token = sampler.sample(row, count: vocabulary)
                if let probe { generator.draftPolicy.recordVerification(proposed: 1, accepted: probe == token ? 1 : 0) }
                take(token, row: row)
                return
            }
            let base = cache.length - planned.count
            let (accepted, replacement) = sampler.verify(draft: draft, rows: rows, count: vocabulary)
            generator.draftPolicy.recordVerification(proposed: draft.count, accepted: accepted)
            // A recurrent state's replay of the kept tokens is part of what the draft cost.
            let replay = generator.rewind(to: base + 1 + accepted, passStart: base, passTokens: planned)
            decodeSeconds += replay
            if learns { generator.draftPolicy.recordPass(tokens: planned.count, seconds: seconds + replay) }
            for i in 0..<accepted {
                take(draft[i], row: UnsafePointer(rows.row(i)))
                if phase == .finished { return }
            }
            let row = UnsafePointer(rows.row(accepted))
            take(replacement ?? sampler.sample(row, count: vocabulary), row: row)
        }
    }

    /// One generated token: metrics, logprobs, text through the stop matcher; ends the sequence on
    /// an end-of-turn token, a stop string, `max_tokens` or a cancelled client.
    private func take(_ token: Int, row: UnsafePointer<Float>) {
        let tokenizer = generator.model.tokenizer
        let now = DispatchTime.now().uptimeNanoseconds
        if firstToken == nil {
            firstToken = now
            metrics.observeFirstToken(Double(now - min(now, job.arrival)) / 1e9)
        } else { metrics.observeInterToken(Double(now - lastToken) / 1e9) }
        lastToken = now
        output.append(token)
        next = token
        unobserved.append(token)
        if let top = job.logprobs { pending.append(TokenLogprob(token: token, logits: row, count: generator.model.config.vocabularySize, top: top)) }
        if !job.ignoreEOS && tokenizer.stopTokens.contains(token) { endedAtEndOfTurn = true; phase = .finished; return }
        let piece = tokenizer.isSpecial(token) ? "" : decoder.push(token)
        let (text, stopped) = matcher.push(piece)
        if !text.isEmpty { emit(.text(text, pending)); pending = [] }
        if stopped { stoppedBySequence = true; phase = .finished; return }
        if output.count >= job.maxTokens { phase = .finished }
    }

    /// Gives the cache's memory back (vLLM's preemption by recomputation): the sequence will feed again
    /// everything its cache held — its prompt, and what it generated except the token not yet fed —
    /// and go on from there. Greedy output is unchanged, since the int8 and F16 projections give the
    /// same keys and values whether tokens are fed in a prompt chunk or one by one.
    func preempt() {
        switch phase {
        case .finished: return
        case .decoding:
            feedTokens = job.prompt + output.dropLast()
            resuming = true
            phase = .prefilling
        case .prefilling:
            // Nothing sent yet (or a resumption cut short): feed from the start; an echoed prompt is scored again.
            if !resuming { scored = [TokenLogprob(unpredicted: job.prompt[0])] }
        }
        fed = 0
        drafterKnows = 0
        admitted = false
        preemptions += 1
        cache.truncate(to: 0)
    }

    /// Ends the sequence where it stands: the client left, the server is stopping (interrupted), or
    /// its cache alone outgrew the KV budget (finish reason "length", as at the context's end).
    func stop(interrupted: Bool) {
        guard phase != .finished else { return }
        self.interrupted = self.interrupted || interrupted
        phase = .finished
    }

    /// Stops a sequence whose client left or whose server is stopping, whatever it is waiting for.
    func checkInterrupted() {
        if cancel.isSet || stopAll.isSet { stop(interrupted: true) }
    }

    /// Sends what is held back and says how the request ended; the slot then remembers its tokens.
    func finish() -> Completion {
        phase = .finished
        if !stoppedBySequence {
            let (text, stopped) = matcher.push(decoder.flush())
            let rest = stopped ? text : text + matcher.flush()
            if !rest.isEmpty || !pending.isEmpty { emit(.text(rest, pending)) }
            stoppedBySequence = stopped
        }
        let firstTokenSeconds = firstToken.map { Double($0 - min($0, job.arrival)) / 1e9 }
        // Stopped by the client or a shutdown: cut short, as by max_tokens.
        let finish = !interrupted && (endedAtEndOfTurn || stoppedBySequence) ? "stop" : "length"
        return Completion(finishReason: finish, promptTokens: job.prompt.count, cachedTokens: reused,
                          completionTokens: output.count, prefillSeconds: prefillSeconds,
                          decodeSeconds: decodeSeconds, slot: slot, firstTokenSeconds: firstTokenSeconds)
    }

    /// The tokens the cache holds now, for prefix reuse by the next request on this slot.
    var cachedTokens: [Int] { Array((job.prompt + output).prefix(cache.length)) }
}
