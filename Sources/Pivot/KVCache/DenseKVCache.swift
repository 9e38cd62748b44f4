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
    let scoreRows: Int
    static let queryBlock = 16

    public init(shape: AttentionShape, capacity: Int, maxBatch: Int = 512) {
        self.shape = shape
        self.capacity = capacity
        let perLayer = shape.kvHeads * capacity * shape.headDim
        keys = FloatBuffer(count: shape.layers * perLayer)
        values = FloatBuffer(count: shape.layers * perLayer)
        scoreRows = shape.heads * ((maxBatch + Self.queryBlock - 1) / Self.queryBlock)
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
        let tokens = queries.rows
        let block = Self.queryBlock
        let blocks = (tokens + block - 1) / block
        let heads = shape.heads, group = shape.heads / shape.kvHeads, d = shape.headDim
        let start = length, capacity = self.capacity
        let scale = 1 / Float(d).squareRoot()
        let scoreBase = scores.pointer
        pool.parallelFor(chunks: heads * blocks) { item in
            let h = item % heads, qb = item / heads
            let keyBase = UnsafePointer(self.headBase(self.keys, layer: layer, kvHead: h / group))
            let valueBase = UnsafePointer(self.headBase(self.values, layer: layer, kvHead: h / group))
            let p = scoreBase + item * capacity
            for t in (qb * block)..<min(tokens, (qb + 1) * block) {
                let q = UnsafePointer(queries.row(t) + h * d)
                let visible = start + t + 1
                attendOneQuery(q, keys: keyBase, values: valueBase, count: visible, headDim: d,
                               scale: scale, scores: p, out: out.row(t) + h * d)
            }
        }
    }

    public func advance(by tokens: Int) { length += tokens }
    public func truncate(to newLength: Int) { length = min(length, max(0, newLength)) }
}

/// softmax(q·Kᵀ·scale)·V for one query over `count` contiguous keys/values.
@inline(__always)
func attendOneQuery(_ q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                    count: Int, headDim d: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                    out: UnsafeMutablePointer<Float>) {
    for j in 0..<count { scores[j] = dotF32(q, keys + j * d, count: d) * scale }
    softmaxInPlace(scores, count: count)
    out.update(repeating: 0, count: d)
    for j in 0..<count { axpyF32(scores[j], values + j * d, out, count: d) }
}
