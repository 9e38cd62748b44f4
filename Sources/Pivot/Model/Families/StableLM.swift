/// StableLM / StableLM 2 (`stablelm`): LayerNorm with biases, partial rotary (a quarter of each head),
/// optional Q/K/V biases and an optional parallel residual sharing one norm.
extension ModelFamily {
    static let stableLM = ModelFamily(
        huggingFaceTypes: ["stablelm"], ggufArchitectures: ["stablelm"], convertsTo: { _ in "stablelm" },
        huggingFaceNames: .huggingFace, ggufNames: .gguf,
        readHuggingFace: { reader, c in
            c.variant.norm = .layer
            c.variant.activation = try reader.activation(["hidden_act"], default: .silu)
            c.variant.rotaryDimensions = try reader.rotaryDimensions(headDim: c.headDim)
            c.attentionBias = try reader.bool("use_qkv_bias") ?? false
            if try reader.bool("qk_layernorm") == true {
                throw reader.unsupported("qk_layernorm", "StableLM's per-head Q/K LayerNorms are not implemented")
            }
            if try reader.bool("use_parallel_residual") == true { c.variant.parallelResidual = true; c.variant.sharedNorm = true }
        },
        readGGUF: { keys, c in
            c.variant.norm = .layer
            if keys.has(tensor: "blk.0.attn_q_norm.weight") {
                throw PivotError.unsupported(file: keys.gguf.path, "StableLM's per-head Q/K LayerNorms are not implemented")
            }
            c.queryKeyNorm = false
            // llama.cpp infers the parallel block from the missing ffn_norm.
            if !keys.has(tensor: "blk.0.ffn_norm.weight") { c.variant.parallelResidual = true; c.variant.sharedNorm = true }
        },
        ggufMetadata: { c, arch in [.bool("\(arch).use_parallel_residual", c.variant.parallelResidual)] })
}
