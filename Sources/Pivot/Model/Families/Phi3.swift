/// Phi-3/3.5/4 (`phi3`): a Llama block with fused QKV and gate/up projections and optionally partial
/// rotary (Phi-4-mini). llama.cpp keeps both fused (`attn_qkv`, a double-height `ffn_up`).
extension ModelFamily {
    static let phi3 = ModelFamily(
        huggingFaceTypes: ["phi3"], ggufArchitectures: ["phi3"], convertsTo: { _ in "phi3" },
        huggingFaceNames: {
            var n = TensorNaming.huggingFace
            n.qkv = .stacked("self_attn.qkv_proj"); n.fusedGateUp = "mlp.gate_up_proj"
            return n
        }(),
        ggufNames: { var n = TensorNaming.gguf; n.qkv = .stacked("attn_qkv"); n.fusedGateUp = "ffn_up"; return n }(),
        readHuggingFace: { reader, c in
            c.variant.activation = try reader.activation(["hidden_act"], default: .silu)
            c.variant.rotaryDimensions = try reader.rotaryDimensions(headDim: c.headDim)
            // transformers applies Phi-3's window, llama.cpp ignores it. Capping the context at the window (as for
            // Mistral) keeps every KV cache usable and transformers' output exact, at the cost of the longer context.
            if let window = try reader.int("sliding_window") { c.contextLength = min(c.contextLength, window) }
            try reader.requireFullAttention()
            if try reader.bool("attention_bias") == true { c.attentionBias = true }
        },
        readGGUF: { keys, c in
            if let window = keys.int("attention.sliding_window"), window > 0 { c.contextLength = min(c.contextLength, window) }
        })
}
