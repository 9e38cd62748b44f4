import PivotKernels

extension ModelConfig {
    /// Reads `{arch}.*` keys from GGUF metadata (llama.cpp's names).
    public init(gguf: GGUFFile) throws {
        let m = gguf.metadata
        guard let arch = m["general.architecture"]?.string else {
            throw PivotError.malformed(file: gguf.path, "missing general.architecture")
        }
        guard ["llama", "mistral", "qwen2", "qwen3"].contains(arch) else {
            throw PivotError.unsupported(file: gguf.path, "architecture '\(arch)' (supported: llama, mistral, qwen2, qwen3)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = m["\(arch).\(key)"]?.int else { throw PivotError.malformed(file: gguf.path, "missing \(arch).\(key)") }
            return v
        }
        let hidden = try int("embedding_length")
        let heads = try int("attention.head_count")
        let vocab = m["tokenizer.ggml.tokens"]?.array?.count ?? gguf.tensor(named: "token_embd.weight")?.shape.first ?? 0
        self.init(
            architecture: arch,
            vocabularySize: vocab,
            hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            layerCount: try int("block_count"),
            headCount: heads,
            kvHeadCount: m["\(arch).attention.head_count_kv"]?.int ?? heads,
            headDim: m["\(arch).attention.key_length"]?.int ?? (heads > 0 ? hidden / heads : 0),
            contextLength: m["\(arch).context_length"]?.int ?? 2048,
            ropeTheta: Float(m["\(arch).rope.freq_base"]?.double ?? 10000),
            rmsNormEpsilon: Float(m["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
            // llama.cpp's converter permutes llama/mistral Q,K for pairwise RoPE; qwen keeps NEOX order.
            ropeInterleaved: !arch.hasPrefix("qwen"),
            tiedEmbeddings: gguf.tensor(named: "output.weight") == nil,
            attentionBias: gguf.tensor(named: "blk.0.attn_q.bias") != nil,
            outputBias: gguf.tensor(named: "blk.0.attn_output.bias") != nil,
            ropeScaling: try Self.ropeScaling(gguf, arch: arch),
            queryKeyNorm: gguf.tensor(named: "blk.0.attn_q_norm.weight") != nil)
        try validate(file: gguf.path)
    }

    /// `rope_freqs.weight` (Llama-3.1 files) or `{arch}.rope.scaling.type` linear; others are refused.
    static func ropeScaling(_ gguf: GGUFFile, arch: String) throws -> RoPEScaling {
        if let factors = gguf.tensor(named: "rope_freqs.weight") { return .frequencyFactors(factors.toFloats()) }
        let type = gguf.metadata["\(arch).rope.scaling.type"]?.string ?? "none"
        switch type {
        case "none": return .none
        case "linear":
            guard let factor = gguf.metadata["\(arch).rope.scaling.factor"]?.double, factor > 0 else {
                throw PivotError.malformed(file: gguf.path, "\(arch).rope.scaling.factor missing for linear RoPE scaling")
            }
            return .linear(factor: factor)
        default:
            throw PivotError.unsupported(file: gguf.path, "\(arch).rope.scaling.type '\(type)' (supported: none, linear)")
        }
    }
}

/// Maps llama.cpp tensor names onto the forward pass's weights.
enum GGUFModelLoader {
    static func load(_ gguf: GGUFFile, quantizeTo: BlockFormat? = nil) throws -> Transformer {
        try WeightLoader.build(config: try ModelConfig(gguf: gguf), store: gguf, names: .gguf, quantizeTo: quantizeTo)
    }
}
