import Foundation
import PivotKernels

/// Timings of one generation, llama.cpp style.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    /// Forward passes after the prompt (each decodes one token or verifies a draft).
    public var decodeSteps = 0
    public var draftedTokens = 0
    public var acceptedTokens = 0
    public init() {}
    /// Fraction of drafted tokens the model accepted.
    public var acceptanceRate: Double { draftedTokens > 0 ? Double(acceptedTokens) / Double(draftedTokens) : 0 }
    /// Tokens generated per forward pass after the prompt.
    public var tokensPerStep: Double { decodeSteps > 0 ? Double(generatedTokens) / Double(decodeSteps) : 0 }
    public var promptTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(generatedTokens) / decodeSeconds : 0 }
}

/// Why generation ended.
/// `nonFiniteLogits`: the prompt's logits hold NaN or infinity (broken weights); nothing was generated.
public enum StopReason: Sendable { case endOfSequence, maxTokens, contextFull, nonFiniteLogits }

/// Prefill + decode loop over one model, one cache and one set of buffers.
public final class Generator {
    public let model: LoadedModel
    public let cache: KVCache
    /// Made on first use: a server's batched engine keeps only the cache and the drafter.
    private(set) lazy var state = ForwardState(config: model.config, maxTokens: maxBatch, allLogits: false, execution: execution)
    /// The most tokens one pass of its own feeds (its cache takes at least this many).
    public let maxBatch: Int
    /// The pool and precision its passes run with.
    public let execution: Execution
    /// Proposes tokens to verify in one pass; nil: plain decoding.
    public var drafter: Drafter?
    /// Chooses how many tokens to draft from acceptance and measured pass costs.
    public var draftPolicy: DraftPolicy
    /// Buffers with logits for every row, for verifying a draft.
    private lazy var verifyState = ForwardState(config: model.config, maxTokens: Self.maxVerify, allLogits: true,
                                                execution: execution)
    public static let maxVerify = 33
    /// Buffers for replaying kept draft tokens into a recurrent state (one row of logits, unused); made on first use.
    private lazy var replayState = ForwardState(config: model.config, maxTokens: Self.maxVerify, allLogits: false, execution: execution)
    /// Buffers with logits for every row of a scored feed (a server's echoed prompt logprobs); made on first use.
    private lazy var scoringState = ForwardState(config: model.config, maxTokens: 64, allLogits: true,
                                                 execution: execution)

    public init(model: LoadedModel, execution: Execution, contextLength: Int? = nil, maxBatch: Int = 512,
                drafter: Drafter? = nil, maxDraft: Int = 10) {
        precondition((1..<Self.maxVerify).contains(maxDraft))
        self.model = model
        draftPolicy = DraftPolicy(maxDraft: maxDraft)
        cache = model.makeCache(capacity: contextLength, maxBatch: max(maxBatch, Self.maxVerify))
        self.maxBatch = maxBatch
        self.execution = execution
        self.drafter = drafter
    }

