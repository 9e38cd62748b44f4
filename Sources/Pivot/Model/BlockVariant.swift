import PivotKernels

/// How a family's decoder block departs from Llama's, as values the one forward pass reads. The
/// defaults are Llama's block: pre-RMSNorm, sequential residual, SwiGLU, full rotary, 1/√d scores.
public struct BlockVariant: Sendable, Equatable {
    public enum Norm: Sendable, Equatable {
        case rms
        /// Mean-centred LayerNorm with a bias (GPT-NeoX, StableLM, Falcon).
        case layer
    }

    public var norm: Norm = .rms
    public var activation: Activation = .silu
    /// act(gate)·up (true) or act(up) alone (GPT-NeoX, Falcon: ffn_up/ffn_down with no gate).
    public var gatedMLP = true
    /// Biases on the MLP projections (GPT-NeoX).
    public var mlpBias = false
    /// x + attn(norm₁(x)) + mlp(norm₂(x)) instead of two residual steps (GPT-NeoX, Falcon).
    public var parallelResidual = false
    /// The MLP reads the attention norm's output (Falcon-7B: one norm per block).
    public var sharedNorm = false
    /// Norms before attention and MLP (false: OLMo 2, which normalizes only their outputs).
    public var inputNorms = true
    /// Norms of the attention and MLP outputs before the residual add (Gemma 2/3, OLMo 2).
    public var outputNorms = false
    /// Q/K norm over the whole projection (OLMo 2) rather than per head (Qwen3, Gemma 3).
    public var queryKeyNormSpansHeads = false
    /// Each head of Q and K has its own norm weights (StableLM 2 12B's qk_layernorm; no bias).
    public var queryKeyNormPerHeadWeights = false
    /// Leading dimensions of each head that RoPE rotates (nil: all of them).
    public var rotaryDimensions: Int? = nil
    /// Embeddings are multiplied by this (Gemma: √hidden).
    public var embeddingScale: Float? = nil
    /// Attention scores are q·k times this (nil: 1/√headDim; Gemma: query_pre_attn_scalar^-½).
    public var attentionScale: Float? = nil
    /// cap·tanh(x/cap) on attention scores and on the final logits (Gemma 2).
    public var attentionSoftCap: Float? = nil
    public var finalSoftCap: Float? = nil
    /// Layers that attend over the last `slidingWindow` positions only (Gemma 2/3, Mistral-style).
    public var slidingWindow: Int? = nil
    public var slidingLayers: [Bool]? = nil
    /// RoPE base of the sliding layers where it differs from the global one (Gemma 3: 10k vs 1M).
    public var slidingRopeTheta: Float? = nil

    public init() {}

    /// Where the block departs from Llama's, in words (empty for Llama's block).
    public var departures: [String] {
        var out: [String] = []
        if norm == .layer { out.append("LayerNorm") }
        if activation != .silu { out.append(activation == .gelu ? "GELU" : "GELU (tanh)") }
        if !gatedMLP { out.append("ungated MLP") }
        if mlpBias { out.append("MLP biases") }
        if parallelResidual { out.append(sharedNorm ? "parallel residual, one norm" : "parallel residual, two norms") }
        if !inputNorms { out.append("no input norms") }
        if outputNorms { out.append("output norms") }
        if queryKeyNormSpansHeads { out.append("Q/K norm over the projection") }
        if queryKeyNormPerHeadWeights { out.append("Q/K norm weights per head") }
        if let r = rotaryDimensions { out.append("rotary over \(r) dims") }
        if let s = embeddingScale { out.append(String(format: "embeddings × %.3g", s)) }
        if let s = attentionScale { out.append(String(format: "score scale %.4g", s)) }
        if let c = attentionSoftCap { out.append(String(format: "score cap %.3g", c)) }
        if let c = finalSoftCap { out.append(String(format: "logit cap %.3g", c)) }
        if let w = slidingWindow {
            let count = slidingLayers?.filter { $0 }.count
            out.append("window \(w)" + (count.map { " in \($0) of \(slidingLayers!.count) layers" } ?? "") + (slidingRopeTheta.map { String(format: ", local θ %.0f", $0) } ?? ""))
        }
        return out
    }

    /// Llama's block, which training, pruning and the scaling methods are written for.
    public var isLlamaBlock: Bool { self == BlockVariant() }

    /// Whether layer `index` attends over a window.
    public func windowed(layer index: Int) -> Bool { slidingWindow != nil && (slidingLayers?[index] ?? true) }
}

extension ModelConfig {
    /// RoPE's rotated dimensions per head.
    public var rotaryDimensions: Int { variant.rotaryDimensions ?? headDim }

    /// Norm weights (and LayerNorm biases) of one block, as the family arranges them.
    public var normParametersPerLayer: Int {
        if stateSpace != nil { return hiddenSize }
        let v = variant
        let blockNorms = (v.inputNorms ? (v.sharedNorm ? 1 : 2) : 0) + (v.outputNorms ? 2 : 0)
        let headNorms = queryKeyNorm ? (v.queryKeyNormSpansHeads || v.queryKeyNormPerHeadWeights ? queryWidth + kvWidth : 2 * headDim) : 0
        return blockNorms * hiddenSize * (v.norm == .layer ? 2 : 1) + headNorms * (v.norm == .layer && !v.queryKeyNormPerHeadWeights ? 2 : 1)
    }

    /// Methods that rewrite a Llama block's weights by name (training, pruning, AWQ/SmoothQuant scaling)
    /// call this first, so another family is one clear error instead of a wrong model.
    public func requireLlamaBlock(for method: String) throws {
        guard variant.isLlamaBlock, experts == nil, stateSpace == nil else {
            let why = stateSpace != nil ? "a state-space mixer instead of attention" : experts != nil ? "routed experts" : "its BlockVariant"
            throw PivotError.invalidArgument("\(method) is written for Llama-style blocks; the \(architecture) block differs (\(why))")
        }
    }

    /// Methods that read or replace attention's keys and values (attention maps, IntactKV) call this first.
    public func requireAttention(for method: String) throws {
        guard stateSpace == nil else {
            throw PivotError.invalidArgument("\(method) works on attention's keys and values; \(architecture) has none (a state-space model keeps a recurrent state)")
        }
    }
}
