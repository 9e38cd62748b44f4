import Foundation
import Synchronization

/// Why a request could not get a slot.
enum SlotPoolError: Error { case queueFull, cancelled }

/// The bookkeeping of N generation slots (each slot's KV cache lives in `Engine`; the KV memory
/// budget is the scheduler's) and a bounded FIFO queue of requests waiting for one. A slot remembers
/// which tokens its cache holds, so a request whose prompt extends an earlier conversation goes to
/// the slot holding the longest prefix of it.
final class SlotPool: Sendable {
    struct Slot {
        /// Tokens at positions 0..<cache.length.
        var cachedTokens: [Int] = []
        var busy = false
        /// When the slot was last handed out (0: never), for least-recently-used choice.
        var lastUsed = 0
    }

    private struct Waiter {
        var id: Int
        var prompt: [Int]
        var continuation: CheckedContinuation<Int, Error>
    }

    private struct State {
        var slots: [Slot]
        var waiting: [Waiter] = []
        var nextWaiterID = 0
        var clock = 0

        mutating func take(_ index: Int) {
            clock += 1
            slots[index].busy = true
            slots[index].lastUsed = clock
        }

        /// The idle slot sharing the longest prefix with `prompt`; among equals (no prefix shared,
        /// as a rule) the least recently used, so a new conversation does not evict a recent one.
        func bestIdleSlot(for prompt: [Int]) -> Int? {
            slots.indices.filter { !slots[$0].busy }.min { a, b in
                let (sharedA, sharedB) = (commonPrefix(slots[a].cachedTokens, prompt), commonPrefix(slots[b].cachedTokens, prompt))
                return sharedA != sharedB ? sharedA > sharedB : slots[a].lastUsed < slots[b].lastUsed
            }
        }
    }

    private let state: Mutex<State>
    let count: Int
    let queueLimit: Int

    init(count: Int, queueLimit: Int) {
        state = Mutex(State(slots: Array(repeating: Slot(), count: count)))
        self.count = count
        self.queueLimit = queueLimit
    }

    var idleCount: Int { state.withLock { $0.slots.filter { !$0.busy }.count } }
    var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// A free slot — the one whose cache shares the longest prefix with `prompt` — now, or once the
    /// requests queued before this one have theirs (first come, first served); throws `queueFull`
    /// when `queueLimit` requests already wait, `cancelled` when the caller's task is cancelled while waiting.
    func acquire(prompt: [Int]) async throws -> Int {
        enum Claim { case slot(Int), wait(id: Int) }
        let claim: Claim = try state.withLock { state in
            if state.waiting.isEmpty, let index = state.bestIdleSlot(for: prompt) {
                state.take(index)
                return .slot(index)
            }
            guard state.waiting.count < queueLimit else { throw SlotPoolError.queueFull }
            state.nextWaiterID += 1
            return .wait(id: state.nextWaiterID)
        }
        let id: Int
        switch claim {
        case .slot(let index): return index
        case .wait(let waiter): id = waiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let admitted: [(CheckedContinuation<Int, Error>, Int)] = state.withLock { state in
                    if Task.isCancelled { continuation.resume(throwing: SlotPoolError.cancelled); return [] }
                    state.waiting.append(Waiter(id: id, prompt: prompt, continuation: continuation))
                    // Whatever was released between the claim and now.
                    return admitWaiting(&state)
                }
                for (waiter, slot) in admitted { waiter.resume(returning: slot) }
            }
        } onCancel: {
            let (removed, admitted): (CheckedContinuation<Int, Error>?, [(CheckedContinuation<Int, Error>, Int)]) = state.withLock { state in
                guard let at = state.waiting.firstIndex(where: { $0.id == id }) else { return (nil, []) }
                let removed = state.waiting.remove(at: at).continuation
                // The head of the queue leaving may let the next ones in.
                return (removed, admitWaiting(&state))
            }
            removed?.resume(throwing: SlotPoolError.cancelled)
            for (waiter, slot) in admitted { waiter.resume(returning: slot) }
        }
    }

    /// Frees the slot, then hands slots to waiting requests in order.
    func release(_ index: Int) {
        let admitted: [(CheckedContinuation<Int, Error>, Int)] = state.withLock { state in
            state.slots[index].busy = false
            return admitWaiting(&state)
        }
        for (waiter, slot) in admitted { waiter.resume(returning: slot) }
    }

    /// Takes slots for the waiting requests at the head of the queue while slots are idle.
    private func admitWaiting(_ state: inout State) -> [(CheckedContinuation<Int, Error>, Int)] {
        var admitted: [(CheckedContinuation<Int, Error>, Int)] = []
        while let first = state.waiting.first, let index = state.bestIdleSlot(for: first.prompt) {
            state.take(index)
            state.waiting.removeFirst()
            admitted.append((first.continuation, index))
        }
        return admitted
    }

    func cachedTokens(_ index: Int) -> [Int] { state.withLock { $0.slots[index].cachedTokens } }

    func setCachedTokens(_ index: Int, _ tokens: [Int]) { state.withLock { $0.slots[index].cachedTokens = tokens } }
}

func commonPrefix(_ a: [Int], _ b: [Int]) -> Int {
    var n = 0
    while n < min(a.count, b.count) && a[n] == b[n] { n += 1 }
    return n
}

/// Set from the HTTP side (client gone), read by the generation thread between tokens.
final class CancelFlag: Sendable {
    private let value = Atomic(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
