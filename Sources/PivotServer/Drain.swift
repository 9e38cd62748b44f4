import Synchronization

/// Graceful shutdown's state: while serving, requests enter and leave; once draining (SIGTERM,
/// SIGINT), new requests are refused with 503 and the server waits for the ones inside to leave.
/// A request is inside from its arrival until its whole response (a stream too) has been written.
public final class DrainGate: Sendable {
    public enum Phase: Equatable { case serving, draining }

    private struct State {
        var phase = Phase.serving
        var inside = 0
    }

    private let state = Mutex(State())

    public init() {}

    public var phase: Phase { state.withLock { $0.phase } }
    public var inside: Int { state.withLock { $0.inside } }

    /// Admits a request (true) unless draining has begun (false: answer 503).
    public func enter() -> Bool {
        state.withLock { state in
            guard state.phase == .serving else { return false }
            state.inside += 1
            return true
        }
    }

    public func leave() { state.withLock { $0.inside -= 1 } }

    /// Stops admitting requests; returns false when draining had already begun.
    @discardableResult
    public func beginDrain() -> Bool {
        state.withLock { state in
            defer { state.phase = .draining }
            return state.phase == .serving
        }
    }

    /// Waits until draining has begun and every admitted request has left, or `seconds` have passed
    /// since draining began; true when every request finished. Throws only on cancellation.
    public func drained(within seconds: Double, poll: Duration = .milliseconds(50)) async throws -> Bool {
        while phase == .serving { try await Task.sleep(for: poll) }
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while inside > 0 {
            if ContinuousClock.now >= deadline { return false }
            try await Task.sleep(for: poll)
        }
        return true
    }
}
