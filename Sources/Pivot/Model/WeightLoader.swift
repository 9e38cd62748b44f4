import PivotKernels

/// The tensor names of one checkpoint family; everything else about building the model is shared.
struct TensorNaming: Sendable {
    var embedding: String
    var finalNorm: String
    /// Untied output head, without ".weight".
    var output: String
    /// Prefix of layer i's tensors.
    var layerPrefix: @Sendable (Int) -> String
    var attentionNorm, query, key, value, attentionOutput, mlpNorm, gate, up, down: String
    /// Qwen3's per-head RMSNorm weights of Q and K.
    var queryNorm, keyNorm: String

    /// llama.cpp's GGUF names.
    static let gguf = TensorNaming(
        embedding: "token_embd.weight", finalNorm: "output_norm.weight", output: "output", layerPrefix: { "blk.\($0)." },
        attentionNorm: "attn_norm.weight", query: ProjectionRole.query.rawValue, key: ProjectionRole.key.rawValue,
        value: ProjectionRole.value.rawValue, attentionOutput: ProjectionRole.attentionOutput.rawValue,
        mlpNorm: "ffn_norm.weight", gate: ProjectionRole.gate.rawValue, up: ProjectionRole.up.rawValue, down: ProjectionRole.down.rawValue,
        queryNorm: "attn_q_norm.weight", keyNorm: "attn_k_norm.weight")

    /// HuggingFace transformers' Llama/Mistral/Qwen2 names.
    static let huggingFace = TensorNaming(
        embedding: "model.embed_tokens.weight", finalNorm: "model.norm.weight", output: "lm_head", layerPrefix: { "model.layers.\($0)." },
        attentionNorm: "input_layernorm.weight", query: "self_attn.q_proj", key: "self_attn.k_proj", value: "self_attn.v_proj",
        attentionOutput: "self_attn.o_proj", mlpNorm: "post_attention_layernorm.weight", gate: "mlp.gate_proj",
        up: "mlp.up_proj", down: "mlp.down_proj", queryNorm: "self_attn.q_norm.weight", keyNorm: "self_attn.k_norm.weight")
}

/// Builds the forward pass from a tensor store, checking every shape against the config.
enum WeightLoader {
    /// `quantizeTo`: float (F32/F16/BF16) projection weights, and a tied output head, are quantized to
    /// this format as they load (ggml's quantizers, K-quants with llama.cpp's block-32 fallback on rows
    /// that are not a multiple of 256); already quantized tensors and the embedding lookup stay as stored.
    static func build(config c: ModelConfig, store: TensorStore, names: TensorNaming, quantizeTo: BlockFormat? = nil) throws -> Transformer {
        func maybeQuantized(_ t: TensorData) -> TensorData {
            guard let requested = quantizeTo, !t.type.isBlock, t.shape.count == 2 else { return t }
            // A K-quant on rows that are not whole super-blocks takes llama.cpp's block-32 fallback.
            let format = QuantizeRecipe.fallback(requested, columns: t.shape[1])
            guard t.shape[1] % format.elementsPerBlock == 0 else { return t }
            let quantized = t.quantized(to: format)
            // The float source is not read again (but for a tied embedding's lookups, re-read on demand).
            (t.owner as? MappedFile)?.releasePages(t.data, count: t.byteCount)
            return quantized
        }
        let d = c.hiddenSize
        func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
            let buffer = FloatBuffer(count: count)
            try store.require(name, shape: [count]).copyFloats(into: buffer.pointer)
            return buffer
        }
        func linear(_ name: String, out: Int, in inFeatures: Int, bias: Bool = false) throws -> LinearOperator {
            var op = makeLinear(maybeQuantized(try store.require(name + ".weight", shape: [out, inFeatures])))
            if let index = store.tensor(named: name + ".weight" + SparseOutlierLinear.indexSuffix) {
                // Pivot's sparse FP16 outliers beside the quantized weight.
                guard let value = store.tensor(named: name + ".weight" + SparseOutlierLinear.valueSuffix), index.type == .f32,
                      index.shape.count == 1, value.shape == index.shape else {
                    throw PivotError.unsupported(file: store.path, "'\(name).weight' has outlier indices without matching F32 indices / values")
                }
                op = try SparseOutlierLinear(op, indices: index.toFloats().map { Int($0) }, values: value.toFloats())
            }
            guard bias else { return op }
            return BiasedLinear(op, bias: try store.require(name + ".bias", shape: [out]).toFloats())
        }
        let embedding = try store.require(names.embedding, shape: [c.vocabularySize, d])
        var layers: [DecoderLayer] = []
        for i in 0..<c.layerCount {
            let p = names.layerPrefix(i)
            layers.append(DecoderLayer(
                attentionNorm: try vector(p + names.attentionNorm, d),
                query: try linear(p + names.query, out: c.queryWidth, in: d, bias: c.attentionBias),
                key: try linear(p + names.key, out: c.kvWidth, in: d, bias: c.attentionBias),
                value: try linear(p + names.value, out: c.kvWidth, in: d, bias: c.attentionBias),
                attentionOutput: try linear(p + names.attentionOutput, out: d, in: c.queryWidth, bias: c.outputBias),
                mlpNorm: try vector(p + names.mlpNorm, d),
                gate: try linear(p + names.gate, out: c.intermediateSize, in: d),
                up: try linear(p + names.up, out: c.intermediateSize, in: d),
                down: try linear(p + names.down, out: d, in: c.intermediateSize),
                queryNorm: c.queryKeyNorm ? try vector(p + names.queryNorm, c.headDim) : nil,
                keyNorm: c.queryKeyNorm ? try vector(p + names.keyNorm, c.headDim) : nil))
        }
        let output = c.tiedEmbeddings ? makeLinear(maybeQuantized(embedding)) : try linear(names.output, out: c.vocabularySize, in: d)
        return Transformer(config: c, embedding: Embedding(embedding), layers: layers,
                           finalNorm: try vector(names.finalNorm, d), output: output)
    }
}
