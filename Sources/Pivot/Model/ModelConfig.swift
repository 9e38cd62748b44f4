/// The shape of a decoder: Llama's numbers plus the family's `BlockVariant`.
public struct ModelConfig: Sendable, Equatable {
    public var architecture: String
    public var vocabularySize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var contextLength: Int
    public var ropeTheta: Float
    public var rmsNormEpsilon: Float
    /// GGUF stores Q/K permuted so that RoPE rotates adjacent pairs; HF weights rotate halves.
    public var ropeInterleaved: Bool
    public var tiedEmbeddings: Bool
    /// Qwen2 has biases on the Q/K/V projections.
    public var attentionBias: Bool
    /// Llama with `attention_bias: true` also has a bias on the output projection.
    public var outputBias: Bool = false
    /// Long-context frequency scaling (`rope_type`).
    public var ropeScaling: RoPEScaling = .none
    /// Qwen3: RMSNorm over each head of Q and K before RoPE.
    public var queryKeyNorm: Bool = false
    /// SmolLM3: which layers apply RoPE (nil: all of them).
    public var ropeLayers: [Bool]? = nil
    /// The checkpoint's declared float type (`torch_dtype`/`dtype`), for reports only.
    public var declaredDType: String? = nil
    /// Where the block departs from Llama's (norms, activation, residual, rotary, windows, caps).
    public var variant = BlockVariant()
    /// Routed experts in place of the MLP (Mixtral, Qwen2-MoE); nil for dense models.
    public var experts: ExpertLayout? = nil
    /// Mamba's selective-scan mixer in every block, in place of attention and the MLP (nil: attention blocks).
    public var stateSpace: StateSpaceLayout? = nil

    public var queryWidth: Int { headCount * headDim }
    public var kvWidth: Int { kvHeadCount * headDim }

    /// Whether layer `index` rotates its queries and keys.
    public func usesRoPE(layer index: Int) -> Bool { ropeLayers?[index] ?? true }

    /// The numbers a family's reader counts with (layers, heads, widths), checked before it runs.
    /// `attention` false: a state-space family, whose head counts are 0.
    func validateCounts(file: String, attention: Bool = true) throws {
        let heads = attention ? 1...4096 : 0...0, dims = attention ? 1...512 : 0...512
        guard (1...512).contains(layerCount), (1...(1 << 16)).contains(hiddenSize), heads.contains(headCount),
              heads.contains(kvHeadCount), dims.contains(headDim), (0...(1 << 18)).contains(intermediateSize) else {
            throw PivotError.malformed(file: file, "implausible dimensions (layers \(layerCount), hidden \(hiddenSize), heads \(headCount)/\(kvHeadCount), head \(headDim), ffn \(intermediateSize))")
        }
    }

    /// Checks that the numbers describe a model the forward pass can run.
    public func validate(file: String) throws {
        func fail(_ why: String) -> PivotError { .malformed(file: file, why) }
        if let s = stateSpace {
            guard vocabularySize > 0, vocabularySize <= 1 << 22, (1...(1 << 16)).contains(hiddenSize), (1...512).contains(layerCount) else {
                throw fail("model dimensions out of range (vocab \(vocabularySize), hidden \(hiddenSize), layers \(layerCount))")
            }
            try s.validate(file: file)
            guard contextLength >= 1, rmsNormEpsilon >= 0 else { throw fail("context length and norm epsilon must be positive") }
            guard experts == nil, variant.isLlamaBlock else { throw fail("a state-space block has no attention or MLP to vary") }
            return
        }
        guard vocabularySize > 0, hiddenSize > 0, intermediateSize > 0, layerCount > 0 else {
            throw fail("model dimensions must be positive (vocab \(vocabularySize), hidden \(hiddenSize), ffn \(intermediateSize), layers \(layerCount))")
        }
        guard headCount > 0, kvHeadCount > 0, headCount % kvHeadCount == 0 else {
            throw fail("\(headCount) attention heads cannot be grouped over \(kvHeadCount) key/value heads")
        }
        guard headDim > 0, headDim % 2 == 0, headDim <= 512 else { throw fail("head dimension \(headDim) is not supported") }
        guard hiddenSize <= 1 << 16, intermediateSize <= 1 << 18, layerCount <= 512, vocabularySize <= 1 << 22 else {
            throw fail("model dimensions are implausibly large")
        }
        guard contextLength >= 1 else { throw fail("context length \(contextLength) must be positive") }
        guard ropeTheta > 0, rmsNormEpsilon >= 0 else { throw fail("rope theta and norm epsilon must be positive") }
        if let ropeLayers, ropeLayers.count != layerCount {
            throw fail("no_rope_layers has \(ropeLayers.count) entries for \(layerCount) layers")
        }
        let v = variant
        if let r = v.rotaryDimensions, r <= 0 || r > headDim || r % 2 != 0 {
            throw fail("rotary dimensions \(r) must be even and within the head dimension \(headDim)")
        }
        if let w = v.slidingWindow, w <= 0 { throw fail("sliding window \(w) must be positive") }
        if let layers = v.slidingLayers, layers.count != layerCount {
            throw fail("the sliding-window layer pattern has \(layers.count) entries for \(layerCount) layers")
        }
        for (name, value) in [("attention soft cap", v.attentionSoftCap), ("final soft cap", v.finalSoftCap), ("attention scale", v.attentionScale)] {
            if let value, !(value > 0) { throw fail("\(name) \(value) must be positive") }
        }
        if let e = experts {
            guard e.count >= 1, e.used >= 1, e.used <= e.count, e.intermediateSize > 0, e.count <= 1024 else {
                throw fail("expert routing of \(e.used) of \(e.count) experts (width \(e.intermediateSize)) is not a valid mixture")
            }
            if let layers = e.sparseLayers, layers.count != layerCount { throw fail("the sparse-layer list has \(layers.count) entries for \(layerCount) layers") }
            if !v.gatedMLP || v.parallelResidual { throw fail("routed experts are implemented for gated, sequential blocks") }
        }
        if v.parallelResidual && !v.inputNorms { throw fail("a parallel residual needs input norms") }
        if let count = ropeFactorCount, count != rotaryDimensions / 2 {
            throw fail("rope frequency factors have \(count) entries, expected \(rotaryDimensions / 2)")
        }
    }
}
