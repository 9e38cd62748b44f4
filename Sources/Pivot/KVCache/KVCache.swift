import PivotKernels

/// Stores past keys/values per layer and computes attention over them: the seam where cache
/// compression methods (quantized, pivot tokens, low-rank) plug in.
///
/// The forward pass appends the new tokens' keys and values for each layer, asks for attention
/// of the new queries (causal: query t sees positions 0...length+t), and after the last layer
/// calls `advance(by:)` once.
public protocol KVCache: AnyObject {
    /// Tokens stored (positions 0..<length).
    var length: Int { get }
    /// Most tokens the cache can hold.
    var capacity: Int { get }
    /// Keys/values: tokens × (kvHeads·headDim), written at positions length..<length+tokens.
    func append(layer: Int, keys: Matrix, values: Matrix)
    /// queries: tokens × (heads·headDim); out: same shape.
    func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool)
    func advance(by tokens: Int)
    /// Forget everything after `length` tokens (for resets and draft rejection).
    func truncate(to length: Int)
    /// Memory per cached token over all layers, in bytes.
    var bytesPerToken: Double { get }
    /// Called once per forward pass before the first layer, with the tokens about to be appended at
    /// positions length...: a cache that takes some positions' keys/values from elsewhere (IntactKV's
    /// pivots from the full-precision model) prepares them here.
    func willAppend(tokens: UnsafeBufferPointer<Int>, pool: ThreadPool)
    /// The longest length ≤ `length` that `truncate(to:)` can return to: any for attention caches; for a
    /// recurrent state only the lengths it kept a copy of. Callers replay the tokens between.
    func restorableLength(atMost length: Int) -> Int
    /// The state-space layers' memory when this cache is one (nil: an attention cache).
    var recurrentState: RecurrentStateCache? { get }
}

extension KVCache {
    public func willAppend(tokens: UnsafeBufferPointer<Int>, pool: ThreadPool) {}
    public func restorableLength(atMost length: Int) -> Int { length }
    public var recurrentState: RecurrentStateCache? { nil }
}

/// Geometry every cache needs.
public struct AttentionShape: Sendable {
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Per layer, how many of the latest positions a query sees (nil: all of them; Gemma's sliding layers).
    public var windows: [Int?]? = nil
    /// cap·tanh(score/cap) before the softmax (Gemma 2).
    public var scoreSoftCap: Float? = nil
    /// A state-space model's layers (Mamba): a recurrent state in place of keys and values.
    public var recurrent: StateSpaceLayout? = nil

    public init(layers: Int, heads: Int, kvHeads: Int, headDim: Int) {
        self.layers = layers; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
    }

    public init(_ config: ModelConfig) {
        self.init(layers: config.layerCount, heads: config.headCount, kvHeads: config.kvHeadCount, headDim: config.headDim)
        let v = config.variant
        if let window = v.slidingWindow { windows = (0..<config.layerCount).map { v.windowed(layer: $0) ? window : nil } }
        scoreSoftCap = v.attentionSoftCap
        recurrent = config.stateSpace
    }

    /// Whether attention is plain causal softmax attention, the only kind the compressed caches implement.
    public var isPlainCausal: Bool { windows == nil && scoreSoftCap == nil && recurrent == nil }

    /// Why only the F32 cache serves this model (nil: every cache does), for errors and notes.
    public var f32OnlyReason: String? {
        if recurrent != nil { return "it has no keys or values to compress: a state-space model keeps a fixed recurrent state" }
        return isPlainCausal ? nil : "its sliding windows or soft-capped scores run on the F32 cache only"
    }

    /// The first position query position `p` sees in `layer`.
    @inline(__always) public func firstVisible(layer: Int, position p: Int) -> Int {
        guard let windows, let w = windows[layer] else { return 0 }
        return max(0, p + 1 - w)
    }
}
