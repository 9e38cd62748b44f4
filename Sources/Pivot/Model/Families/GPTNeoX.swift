/// GPT-NeoX / Pythia (`gpt_neox`, GGUF `gptneox`): LayerNorm with biases, a per-head fused QKV (HF)
/// that llama.cpp stores as [q; k; v], partial rotary, biases everywhere, an ungated GELU MLP and a
/// parallel residual with two norms.
extension ModelFamily {
    static let gptNeoX = ModelFamily(
        huggingFaceTypes: ["gpt_neox"], ggufArchitectures: ["gptneox"], convertsTo: { _ in "gptneox" },
        huggingFaceNames: TensorNaming(
            embedding: "gpt_neox.embed_in.weight", finalNorm: "gpt_neox.final_layer_norm.weight", output: "embed_out",
            layerPrefix: { "gpt_neox.layers.\($0)." }, attentionNorm: "input_layernorm.weight", query: "", key: "", value: "",
            attentionOutput: "attention.dense", mlpNorm: "post_attention_layernorm.weight", gate: "",
            up: "mlp.dense_h_to_4h", down: "mlp.dense_4h_to_h", queryNorm: "", keyNorm: "",
            qkv: .grouped("attention.query_key_value")),
        ggufNames: { var n = TensorNaming.gguf; n.qkv = .stacked("attn_qkv"); return n }(),
        readHuggingFace: { reader, c in
            c.neoxBlock()
            c.variant.activation = try reader.activation(["hidden_act"], default: .gelu)
            c.variant.rotaryDimensions = try reader.rotaryDimensions(headDim: c.headDim)
            c.variant.parallelResidual = try reader.bool("use_parallel_residual") ?? true
            c.attentionBias = try reader.bool("attention_bias") ?? true
            c.outputBias = c.attentionBias
            if let base = try reader.double("rotary_emb_base") { c.ropeTheta = Float(base) }
        },
        readGGUF: { keys, c in
            c.neoxBlock()
            // Pythia's GELU is exact; llama.cpp's graph takes the tanh form (a stated difference).
            c.variant.activation = .gelu
            guard let parallel = keys.bool("use_parallel_residual") else {
                throw PivotError.malformed(file: keys.gguf.path, "missing gptneox.use_parallel_residual")
            }
            c.variant.parallelResidual = parallel
            c.attentionBias = true
            c.outputBias = true
        },
        ggufMetadata: { c, arch in [.bool("\(arch).use_parallel_residual", c.variant.parallelResidual)] })
}

extension ModelConfig {
    mutating func neoxBlock() {
        variant.norm = .layer
        variant.gatedMLP = false
        variant.mlpBias = true
    }
}
