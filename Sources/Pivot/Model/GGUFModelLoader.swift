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
        let c = try ModelConfig(gguf: gguf)
        let d = c.hiddenSize
        func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
            let t = try gguf.require(name, shape: [count])
            let buffer = FloatBuffer(count: count)
            let values = t.toFloats()
            for i in 0..<count { buffer.pointer[i] = values[i] }
            return buffer
        }
        func linear(_ name: String, out: Int, in inFeatures: Int, bias: Bool = false) throws -> LinearOperator {
            let t = try gguf.require(name + ".weight", shape: [out, inFeatures])
            let op = makeLinear(t)
            guard bias else { return op }
            return BiasedLinear(op, bias: try gguf.require(name + ".bias", shape: [out]).toFloats())
        }
        let embedTensor = try gguf.require("token_embd.weight", shape: [c.vocabularySize, d])
        var layers: [DecoderLayer] = []
        for i in 0..<c.layerCount {
            let p = "blk.\(i)."
            layers.append(DecoderLayer(
                attentionNorm: try vector(p + "attn_norm.weight", d),
                query: try linear(p + "attn_q", out: c.queryWidth, in: d, bias: c.attentionBias),
                key: try linear(p + "attn_k", out: c.kvWidth, in: d, bias: c.attentionBias),
                value: try linear(p + "attn_v", out: c.kvWidth, in: d, bias: c.attentionBias),
                attentionOutput: try linear(p + "attn_output", out: d, in: c.queryWidth),
                mlpNorm: try vector(p + "ffn_norm.weight", d),
                gate: try linear(p + "ffn_gate", out: c.intermediateSize, in: d),
                up: try linear(p + "ffn_up", out: c.intermediateSize, in: d),
                down: try linear(p + "ffn_down", out: d, in: c.intermediateSize)))
        }
        let output = c.tiedEmbeddings ? makeLinear(embedTensor)
                                      : try linear("output", out: c.vocabularySize, in: d)
        return Transformer(config: c, embedding: Embedding(embedTensor), layers: layers,
                           finalNorm: try vector("output_norm.weight", d), output: output)
    }
}
