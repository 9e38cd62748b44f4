import PivotKernels

extension ModelConfig {
    /// Reads `{arch}.*` keys from GGUF metadata (llama.cpp's names).
    public init(gguf: GGUFFile) throws {
        let m = gguf.metadata
        guard let arch = m["general.architecture"]?.string else {
            throw PivotError.malformed(file: gguf.path, "missing general.architecture")
        }
        guard ["llama", "mistral", "qwen2"].contains(arch) else {
            throw PivotError.unsupported(file: gguf.path, "architecture '\(arch)' (supported: llama, mistral, qwen2)")
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
            // llama.cpp's converter permutes llama/mistral Q,K for pairwise RoPE; qwen2 keeps NEOX order.
            ropeInterleaved: arch != "qwen2",
            tiedEmbeddings: gguf.tensor(named: "output.weight") == nil,
            attentionBias: gguf.tensor(named: "blk.0.attn_q.bias") != nil)
        try validate(file: gguf.path)
    }
}

/// Maps llama.cpp tensor names onto the forward pass's weights.
enum GGUFModelLoader {
    static func load(_ gguf: GGUFFile) throws -> Transformer {
        try WeightLoader.build(config: try ModelConfig(gguf: gguf), store: gguf, names: .gguf)
    }
}
