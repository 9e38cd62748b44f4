import PivotKernels

/// A model file's intact prefix as a cache's pivot source: it supplies the positions of a sequence whose
/// tokens so far agree with the prefix's (causal attention: position p depends only on tokens 0...p, so
/// a sequence that leaves the prefix at p still takes positions 0..<p). Read-only, shared by every cache.
public final class StoredPivots: PivotSource {
    public let prefix: IntactPrefix
    /// [layer][position][kvHead][headDim], keys and values, so entries are stable pointers.
    private let keys: FloatBuffer, values: FloatBuffer

    public init(_ prefix: IntactPrefix) {
        self.prefix = prefix
        let perLayer = prefix.layerCount
        keys = FloatBuffer(count: prefix.layers * perLayer)
        values = FloatBuffer(count: prefix.layers * perLayer)
        for layer in 0..<prefix.layers {
            (keys.pointer + layer * perLayer).update(from: prefix.keys[layer], count: perLayer)
            (values.pointer + layer * perLayer).update(from: prefix.values[layer], count: perLayer)
        }
    }

    public var count: Int { prefix.tokens.count }

    public func prepare(tokens: UnsafeBufferPointer<Int>, at position: Int, pool: ThreadPool) -> Int {
        var agreed = 0
        while agreed < tokens.count, position + agreed < count, tokens[agreed] == prefix.tokens[position + agreed] { agreed += 1 }
        return agreed
    }

    public func entry(layer: Int, kvHead: Int, position: Int) -> (key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let at = layer * prefix.layerCount + prefix.offset(position: position, kvHead: kvHead)
        return (UnsafePointer(keys.pointer + at), UnsafePointer(values.pointer + at))
    }
}
