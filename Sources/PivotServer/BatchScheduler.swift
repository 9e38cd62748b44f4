import Foundation
import Pivot
import PivotKernels
import Synchronization

/// Continuous batching: one thread builds every forward pass from all running sequences — first
/// the next token of each decoding one (with its draft, if any), then prompt chunks of those still
/// prefilling, in arrival order, up to `prefillChunk` tokens — runs it as one batched pass
/// (`Transformer.forward(batch:)`), and hands each sequence its rows of logits. A new request joins
/// at the next pass; a finished one leaves after the pass that finished it.
///
/// KV memory: the running sequences' caches may hold `budgetTokens` tokens together. A prompt starts
/// prefilling (first come, first served) once all of it fits beside what the others hold and will
/// feed; when decoding outgrows the budget, the newest sequence holding memory is preempted — its
/// cache emptied, to be fed again later — as vLLM does; it is never dropped.
/// `@unchecked`: the inbox is guarded by `condition`; everything else belongs to the scheduler thread.
final class BatchScheduler: @unchecked Sendable {
    /// What to do with a request's sequence after each pass and at the end.
    private struct Hooks {
        var onFinish: (RunningSequence) -> Void
        var onPass: (RunningSequence) -> Void
    }

    /// A request on its way in: how to make its sequence (on the scheduler thread, which owns the caches).
    private struct Arrival {
        var make: () -> RunningSequence
        var hooks: Hooks
    }

    private struct Member {
        var sequence: RunningSequence
        var hooks: Hooks
    }

    /// Prompt tokens per pass: long prompts go in chunks so running streams keep their pace.
    static let defaultPrefillChunk = 256
    /// `defaultPrefillChunk`, or less where the slots' caches take fewer tokens per pass.
    private let prefillChunk: Int
    /// Most rows of an echoed (scored) prompt per pass: each row is a whole vocabulary of logits.
    static let scoringRows = 64

    private let model: LoadedModel
    private let state: ForwardState
    private let condition = NSCondition()
    private var inbox: [Arrival] = []
    private var members: [Member] = []
    /// Tokens the running sequences' caches may hold together (Int.max: no budget).
    private let budgetTokens: Int
    private let metrics: ServerMetrics
    /// Tokens the running sequences hold or will feed, as the budget counts them (for /metrics).
    private let claimedTokens = Atomic(0)
    var tokensClaimed: Int { claimedTokens.load(ordering: .relaxed) }
    /// Sequences whose caches hold tokens or which may prefill (within the budget); the others wait for memory.
    private let residentCount = Atomic(0)
    var sequencesResident: Int { residentCount.load(ordering: .relaxed) }

