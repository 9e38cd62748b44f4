import Foundation
import Pivot

/// Why a request could not get a slot.
enum SlotPoolError: Error { case queueFull, cancelled }

/// N generation slots over one model, each with its own KV cache, and a bounded FIFO queue of
/// requests waiting for one. A slot remembers which tokens its cache holds, so a request whose
/// prompt extends an earlier conversation goes to the slot holding the longest prefix of it and
/// prefills only the rest.
final class SlotPool: @unchecked Sendable {
    struct Slot {
        let generator: Generator
        /// Tokens at positions 0..<cache.length.
        var cachedTokens: [Int] = []
        var busy = false
        /// When the slot was last handed out (0: never), for least-recently-used choice.
        var lastUsed = 0
    }

    private var slots: [Slot]
    private var waiting: [(id: Int, continuation: CheckedContinuation<Int, Error>)] = []
    private var nextWaiterID = 0
    private var clock = 0
    private let lock = NSLock()
    let queueLimit: Int

    init(generators: [Generator], queueLimit: Int) {
        slots = generators.map { Slot(generator: $0) }
        self.queueLimit = queueLimit
    }

    var count: Int { slots.count }
    var idleCount: Int { lock.withLock { slots.filter { !$0.busy }.count } }
    var waitingCount: Int { lock.withLock { waiting.count } }

    /// A free slot — the one whose cache shares the longest prefix with `prompt` — or the first
    /// one freed after the requests queued before this one; throws `queueFull` when `queueLimit`
    /// requests already wait, `cancelled` when the caller's task is cancelled while waiting.
    func acquire(prompt: [Int]) async throws -> Int {
        enum Claim { case slot(Int), wait(id: Int) }
        let claim: Claim = try lock.withLock {
            if let index = bestIdleSlot(for: prompt) { take(index); return .slot(index) }
            guard waiting.count < queueLimit else { throw SlotPoolError.queueFull }
            nextWaiterID += 1
            return .wait(id: nextWaiterID)
        }
        let id: Int
        switch claim {
        case .slot(let index): return index
        case .wait(let waiter): id = waiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                lock.withLock {
                    if Task.isCancelled { continuation.resume(throwing: SlotPoolError.cancelled); return }
                    waiting.append((id, continuation))
                }
            }
        } onCancel: {
            let removed: CheckedContinuation<Int, Error>? = lock.withLock {
                guard let at = waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return waiting.remove(at: at).continuation
            }
            removed?.resume(throwing: SlotPoolError.cancelled)
        }
    }

    /// Hands the slot to the longest-waiting request, or marks it idle.
    func release(_ index: Int) {
        let next: CheckedContinuation<Int, Error>? = lock.withLock {
            if waiting.isEmpty { slots[index].busy = false; return nil }
            take(index)
            return waiting.removeFirst().continuation
        }
        next?.resume(returning: index)
    }

    func generator(_ index: Int) -> Generator { slots[index].generator }

    func cachedTokens(_ index: Int) -> [Int] { lock.withLock { slots[index].cachedTokens } }

    func setCachedTokens(_ index: Int, _ tokens: [Int]) { lock.withLock { slots[index].cachedTokens = tokens } }

    private func take(_ index: Int) {
        clock += 1
        slots[index].busy = true
        slots[index].lastUsed = clock
    }

    /// The idle slot sharing the longest prefix with `prompt`; among equals (no prefix shared, as
    /// a rule) the least recently used, so a new conversation does not evict a recent one.
    private func bestIdleSlot(for prompt: [Int]) -> Int? {
        slots.indices.filter { !slots[$0].busy }.min { a, b in
            let (sharedA, sharedB) = (commonPrefix(slots[a].cachedTokens, prompt), commonPrefix(slots[b].cachedTokens, prompt))
            return sharedA != sharedB ? sharedA > sharedB : slots[a].lastUsed < slots[b].lastUsed
        }
    }
}

func commonPrefix(_ a: [Int], _ b: [Int]) -> Int {
    var n = 0
    while n < min(a.count, b.count) && a[n] == b[n] { n += 1 }
    return n
}

/// A FIFO turn for the one thread pool: each slot's generation thread holds it for one forward
/// pass and queues again, so concurrent requests advance token by token in arrival order.
final class FairTurn: @unchecked Sendable {
    private let condition = NSCondition()
    private var nextTicket = 0
    private var serving = 0

    func acquire() {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        while serving != ticket { condition.wait() }
        condition.unlock()
    }

    func release() {
        condition.lock()
        serving += 1
        condition.broadcast()
        condition.unlock()
    }
}

/// Set from the HTTP side (client gone), read by the generation thread between tokens.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
