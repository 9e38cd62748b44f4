/// OLMo 2 (`olmo2`): norms on the attention and MLP outputs instead of their inputs, and RMSNorm of
/// the whole Q and K projections before RoPE.
extension ModelFamily {
    static let olmo2 = ModelFamily(
        huggingFaceTypes: ["olmo2"], ggufArchitectures: ["olmo2"], convertsTo: { _ in "olmo2" },
        huggingFaceNames: {
            var n = TensorNaming.huggingFace
            n.postAttentionNorm = "post_attention_layernorm.weight"; n.postMLPNorm = "post_feedforward_layernorm.weight"
            return n
        }(),
        ggufNames: .gguf,
        readHuggingFace: { reader, c in
            c.variant.activation = try reader.activation(["hidden_act"], default: .silu)
            try reader.requireFullAttention()
            c.attentionBias = try reader.bool("attention_bias") ?? false
            c.olmo2Block()
        },
        readGGUF: { keys, c in
            if let window = keys.int("attention.sliding_window"), window > 0 {
                throw PivotError.unsupported(file: keys.gguf.path, "OLMo 3's sliding-window layers are not implemented")
            }
            c.olmo2Block()
        })
}

extension ModelConfig {
    mutating func olmo2Block() {
        variant.inputNorms = false
        variant.outputNorms = true
        variant.queryKeyNormSpansHeads = true
        queryKeyNorm = true
    }
}