    /// Feeds `prompt` (after whatever the cache already holds) and generates up to `maxTokens`,
    /// calling `onToken` with each id (return false to stop). Stops at end-of-turn tokens.
    ///
    /// With a drafter, each step feeds the last token plus the draft in one pass, keeps the longest
    /// draft prefix the sampler accepts (`Sampler.verify`), adds the model's own next token, and
    /// truncates the cache past the rejected rest: the output is what plain decoding gives.
    @discardableResult
    public func generate(prompt: [Int], maxTokens: Int, sampler: inout Sampler,
                         stats: inout GenerationStats, onToken: (Int) -> Bool) -> StopReason {
        generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stats: &stats) { token, _ in onToken(token) }
    }

    /// As above; `onToken` also gets the raw logits the token was drawn from (before temperature or
    /// any filter), valid only during the call: what a server's logprobs are computed from.
    @discardableResult
    public func generate(prompt: [Int], maxTokens: Int, sampler: inout Sampler,
                         stats: inout GenerationStats, onToken: (Int, UnsafePointer<Float>) -> Bool) -> StopReason {
        let transformer = model.transformer
        let vocabulary = model.config.vocabularySize
        guard !prompt.isEmpty else { return .maxTokens }
        if cache.length + prompt.count >= cache.capacity { return .contextFull }
        model.shortlist?.include(prompt)
        var start = DispatchTime.now().uptimeNanoseconds
        let logits = transformer.forward(prompt, cache: cache, state: state, logits: .last)
        stats.promptTokens += prompt.count
        stats.prefillSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        start = DispatchTime.now().uptimeNanoseconds
        defer { stats.decodeSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        guard allFinite(logits.row(0), count: vocabulary) else { return .nonFiniteLogits }
        if drafter != nil && cache.length == prompt.count { drafter?.reset(context: prompt) } else { drafter?.observe(prompt) }
        var nextRow = UnsafePointer(logits.row(0))
        var next = sampler.sample(nextRow, count: vocabulary)
        var generated = 0
        /// Hands one token out with the row it came from; nil to go on, else why generation ends.
        func emit(_ token: Int, _ row: UnsafePointer<Float>) -> StopReason? {
            generated += 1
            stats.generatedTokens += 1
            if model.tokenizer.stopTokens.contains(token) { _ = onToken(token, row); return .endOfSequence }
            if !onToken(token, row) { return .endOfSequence }
            if generated >= maxTokens { return .maxTokens }
            return nil
        }
        while true {
            if let reason = emit(next, nextRow) { return reason }
            drafter?.observe([next])
            // Room for the draft: the tokens still wanted (one is the model's own) and the cache.
            let room = min(maxTokens - generated - 1, cache.capacity - cache.length - 2, draftPolicy.maxDraft)
            let wanted = drafter != nil && room > 0 ? draftPolicy.length(limit: room) : 0
            let draft = wanted > 0 ? drafter?.draft(limit: wanted) ?? [] : []
            stats.decodeSteps += 1
            if draft.isEmpty {
                if cache.length + 1 >= cache.capacity { return .contextFull }
                // The drafter's guess for this step costs a table lookup: it keeps the acceptance estimate
                // current while drafting is off.
                let probe = room > 0 && wanted == 0 ? drafter?.draft(limit: 1).first : nil
                let passStart = DispatchTime.now().uptimeNanoseconds
                let row = UnsafePointer(transformer.forward(token: next, cache: cache, state: state).row(0))
                if drafter != nil { draftPolicy.recordPass(tokens: 1, seconds: Double(DispatchTime.now().uptimeNanoseconds - passStart) / 1e9) }
                nextRow = row
                next = sampler.sample(row, count: vocabulary)
                if let probe { draftPolicy.recordVerification(proposed: 1, accepted: probe == next ? 1 : 0) }
                continue
            }
            let base = cache.length
            let passStart = DispatchTime.now().uptimeNanoseconds
            let rows = transformer.forward([next] + draft, cache: cache, state: verifyState, logits: .all)
            let passSeconds = Double(DispatchTime.now().uptimeNanoseconds - passStart) / 1e9
            let (accepted, replacement) = sampler.verify(draft: draft, rows: rows, count: vocabulary)
            stats.draftedTokens += draft.count
            stats.acceptedTokens += accepted
            draftPolicy.recordVerification(proposed: draft.count, accepted: accepted)
            // A recurrent state's replay of the kept tokens is part of what the draft cost.
            let replay = rewind(to: base + 1 + accepted, passStart: base, passTokens: [next] + draft)
            draftPolicy.recordPass(tokens: draft.count + 1, seconds: passSeconds + replay)
            for (i, token) in draft.prefix(accepted).enumerated() {
                if let reason = emit(token, rows.row(i)) { return reason }
            }
            drafter?.observe(Array(draft.prefix(accepted)))
            // The replacement was drawn from row `accepted`; with every draft token accepted that is the last row.
            nextRow = UnsafePointer(rows.row(accepted))
            next = replacement ?? sampler.sample(nextRow, count: vocabulary)
        }
    }

    /// Appends `tokens` to the cache without sampling (a prompt fed in pieces: the server lets other
    /// slots decode between them). Returns the seconds spent.
    @discardableResult
    public func feed(_ tokens: [Int]) -> Double {
        guard !tokens.isEmpty else { return 0 }
        precondition(cache.length + tokens.count < cache.capacity, "feed past the cache's capacity")
        let start = DispatchTime.now().uptimeNanoseconds
        _ = model.transformer.forward(tokens, cache: cache, state: state, logits: .last)
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Appends `tokens` like `feed`, handing `onRow` each position's logits (the distribution of the
    /// token after it): scoring a prompt costs one pass over it, in pieces of 64 tokens.
    @discardableResult
    public func feed(_ tokens: [Int], onRow: (_ position: Int, _ logits: UnsafePointer<Float>) -> Void) -> Double {
        guard !tokens.isEmpty else { return 0 }
        precondition(cache.length + tokens.count < cache.capacity, "feed past the cache's capacity")
        let start = DispatchTime.now().uptimeNanoseconds
        var position = 0
        while position < tokens.count {
            let end = min(tokens.count, position + scoringState.maxTokens)
            let logits = model.transformer.forward(Array(tokens[position..<end]), cache: cache, state: scoringState, logits: .all)
            for p in position..<end { onRow(p, UnsafePointer(logits.row(p - position))) }
            position = end
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    public func reset() { cache.truncate(to: 0) }

    /// Cuts the cache back to `target` tokens after a verification pass that fed `passTokens` from
    /// `passStart`: an attention cache forgets the rejected tail; a recurrent state (Mamba), which cannot,
    /// returns to the pass's start and feeds the kept tokens again.
    /// Returns the seconds a replay took (0 without one).
    @discardableResult
    public func rewind(to target: Int, passStart: Int, passTokens: [Int]) -> Double {
        let kept = cache.restorableLength(atMost: target)
        precondition(kept >= passStart, "the cache cannot return to the verification pass's start")
        cache.truncate(to: kept)
        guard kept < target else { return 0 }
        let start = DispatchTime.now().uptimeNanoseconds
        _ = model.transformer.forward(Array(passTokens[(kept - passStart)..<(target - passStart)]), cache: cache, state: replayState, logits: .last)
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
