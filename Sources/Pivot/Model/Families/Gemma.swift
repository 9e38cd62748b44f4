/// Gemma 2 and 3: √hidden-scaled embeddings, norms before and after attention and MLP with a
/// 1 + w scale, GeGLU, sliding-window layers; Gemma 2 soft-caps attention scores and logits, Gemma 3
/// normalizes each head of Q and K and rotates its sliding layers with their own base.
extension ModelFamily {
    static let gemmaHuggingFaceNames: TensorNaming = {
        var n = TensorNaming.huggingFace
        n.postAttentionNorm = "post_attention_layernorm.weight"; n.mlpNorm = "pre_feedforward_layernorm.weight"
        n.postMLPNorm = "post_feedforward_layernorm.weight"
        return n
    }()

    static let gemma2 = ModelFamily(
        huggingFaceTypes: ["gemma2"], ggufArchitectures: ["gemma2"], convertsTo: { _ in "gemma2" },
        huggingFaceNames: gemmaHuggingFaceNames, ggufNames: .gguf, huggingFaceNormOffset: 1,
        readHuggingFace: { reader, c in
            try c.gemmaBlock(reader, period: 2)
            c.variant.attentionSoftCap = try reader.double("attn_logit_softcapping").map(Float.init)
            c.variant.finalSoftCap = try reader.double("final_logit_softcapping").map(Float.init)
        },
        readGGUF: { keys, c in
            try c.gemmaBlock(keys, period: 2, defaultWindow: 4096, twentySevenBLayers: 46)
            c.variant.attentionSoftCap = Float(keys.double("attn_logit_softcapping") ?? 50)
            c.variant.finalSoftCap = Float(keys.double("final_logit_softcapping") ?? 30)
        },
        ggufMetadata: { c, arch in
            c.gemmaMetadata(arch) + [.f32("\(arch).attn_logit_softcapping", Double(c.variant.attentionSoftCap ?? 0)),
                                     .f32("\(arch).final_logit_softcapping", Double(c.variant.finalSoftCap ?? 0))]
        })

    static let gemma3 = ModelFamily(
        huggingFaceTypes: ["gemma3_text"], ggufArchitectures: ["gemma3"], convertsTo: { _ in "gemma3" },
        huggingFaceNames: gemmaHuggingFaceNames, ggufNames: .gguf, huggingFaceNormOffset: 1,
        readHuggingFace: { reader, c in
            try c.gemmaBlock(reader, period: try reader.int("sliding_window_pattern") ?? reader.int("_sliding_window_pattern") ?? 6)
            c.queryKeyNorm = true
            if let cap = try reader.double("attn_logit_softcapping") { c.variant.attentionSoftCap = Float(cap) }
            c.variant.finalSoftCap = try reader.double("final_logit_softcapping").map(Float.init)
            var local = try reader.double("rope_local_base_freq")
            if let p = reader.present("rope_parameters") as? [String: Any], let sliding = p["sliding_attention"] as? [String: Any] {
                local = try reader.double("rope_theta", in: sliding) ?? local
                if let type = try reader.string("rope_type", in: sliding), type != "default" {
                    throw reader.unsupported("rope_parameters.sliding_attention.rope_type", "'\(type)' on sliding layers")
                }
            }
            c.variant.slidingRopeTheta = Float(local ?? 10000)
        },
        readGGUF: { keys, c in
            try c.gemmaBlock(keys, period: 6, defaultWindow: 0, twentySevenBLayers: 62)
            c.queryKeyNorm = true
            if let cap = keys.double("final_logit_softcapping"), cap > 0 { c.variant.finalSoftCap = Float(cap) }
            c.variant.slidingRopeTheta = Float(keys.double("rope.freq_base_swa") ?? 10000)
        },
        ggufMetadata: { c, arch in
            c.gemmaMetadata(arch) + [.f32("\(arch).rope.freq_base_swa", Double(c.variant.slidingRopeTheta ?? 10000))]
                + (c.variant.finalSoftCap.map { [.f32("\(arch).final_logit_softcapping", Double($0))] } ?? [])
        })
}

extension ModelConfig {
    /// Gemma's common keys from config.json. Without `layer_types` (checkpoints written before
    /// transformers 4.53), every `period`-th layer is global, as transformers derives it.
    mutating func gemmaBlock(_ reader: ConfigReader, period: Int) throws {
        variant.activation = try reader.activation(["hidden_activation", "hidden_act"], default: .geluTanh)
        variant.embeddingScale = Float(hiddenSize).squareRoot()
        variant.outputNorms = true
        if let scalar = try reader.double("query_pre_attn_scalar") {
            guard scalar > 0 else { throw reader.unsupported("query_pre_attn_scalar", "must be positive") }
            if scalar != Double(headDim) { variant.attentionScale = Float(1 / scalar.squareRoot()) }
        }
        attentionBias = try reader.bool("attention_bias") ?? false
        if let window = try reader.int("sliding_window") {
            variant.slidingWindow = window
            guard period >= 1 else { throw reader.unsupported("sliding_window_pattern", "must be at least 1") }
            variant.slidingLayers = try reader.slidingLayers(count: layerCount) ?? (0..<layerCount).map { ($0 + 1) % period != 0 }
        }
    }

    /// Gemma's keys from GGUF. llama.cpp does not store query_pre_attn_scalar: it scales by 1/√key_length
    /// except in the 27B models (recognized by their layer count), which use 1/√(hidden/heads).
    mutating func gemmaBlock(_ keys: GGUFKeys, period: Int, defaultWindow: Int, twentySevenBLayers: Int) throws {
        variant.activation = .geluTanh
        variant.embeddingScale = Float(hiddenSize).squareRoot()
        variant.outputNorms = true
        if layerCount == twentySevenBLayers { variant.attentionScale = 1 / (Float(hiddenSize) / Float(headCount)).squareRoot() }
        // Pivot's own key for a scale llama.cpp's rule cannot express (llama.cpp ignores it).
        if let scale = keys.double("attention.scale") { variant.attentionScale = Float(scale) }
        let window = keys.int("attention.sliding_window") ?? defaultWindow
        if window > 0 {
            variant.slidingWindow = window
            variant.slidingLayers = try keys.slidingLayers(count: layerCount, defaultPeriod: period)
        }
    }

    func gemmaMetadata(_ arch: String) -> [GGUFMetadataEntry] {
        let scale = variant.attentionScale.map { [GGUFMetadataEntry.f32("\(arch).attention.scale", Double($0))] } ?? []
        guard let window = variant.slidingWindow else { return scale }
        return scale + [.u32("\(arch).attention.sliding_window", window),
                .bools("\(arch).attention.sliding_window_pattern", variant.slidingLayers ?? Array(repeating: true, count: layerCount))]
    }
}
