/// StableLM / StableLM 2 (`stablelm`): LayerNorm with biases, partial rotary (a quarter of each head),
/// optional Q/K/V biases, an optional parallel residual sharing one norm, and (12B) per-head Q/K LayerNorms.
extension ModelFamily {
    static let stableLM = ModelFamily(
        huggingFaceTypes: ["stablelm"], ggufArchitectures: ["stablelm"], convertsTo: { _ in "stablelm" },
        huggingFaceNames: {
            var n = TensorNaming.huggingFace
            n.perHeadNormStems = ("self_attn.q_layernorm.norms.", "self_attn.k_layernorm.norms.")
            return n
        }(),
        ggufNames: .gguf,
        readHuggingFace: { reader, c in
            c.variant.norm = .layer
            c.variant.activation = try reader.activation(["hidden_act"], default: .silu)
            c.variant.rotaryDimensions = try reader.rotaryDimensions(headDim: c.headDim)
            c.attentionBias = try reader.bool("use_qkv_bias") ?? false
            if try reader.bool("qk_layernorm") == true { c.queryKeyNorm = true; c.variant.queryKeyNormPerHeadWeights = true }
            if try reader.bool("use_parallel_residual") == true { c.variant.parallelResidual = true; c.variant.sharedNorm = true }
        },
        readGGUF: { keys, c in
            c.variant.norm = .layer
            // StableLM 2 12B: a LayerNorm (no bias) with its own weights on every head of Q and K.
            c.variant.queryKeyNormPerHeadWeights = c.queryKeyNorm
            // llama.cpp infers the parallel block from the missing ffn_norm.
            if !keys.has(tensor: "blk.0.ffn_norm.weight") { c.variant.parallelResidual = true; c.variant.sharedNorm = true }
        },
        ggufMetadata: { c, arch in [.bool("\(arch).use_parallel_residual", c.variant.parallelResidual)] })
}
