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
    /// This sequence's tokens at the source's positions, and the keys/values the source supplied for
    /// them ([layer][kvHead][position][headDim]), copied: a source is shared by every cache made
    /// with it (a server's slots), and several sequences may be prepared before one batched pass appends.
    private var pivotTokens: [Int] = []
    private let suppliedKeys: FloatBuffer, suppliedValues: FloatBuffer

    public init(inner: KVCache, source: PivotSource, shape: AttentionShape) {
        self.inner = inner; self.source = source; self.shape = shape
        let floats = shape.layers * shape.kvHeads * source.count * shape.headDim
        suppliedKeys = FloatBuffer(count: floats)
        suppliedValues = FloatBuffer(count: floats)
    }

    public var length: Int { inner.length }
    public var capacity: Int { inner.capacity }
    public var bytesPerToken: Double { inner.bytesPerToken }

    public func willAppend(tokens: UnsafeBufferPointer<Int>, pool: ThreadPool) {
        let position = inner.length
        if pivotTokens.count > position { pivotTokens.removeSubrange(position...) }
        let kept = UnsafeBufferPointer(rebasing: tokens[0..<min(tokens.count, max(0, source.count - position))])
        if supplied == position && !kept.isEmpty {
            // From position 0: the source may hold another sequence's positions since this one's last pass.
            let prefix = pivotTokens + Array(kept)
            let agreed = prefix.withUnsafeBufferPointer { source.prepare(tokens: $0, at: 0, pool: pool) }
            let end = max(position, min(agreed, prefix.count))
            let d = shape.headDim
            for layer in 0..<shape.layers {
                for h in 0..<shape.kvHeads {
                    for p in position..<end {
                        let entry = source.entry(layer: layer, kvHead: h, position: p)
                        let at = suppliedOffset(layer: layer, kvHead: h, position: p)
                        (suppliedKeys.pointer + at).update(from: entry.key, count: d)
                        (suppliedValues.pointer + at).update(from: entry.value, count: d)
                    }
                }
            }
            supplied = end
        }
        pivotTokens += kept
        inner.willAppend(tokens: tokens, pool: pool)
    }

    /// Where a position's supplied key (and value) starts in `suppliedKeys` (`suppliedValues`).
    private func suppliedOffset(layer: Int, kvHead: Int, position: Int) -> Int {
        ((layer * shape.kvHeads + kvHead) * source.count + position) * shape.headDim
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
                let at = suppliedOffset(layer: layer, kvHead: h, position: inner.length + t)
                (k.row(t) + h * d).update(from: suppliedKeys.pointer + at, count: d)
                (v.row(t) + h * d).update(from: suppliedValues.pointer + at, count: d)
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
        if pivotTokens.count > inner.length { pivotTokens.removeSubrange(inner.length...) }
    }
}
