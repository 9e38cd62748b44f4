/// Falcon (`falcon`): LayerNorm with biases, attention and an ungated GELU MLP side by side (parallel
/// residual), a fused QKV grouped per key/value head (multi-query: one group, the rows [q; k; v]), full
/// RoPE. One norm feeds both (7B, Falcon2-11B) or each has its own (40B/180B: ln_attn and ln_mlp, which
/// llama.cpp names attn_norm_2 and attn_norm). ALiBi variants are refused by name.
extension ModelFamily {
    static let falcon = ModelFamily(
        huggingFaceTypes: ["falcon"], ggufArchitectures: ["falcon"], convertsTo: { _ in "falcon" },
        huggingFaceNames: TensorNaming(
            embedding: "transformer.word_embeddings.weight", finalNorm: "transformer.ln_f.weight", output: "lm_head",
            layerPrefix: { "transformer.h.\($0)." }, attentionNorm: "input_layernorm.weight", query: "", key: "", value: "",
            attentionOutput: "self_attention.dense", mlpNorm: "", gate: "", up: "mlp.dense_h_to_4h", down: "mlp.dense_4h_to_h",
            queryNorm: "", keyNorm: "", qkv: .grouped("self_attention.query_key_value")),
        ggufNames: { var n = TensorNaming.gguf; n.qkv = .stacked("attn_qkv"); return n }(),
        readHuggingFace: { reader, c in
            c.falconBlock()
            if try reader.bool("alibi") == true { throw reader.unsupported("alibi", "ALiBi position biases are not implemented") }
            if try reader.bool("parallel_attn") == false { throw reader.unsupported("parallel_attn", "Falcon's sequential block is not implemented") }
            let newArchitecture = try reader.bool("new_decoder_architecture") ?? false
            if newArchitecture, (try reader.int("num_ln_in_parallel_attn") ?? 2) == 2 { c.variant.sharedNorm = false }
            c.variant.activation = try reader.activation(["activation"], default: .gelu)
            c.intermediateSize = try reader.int("ffn_hidden_size") ?? 4 * c.hiddenSize
            if newArchitecture {
                c.kvHeadCount = try reader.int("num_kv_heads") ?? c.headCount
            } else if try reader.bool("multi_query") ?? true {
                c.kvHeadCount = 1
            } else {
                c.kvHeadCount = c.headCount
            }
            let bias = try reader.bool("bias") ?? false
            c.attentionBias = bias; c.outputBias = bias; c.variant.mlpBias = bias
            c.tiedEmbeddings = try reader.bool("tie_word_embeddings") ?? true
        },
        readGGUF: { keys, c in
            c.falconBlock()
            if keys.has(tensor: "blk.0.attn_norm_2.weight") { c.variant.sharedNorm = false }
            // Falcon's GELU is exact; llama.cpp's graph takes the tanh form (a stated difference).
            c.variant.activation = .gelu
        },
        adjustNames: { c, names, gguf in
            guard !c.variant.sharedNorm else { return names }
            var n = names
            (n.attentionNorm, n.mlpNorm) = gguf ? ("attn_norm_2.weight", "attn_norm.weight") : ("ln_attn.weight", "ln_mlp.weight")
            return n
        },
        unconvertible: { c in c.attentionBias ? "llama.cpp's falcon has no biases on its projections (bias: true)" : nil })
}

extension ModelConfig {
    mutating func falconBlock() {
        variant.norm = .layer
        variant.gatedMLP = false
        variant.parallelResidual = true
        variant.sharedNorm = true
    }
}
