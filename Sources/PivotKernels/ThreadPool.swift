import Foundation
import Synchronization

/// One persistent pool of worker threads shared by every kernel.
///
/// Decode issues a few hundred parallel regions per token, so dispatch must cost microseconds:
/// workers spin on a generation counter for a while before they park on a condition variable.
/// The calling thread always takes part, so `threads == 1` runs inline with no synchronization.
public final class ThreadPool: @unchecked Sendable {
    public var threads: Int { state.threads }
    private let state: PoolState

    public init(threads: Int = ThreadPool.defaultThreadCount) {
        state = PoolState(threads: max(1, threads))
        for index in 1..<state.threads {
            let shared = state
            let thread = Thread { shared.workerLoop() }
            thread.name = "pivot-worker-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit { state.shutDown() }

    /// All cores: the kernels are bandwidth-bound and the machines we target have few cores.
    public static var defaultThreadCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Runs `body(chunk)` for every chunk in `0..<chunks`, spread across the pool; returns when all are done.
    /// One small allocation per call; hot paths use `run(_:chunks:)` with a reused job object.
    public func parallelFor(chunks: Int, _ body: (Int) -> Void) { state.parallelFor(chunks: chunks, body) }

    /// Runs `job.run(chunk:)` for every chunk, without allocating.
    public func run(_ job: ParallelJob, chunks: Int) { state.run(job, chunks: chunks) }

    /// How `parallelRanges` would split `count` items: (chunk size, chunk count).
    public func rangeSplit(count: Int, minChunk: Int = 1) -> (size: Int, chunks: Int) {
        let target = max(1, min(threads * 4, count / max(1, minChunk)))
        let size = (count + target - 1) / target
        return (size, (count + size - 1) / size)
    }

    /// Splits `0..<count` into about `threads * 4` ranges and runs `body(range)` on each.
    public func parallelRanges(count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let (size, chunks) = rangeSplit(count: count, minChunk: minChunk)
        parallelFor(chunks: chunks) { chunk in
            let start = chunk * size
            body(start..<min(count, start + size))
        }
    }
}

/// Work split into numbered chunks; one object per call site, reused across dispatches.
public protocol ParallelJob: AnyObject {
    func run(chunk: Int)
}

private final class ClosureJob: ParallelJob {
    var body: ((Int) -> Void)?
    func run(chunk: Int) { body!(chunk) }
}

/// The state workers share; workers hold it strongly so it outlives the pool object.
private final class PoolState: @unchecked Sendable {
    let threads: Int
    private let generation = Atomic<Int>(0)
    private let nextChunk = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let shuttingDown = Atomic<Bool>(false)
    private let condition = NSCondition()
    /// The job of the running dispatch.
    private var job: ParallelJob?
    private let closureJob = ClosureJob()
    private var chunkCount = 0

    /// Spin iterations before a worker parks; a few milliseconds of spinning covers the gap
    /// between two matrix products without burning a core while a chat waits for input.
    private let spinLimit = 200_000

    init(threads: Int) { self.threads = threads }

    func shutDown() {
        shuttingDown.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        condition.lock(); condition.broadcast(); condition.unlock()
    }

    /// Convenience path: wraps the closure (Swift allocates a small escape-check box per call).
    func parallelFor(chunks: Int, _ body: (Int) -> Void) {
        if chunks <= 0 { return }
        if threads == 1 || chunks == 1 {
            for chunk in 0..<chunks { body(chunk) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            closureJob.body = escapable
            run(closureJob, chunks: chunks)
            closureJob.body = nil
        }
    }

    /// Allocation-free path: the job object is created once and reused.
    func run(_ job: ParallelJob, chunks: Int) {
        if chunks <= 0 { return }
        if threads == 1 || chunks == 1 {
            for chunk in 0..<chunks { job.run(chunk: chunk) }
            return
        }
        self.job = job
        chunkCount = chunks
        nextChunk.store(0, ordering: .relaxed)
        pending.store(threads - 1, ordering: .relaxed)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            condition.lock(); condition.broadcast(); condition.unlock()
        }
        runChunks(job)
        while pending.load(ordering: .acquiring) > 0 { spinHint() }
        self.job = nil
    }

    private func runChunks(_ job: ParallelJob) {
        while true {
            let chunk = nextChunk.add(1, ordering: .relaxed).oldValue
            if chunk >= chunkCount { return }
            job.run(chunk: chunk)
        }
    }

    func workerLoop() {
        // Generation 0 is "no work yet": a worker that starts late still joins the first dispatch.
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < spinLimit { spinHint(); continue }
                sleepers.add(1, ordering: .sequentiallyConsistent)
                condition.lock()
                while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                condition.unlock()
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
            }
            seen = generation.load(ordering: .acquiring)
            if shuttingDown.load(ordering: .acquiring) { return }
            if let job { runChunks(job) }
            pending.subtract(1, ordering: .releasing)
        }
    }
}

/// An empty spin step; the atomic load in the loop is what waits.
@inline(__always) func spinHint() {}
