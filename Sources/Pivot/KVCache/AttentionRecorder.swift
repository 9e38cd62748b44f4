import PivotKernels

/// An exact F32 cache that also records how much attention each position receives, per layer: for
/// `pivot attention-map`, which shows the pivot tokens (attention sinks) of a model. Probabilities
/// are recomputed with plain loops beside the fast kernel, so keep the text short.
public final class AttentionRecorder: KVCache {
    let inner: DenseKVCache
    /// received[layer][j]: attention on position j averaged over heads and over the queries that see j.
    public private(set) var received: [[Double]]
    private var seenBy: [Int]

    public init(shape: AttentionShape, capacity: Int) {
        inner = DenseKVCache(shape: shape, capacity: capacity, maxBatch: capacity)
        received = Array(repeating: Array(repeating: 0, count: capacity), count: shape.layers)
        seenBy = Array(repeating: 0, count: capacity)
    }

    public var length: Int { inner.length }
    public var capacity: Int { inner.capacity }
    public var bytesPerToken: Double { inner.bytesPerToken }

    public func append(layer: Int, keys: Matrix, values: Matrix) { inner.append(layer: layer, keys: keys, values: values) }

    public func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) {
        inner.attend(layer: layer, queries: queries, into: out, pool: pool)
        let shape = inner.shape, d = shape.headDim, group = shape.heads / shape.kvHeads
        let scale = 1 / Float(d).squareRoot()
        var scores = [Float](repeating: 0, count: capacity)
        for t in 0..<queries.rows {
            let count = length + t + 1
            for h in 0..<shape.heads {
                let q = UnsafePointer(queries.row(t) + h * d)
                for j in 0..<count { scores[j] = dotF32(q, inner.entry(layer: layer, kvHead: h / group, position: j).key, count: d) * scale }
                scores.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, count: count) }
                for j in 0..<count { received[layer][j] += Double(scores[j]) / Double(shape.heads) }
            }
            if layer == 0 { for j in 0..<count { seenBy[j] += 1 } }
        }
    }

    public func advance(by tokens: Int) { inner.advance(by: tokens) }
    public func truncate(to length: Int) { inner.truncate(to: length) }

    /// Mean attention each position receives in `layer` (over heads and the queries that see it).
    public func share(layer: Int) -> [Double] {
        (0..<length).map { received[layer][$0] / Double(max(1, seenBy[$0])) }
    }
}
