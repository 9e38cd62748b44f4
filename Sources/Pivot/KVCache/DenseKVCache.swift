import PivotKernels

/// Full-precision cache: keys and values as F32, laid out [layer][kvHead][position][headDim]
/// so each head's history is contiguous for the dot products.
public final class DenseKVCache: KVCache {
    public let shape: AttentionShape
    public let capacity: Int
    public private(set) var length = 0
    let keys: FloatBuffer
    let values: FloatBuffer
    /// Attention probabilities, one row of `capacity` per parallel work item.
    let scores: FloatBuffer
    static let queryBlock = 16
    private lazy var attentionJob = AttentionJob(cache: self)

    public init(shape: AttentionShape, capacity: Int, maxBatch: Int = 512) {
        self.shape = shape
        self.capacity = capacity
        let perLayer = shape.kvHeads * capacity * shape.headDim
        keys = FloatBuffer(count: shape.layers * perLayer)
        values = FloatBuffer(count: shape.layers * perLayer)
        let scoreRows = shape.heads * ((maxBatch + Self.queryBlock - 1) / Self.queryBlock)
        scores = FloatBuffer(count: scoreRows * capacity)
    }

    public var bytesPerToken: Double { Double(shape.layers * 2 * shape.kvHeads * shape.headDim * 4) }

    @inline(__always) func headBase(_ buffer: FloatBuffer, layer: Int, kvHead: Int) -> UnsafeMutablePointer<Float> {
        buffer.pointer + ((layer * shape.kvHeads + kvHead) * capacity) * shape.headDim
    }

    public func append(layer: Int, keys k: Matrix, values v: Matrix) {
        guard length + k.rows <= capacity else { fatalError("KV cache overflow: \(length) + \(k.rows) > \(capacity)") }
        let d = shape.headDim
        for t in 0..<k.rows {
            for h in 0..<shape.kvHeads {
                (headBase(keys, layer: layer, kvHead: h) + (length + t) * d).update(from: k.row(t) + h * d, count: d)
                (headBase(values, layer: layer, kvHead: h) + (length + t) * d).update(from: v.row(t) + h * d, count: d)
            }
        }
    }

    public func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) {
        let job = attentionJob
        job.layer = layer
        job.queries = queries
        job.out = out
        job.start = length
        job.blocks = (queries.rows + Self.queryBlock - 1) / Self.queryBlock
        pool.run(job, chunks: shape.heads * job.blocks)
        job.queries = nil
        job.out = nil
    }

    /// One work item per (head, block of 16 queries); reused so decode does not allocate.
    final class AttentionJob: ParallelJob {
        unowned let cache: DenseKVCache
        var layer = 0, start = 0, blocks = 1
        var queries: Matrix?
        var out: Matrix?

        init(cache: DenseKVCache) { self.cache = cache }

        func run(chunk item: Int) {
            guard let queries, let out else { return }
            let c = cache, shape = c.shape
            let h = item % shape.heads, qb = item / shape.heads
            let group = shape.heads / shape.kvHeads, d = shape.headDim
            let keys = UnsafePointer(c.headBase(c.keys, layer: layer, kvHead: h / group))
            let values = UnsafePointer(c.headBase(c.values, layer: layer, kvHead: h / group))
            let scores = c.scores.pointer + item * c.capacity
            let scale = 1 / Float(d).squareRoot()
            for t in (qb * DenseKVCache.queryBlock)..<min(queries.rows, (qb + 1) * DenseKVCache.queryBlock) {
                let first = shape.firstVisible(layer: layer, position: start + t)
                attendOneQuery(UnsafePointer(queries.row(t) + h * d), keys: keys + first * d, values: values + first * d,
                               count: start + t + 1 - first, headDim: d, scale: scale, scores: scores, out: out.row(t) + h * d,
                               softCap: shape.scoreSoftCap)
            }
        }
    }

    /// The stored key and value of one position (for IntactKV pivots and for inspection).
    public func entry(layer: Int, kvHead: Int, position: Int) -> (key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let offset = position * shape.headDim
        return (UnsafePointer(headBase(keys, layer: layer, kvHead: kvHead) + offset), UnsafePointer(headBase(values, layer: layer, kvHead: kvHead) + offset))
    }

    public func advance(by tokens: Int) { length += tokens }
    public func truncate(to newLength: Int) { length = min(length, max(0, newLength)) }
}
