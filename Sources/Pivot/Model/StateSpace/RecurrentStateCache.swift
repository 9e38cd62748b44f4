import PivotKernels

/// A state-space model's memory of one sequence: per layer, the convolution's last inputs and the scan's
/// state, a fixed size however long the sequence grows (where an attention cache grows per token).
///
/// A recurrent state cannot forget its last tokens, so it keeps copies: the state at the start and end of
/// every pass of two or more tokens (a prompt, a draft's verification), and at the end of a sequence's
/// first pass and of the pass after a longer one (a prompt's last piece), but not along a run of one-token
/// decode passes; the most recently used `snapshotLimit` of them, never the one the last `truncate(to:)`
/// returned to (a benchmark's depth, a scorer's shared prefix, however many passes follow). Buffers of
/// dropped copies are reused. `truncate(to:)` returns to one of those lengths (or to 0);
/// `restorableLength(atMost:)` tells callers which, and they replay the rest (prompt reuse, draft
/// rejection, a scorer's shared prefix).
public final class RecurrentStateCache: KVCache {
    public let layout: StateSpaceLayout
    public let layers: Int
    public private(set) var length = 0
    public let capacity: Int
    /// layers × stateFloats: each layer's convolution history, then its scan state.
    let state: FloatBuffer
    private var snapshots: [Snapshot] = []
    private let snapshotLimit: Int
    private var clock = 0
    private var passStart = 0
    private var previousPass = 0
    /// The length the last truncation returned to: its copy is never evicted.
    private var pinned = 0
    /// Buffers of dropped copies, for the next ones.
    private var spare: [FloatBuffer] = []

    private struct Snapshot {
        var length: Int
        var lastUse: Int
        let values: FloatBuffer
    }

    public static let defaultSnapshotLimit = 8

    public init(layout: StateSpaceLayout, layers: Int, capacity: Int, snapshotLimit: Int = RecurrentStateCache.defaultSnapshotLimit) {
        self.layout = layout; self.layers = layers; self.capacity = capacity; self.snapshotLimit = snapshotLimit
        state = FloatBuffer(count: layers * layout.stateFloats)
        state.pointer.update(repeating: 0, count: state.count)
    }

    public var recurrentState: RecurrentStateCache? { self }

    /// kernel−1 rows of `convolutionChannels`: the convolution's inputs before the next token, oldest first.
    func convolutionHistory(layer: Int) -> UnsafeMutablePointer<Float> { state.pointer + layer * layout.stateFloats }
    /// Mamba: stateSize × innerSize (state-major, as the scan's lanes read it). Mamba-2: innerSize ×
    /// stateSize (each head's channels, each channel's state).
    func scanState(layer: Int) -> UnsafeMutablePointer<Float> {
        convolutionHistory(layer: layer) + (layout.convolutionKernel - 1) * layout.convolutionChannels
    }

    public func append(layer: Int, keys: Matrix, values: Matrix) { fatalError("a recurrent state holds no keys or values") }
    public func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) { fatalError("a recurrent state holds no keys or values") }

    public func willAppend(tokens: UnsafeBufferPointer<Int>, pool: ThreadPool) {
        passStart = length
        if tokens.count >= 2 { keepSnapshot() }
    }

    public func advance(by tokens: Int) {
        length += tokens
        if tokens >= 2 || passStart == 0 || previousPass >= 2 { keepSnapshot() }
        previousPass = tokens
    }

    public func restorableLength(atMost target: Int) -> Int {
        if target >= length { return length }
        return snapshots.lazy.map(\.length).filter { $0 <= target }.max() ?? 0
    }

    public func truncate(to target: Int) {
        pinned = target
        guard target != length else { return }
        precondition(target < length, "truncate(to: \(target)) beyond the \(length) tokens held")
        previousPass = 0
        if target == 0 {
            state.pointer.update(repeating: 0, count: state.count)
        } else {
            guard let i = snapshots.firstIndex(where: { $0.length == target }) else {
                fatalError("a recurrent state returns only to lengths it kept (ask restorableLength(atMost:) first); \(target) is not one")
            }
            state.pointer.update(from: snapshots[i].values.pointer, count: state.count)
            clock += 1
            snapshots[i].lastUse = clock
        }
        length = target
        // Copies past the new end belong to tokens now forgotten.
        spare += snapshots.filter { $0.length > target }.map(\.values)
        snapshots.removeAll { $0.length > target }
    }

    /// The state is a fixed size: nothing grows per token.
    public var bytesPerToken: Double { 0 }

    /// Bytes of the live state and of the copies held now.
    public var stateBytes: Int { state.count * 4 * (1 + snapshots.count + spare.count) }

    private func keepSnapshot() {
        guard snapshotLimit > 0, length > 0 else { return }
        clock += 1
        if let i = snapshots.firstIndex(where: { $0.length == length }) {
            snapshots[i].values.pointer.update(from: state.pointer, count: state.count)
            snapshots[i].lastUse = clock
            return
        }
        if snapshots.count < snapshotLimit {
            let values = spare.popLast() ?? FloatBuffer(count: state.count)
            values.pointer.update(from: state.pointer, count: state.count)
            snapshots.append(Snapshot(length: length, lastUse: clock, values: values))
            return
        }
        let evictable = snapshots.indices.filter { snapshots[$0].length != pinned }
        guard let oldest = evictable.min(by: { snapshots[$0].lastUse < snapshots[$1].lastUse }) else { return }
        snapshots[oldest].values.pointer.update(from: state.pointer, count: state.count)
        snapshots[oldest].length = length
        snapshots[oldest].lastUse = clock
    }
}
