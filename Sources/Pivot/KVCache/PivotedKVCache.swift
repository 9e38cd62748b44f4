import PivotKernels

/// Where the first positions' keys/values come from when not from the running model (IntactKV): the
/// full-precision model run beside it (`IntactPivots`) or a prefix stored in the model file
/// (`StoredPivots`). Every cache type takes it the same way, through `PivotedKVCache`.
public protocol PivotSource: AnyObject {
    /// Positions 0..<count the source may supply; a cache made with it keeps them lossless (F32).
    var count: Int { get }
    /// Before a pass appends `tokens` at `position` (< count, every earlier position supplied): how many
    /// of `tokens`, from the first, it supplies (a stored prefix: as long as they agree with its tokens).
    func prepare(tokens: UnsafeBufferPointer<Int>, at position: Int, pool: ThreadPool) -> Int
    /// The supplied key (after RoPE, as caches store keys) and value of one position.
    func entry(layer: Int, kvHead: Int, position: Int) -> (key: UnsafePointer<Float>, value: UnsafePointer<Float>)
}

/// IntactKV over any cache: positions the source supplies get its keys/values instead of the running
/// model's, and the inner cache, made to keep the first `source.count` positions F32, holds them
/// losslessly. The one place pivots are substituted, so F32, F16, KIVI and CSKV need no branch of their own.
public final class PivotedKVCache: KVCache {
    public let inner: KVCache
    public let source: PivotSource
    let shape: AttentionShape
    /// Positions 0..<supplied hold the source's keys/values (the sequence agrees with it so far).
    public private(set) var supplied = 0
    /// A pass's keys and values with the supplied rows replaced, grown to the largest such pass.
    private var staged = FloatBuffer(count: 0)

    public init(inner: KVCache, source: PivotSource, shape: AttentionShape) {
        self.inner = inner; self.source = source; self.shape = shape
    }

    public var length: Int { inner.length }
    public var capacity: Int { inner.capacity }
    public var bytesPerToken: Double { inner.bytesPerToken }

    public func willAppend(tokens: UnsafeBufferPointer<Int>, pool: ThreadPool) {
        let position = inner.length
        if supplied == position && position < source.count {
            let offered = UnsafeBufferPointer(rebasing: tokens[0..<min(tokens.count, source.count - position)])
            supplied = position + min(offered.count, source.prepare(tokens: offered, at: position, pool: pool))
        }
        inner.willAppend(tokens: tokens, pool: pool)
    }

    public func append(layer: Int, keys: Matrix, values: Matrix) {
        let replaced = min(keys.rows, supplied - inner.length)
        guard replaced > 0 else { return inner.append(layer: layer, keys: keys, values: values) }
        let width = keys.columns, d = shape.headDim
        if staged.count < 2 * keys.rows * width { staged = FloatBuffer(count: 2 * keys.rows * width) }
        let k = Matrix(staged.pointer, rows: keys.rows, columns: width), v = Matrix(staged.pointer + keys.rows * width, rows: keys.rows, columns: width)
        for t in 0..<keys.rows {
            k.row(t).update(from: keys.row(t), count: width)
            v.row(t).update(from: values.row(t), count: width)
        }
        for t in 0..<replaced {
            for h in 0..<shape.kvHeads {
                let entry = source.entry(layer: layer, kvHead: h, position: inner.length + t)
                (k.row(t) + h * d).update(from: entry.key, count: d)
                (v.row(t) + h * d).update(from: entry.value, count: d)
            }
        }
        inner.append(layer: layer, keys: k, values: v)
    }

    public func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) {
        inner.attend(layer: layer, queries: queries, into: out, pool: pool)
    }

    public func advance(by tokens: Int) { inner.advance(by: tokens) }

    public func truncate(to length: Int) {
        inner.truncate(to: length)
        supplied = min(supplied, inner.length)
    }
}
