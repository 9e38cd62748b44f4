import Foundation
import Synchronization

/// Why a request could not get a slot.
enum SlotPoolError: Error {
    case queueFull, cancelled
    /// The request alone would need more KV cache than the whole budget (bytes).
    case overBudget(needs: Double, budget: Double)
}

/// The bookkeeping of N generation slots (each slot's KV cache lives in `Engine`), the KV memory
/// budget and a bounded FIFO queue of requests waiting for both. A request is admitted when a slot
/// is idle and the KV bytes it may need at most (prompt + max_tokens, as its cache type stores
/// them) fit beside what the running requests reserved: a compressed cache admits more sequences
/// in the same memory, and since every reservation covers its worst case, a running sequence never
/// runs out of room. A slot remembers which tokens its cache holds, so a request whose prompt
/// extends an earlier conversation goes to the slot holding the longest prefix of it.
final class SlotPool: Sendable {
    struct Slot {
        /// Tokens at positions 0..<cache.length.
        var cachedTokens: [Int] = []
        var busy = false
        /// When the slot was last handed out (0: never), for least-recently-used choice.
        var lastUsed = 0
        /// KV bytes reserved by the request running here.
        var reserved = 0.0
    }

    private struct Waiter {
        var id: Int
        var prompt: [Int]
        var cost: Double
        var continuation: CheckedContinuation<Int, Error>
    }

    private struct State {
        var slots: [Slot]
        var waiting: [Waiter] = []
        var nextWaiterID = 0
        var clock = 0
        var reserved = 0.0

        mutating func take(_ index: Int, cost: Double) {
            clock += 1
            slots[index].busy = true
            slots[index].lastUsed = clock
            slots[index].reserved = cost
            reserved += cost
        }

        /// The idle slot sharing the longest prefix with `prompt`; among equals (no prefix shared,
        /// as a rule) the least recently used, so a new conversation does not evict a recent one.
        func bestIdleSlot(for prompt: [Int]) -> Int? {
            slots.indices.filter { !slots[$0].busy }.min { a, b in
                let (sharedA, sharedB) = (commonPrefix(slots[a].cachedTokens, prompt), commonPrefix(slots[b].cachedTokens, prompt))
                return sharedA != sharedB ? sharedA > sharedB : slots[a].lastUsed < slots[b].lastUsed
            }
        }

        /// A slot for a request of `cost` bytes now, if one is idle and the budget has room.
        func admissible(_ prompt: [Int], cost: Double, budget: Double) -> Int? {
            reserved + cost <= budget * (1 + 1e-9) ? bestIdleSlot(for: prompt) : nil
        }
    }

    private let state: Mutex<State>
    let count: Int
    let queueLimit: Int
    /// KV cache bytes the running requests may reserve together.
    let budget: Double

    init(count: Int, queueLimit: Int, budget: Double = .infinity) {
        state = Mutex(State(slots: Array(repeating: Slot(), count: count)))
        self.count = count
        self.queueLimit = queueLimit
        self.budget = budget
    }

    var idleCount: Int { state.withLock { $0.slots.filter { !$0.busy }.count } }
    var waitingCount: Int { state.withLock { $0.waiting.count } }
    /// KV bytes reserved by the running requests.
    var reservedBytes: Double { state.withLock { $0.reserved } }

    /// A slot for a request whose KV cache may grow to `cost` bytes — the idle one whose cache shares
    /// the longest prefix with `prompt` — now, or once the requests queued before it are admitted and
    /// enough has been released (first come, first served); throws `overBudget` when `cost` alone
    /// exceeds the budget, `queueFull` when `queueLimit` requests already wait, `cancelled` when the
    /// caller's task is cancelled while waiting.
    func acquire(prompt: [Int], cost: Double = 0) async throws -> Int {
        guard cost <= budget * (1 + 1e-9) else { throw SlotPoolError.overBudget(needs: cost, budget: budget) }
        enum Claim { case slot(Int), wait(id: Int) }
        let claim: Claim = try state.withLock { state in
            if state.waiting.isEmpty, let index = state.admissible(prompt, cost: cost, budget: budget) {
                state.take(index, cost: cost)
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
                    state.waiting.append(Waiter(id: id, prompt: prompt, cost: cost, continuation: continuation))
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

    /// Frees the slot and its reservation, then admits waiting requests in order while they fit.
    func release(_ index: Int) {
        let admitted: [(CheckedContinuation<Int, Error>, Int)] = state.withLock { state in
            state.slots[index].busy = false
            state.reserved = max(0, state.reserved - state.slots[index].reserved)
            state.slots[index].reserved = 0
            return admitWaiting(&state)
        }
        for (waiter, slot) in admitted { waiter.resume(returning: slot) }
    }

    /// Takes slots for the waiting requests at the head of the queue while each fits.
    private func admitWaiting(_ state: inout State) -> [(CheckedContinuation<Int, Error>, Int)] {
        var admitted: [(CheckedContinuation<Int, Error>, Int)] = []
        while let first = state.waiting.first, let index = state.admissible(first.prompt, cost: first.cost, budget: budget) {
            state.take(index, cost: first.cost)
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