    /// `slots`: most sequences at once; `drafting`: whether a decoding sequence may feed a draft;
    /// `maxBatch`: the most tokens a slot's cache takes in one pass.
    init(model: LoadedModel, slots: Int, drafting: Bool, maxBatch: Int, execution: Execution, budgetTokens: Int = .max,
         metrics: ServerMetrics) {
        self.model = model
        self.budgetTokens = budgetTokens
        self.metrics = metrics
        prefillChunk = min(Self.defaultPrefillChunk, maxBatch)
        let perSequence = drafting ? Generator.maxVerify : 1
        let maxTokens = prefillChunk + slots * perSequence
        state = ForwardState(config: model.config, maxTokens: maxTokens,
                             logitRows: min(maxTokens, slots * perSequence + Self.scoringRows), execution: execution)
        let thread = Thread { [weak self] in
            // The loop holds the scheduler only for one step at a time, so it ends with its engine.
            while let scheduler = self { scheduler.step() }
        }
        thread.name = "pivot-batch"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Adds a request; it joins the next pass.
    func submit(_ make: @escaping () -> RunningSequence, onFinish: @escaping (RunningSequence) -> Void,
                onPass: @escaping (RunningSequence) -> Void) {
        condition.lock()
        inbox.append(Arrival(make: make, hooks: Hooks(onFinish: onFinish, onPass: onPass)))
        condition.signal()
        condition.unlock()
    }

    /// Admits arrivals, runs one pass over every running sequence, retires the finished ones. Waits
    /// (up to a second) when there is nothing to run.
    private func step() {
        condition.lock()
        if inbox.isEmpty && members.isEmpty { _ = condition.wait(until: Date(timeIntervalSinceNow: 1)) }
        let arrivals = inbox
        inbox = []
        condition.unlock()
        for arrival in arrivals {
            members.append(Member(sequence: arrival.make(), hooks: arrival.hooks))
        }
        for member in members { member.sequence.checkInterrupted() }
        retireFinished()
        guard !members.isEmpty else { return }
        var free = makeRoom()

        var tokens: [Int] = []
        var slices: [SequenceSlice] = []
        var fed: [Int] = []
        var rowsLeft = state.logitRows
        func add(_ index: Int, _ plan: (tokens: [Int], logits: LogitRows)) {
            let slice = SequenceSlice(cache: members[index].sequence.cache, start: tokens.count, count: plan.tokens.count, logits: plan.logits)
            slices.append(slice)
            tokens += plan.tokens
            rowsLeft -= slice.logitRows
            fed.append(index)
        }
        let decoding = members.indices.filter { !members[$0].sequence.isPrefilling }
        // Drafts only where the budget has room for every decoding sequence's longest.
        let mayDraft = free >= decoding.count * Generator.maxVerify
        for index in decoding {
            if let plan = members[index].sequence.plan(budget: 0, scoringRows: 0, mayDraft: mayDraft) { add(index, plan) }
        }
        var budget = min(prefillChunk, state.maxTokens - tokens.count)
        var waiting = false
        for (index, member) in members.enumerated() where member.sequence.isPrefilling && budget > 0 && rowsLeft > 0 {
            let sequence = member.sequence
            if !sequence.admitted {
                // Its whole prompt, and the first generated token, must fit; later arrivals wait behind it.
                guard !waiting, sequence.remainingFeed + 1 <= free else { waiting = true; continue }
                free -= sequence.remainingFeed + 1
                sequence.admitted = true
            }
            guard let plan = sequence.plan(budget: budget, scoringRows: min(Self.scoringRows, rowsLeft)) else { continue }
            add(index, plan)
            budget -= plan.tokens.count
        }
        if !slices.isEmpty {
            let start = DispatchTime.now().uptimeNanoseconds
            let logits = model.transformer.forward(batch: tokens, sequences: slices, state: state)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            var row = 0
            for (slice, index) in zip(slices, fed) {
                members[index].sequence.absorb(logits.rows(row, slice.logitRows), seconds: seconds, alone: slices.count == 1)
                row += slice.logitRows
            }
        }
        for member in members { member.hooks.onPass(member.sequence) }
        retireFinished()
        residentCount.store(members.filter { $0.sequence.cache.length > 0 || $0.sequence.admitted || !$0.sequence.isPrefilling }.count,
                            ordering: .relaxed)
    }

    /// Preempts the newest sequences holding KV memory until every decoding one has room for its next
    /// token; returns the tokens still free. A sequence that alone outgrows the budget stops ("length").
    private func makeRoom() -> Int {
        guard budgetTokens < .max else { return .max }
        func claimed(_ s: RunningSequence) -> Int { s.cache.length + (s.admitted ? s.remainingFeed : 0) + (s.isPrefilling ? 0 : 1) }
        var used = members.reduce(0) { $0 + claimed($1.sequence) }
        while used > budgetTokens, let victim = members.lastIndex(where: { claimed($0.sequence) > 0 && $0.sequence.phase != .finished }) {
            let sequence = members[victim].sequence
            used -= claimed(sequence)
            if members.allSatisfy({ $0.sequence === sequence || claimed($0.sequence) == 0 }) {
                sequence.stop(interrupted: false)
            } else {
                sequence.preempt()
                metrics.countPreemption()
            }
        }
        retireFinished()
        claimedTokens.store(used, ordering: .relaxed)
        return budgetTokens - used
    }

    private func retireFinished() {
        members.removeAll { member in
            guard member.sequence.phase == .finished else { return false }
            member.hooks.onFinish(member.sequence)
            return true
        }
    }
}
