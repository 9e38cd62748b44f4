import PivotKernels

/// IntactKV: the pivot tokens' keys and values come from the full-precision model, not from the
/// compressed one that runs everything else. The base model runs the pivot positions (causal, so
/// position p depends only on tokens 0...p) with float activations and an exact F32 cache; the
/// compressed model's cache stores those keys/values for positions below `count` instead of its own.
/// (`pivot intact` stores them in the model file instead: `IntactPrefix`, `StoredPivots`.)
public final class IntactPivots: PivotSource {
    public let base: LoadedModel
    public let count: Int
    private let cache: DenseKVCache
    private var state: ForwardState?
    /// Per layer and value channel, what the base's values are multiplied by to be the model's (AWQ /
    /// SmoothQuant files hold V / s: `ValueScales`); nil when both hold the same V.
    private let valueConversion: [[Float]]?

    /// Checks that `base` can stand in for `model`'s keys and values.
    public init(base: LoadedModel, for model: LoadedModel, pivots: Int) throws {
        let a = base.config, b = model.config
        try b.requireAttention(for: "IntactKV")
        guard a.layerCount == b.layerCount, a.kvHeadCount == b.kvHeadCount, a.headDim == b.headDim else {
            throw PivotError.invalidArgument("--intact-from \(base.path): \(a.layerCount) layers × \(a.kvHeadCount) KV heads × \(a.headDim) "
                + "does not match the model's \(b.layerCount) × \(b.kvHeadCount) × \(b.headDim)")
        }
        guard base.tokenizer.tokens == model.tokenizer.tokens else {
            throw PivotError.invalidArgument("--intact-from \(base.path): a different vocabulary from the model's")
        }
        self.base = base
        count = pivots
        valueConversion = ValueScales.conversion(from: ValueScales.read(path: base.path), to: ValueScales.read(path: model.path))
        cache = DenseKVCache(shape: AttentionShape(a), capacity: max(1, pivots), maxBatch: max(1, pivots))
    }

    /// Runs the base over the pivot positions among `tokens` (which start at `position`), so that
    /// `entry` then holds them: every pivot position is supplied, whatever its token.
    public func prepare(tokens: UnsafeBufferPointer<Int>, at position: Int, pool: ThreadPool) -> Int {
        let end = min(count, position + tokens.count)
        guard position < end else { return 0 }
        if state == nil || state!.context.pool !== pool {
            state = ForwardState(config: base.config, maxTokens: max(1, count), allLogits: false, execution: Execution(pool: pool, precision: .float))
        }
        cache.truncate(to: position)
        base.transformer.forward(Array(tokens[0..<(end - position)]), cache: cache, state: state!, logits: .last)
        if let valueConversion {
            let d = base.config.headDim
            for (layer, factors) in valueConversion.enumerated() {
                for kvHead in 0..<base.config.kvHeadCount {
                    for p in position..<end {
                        let value = UnsafeMutablePointer(mutating: cache.entry(layer: layer, kvHead: kvHead, position: p).value)
                        for i in 0..<d { value[i] *= factors[kvHead * d + i] }
                    }
                }
            }
        }
        return end - position
    }

    public func entry(layer: Int, kvHead: Int, position: Int) -> (key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        cache.entry(layer: layer, kvHead: kvHead, position: position)
    }
}
