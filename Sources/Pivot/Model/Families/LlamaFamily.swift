/// Llama-style blocks: Llama, Mistral, Qwen2/Qwen3, SmolLM3 (pre-RMSNorm, SwiGLU, full RoPE).
extension ModelFamily {
    static let llama = ModelFamily(
        huggingFaceTypes: ["llama", "mistral", "qwen2", "qwen3", "smollm3"],
        ggufArchitectures: ["llama", "mistral", "qwen2", "qwen3"],
        // Qwen keeps HF's rotate-half rows under its own architecture; the others are permuted for llama.
        convertsTo: { c in ["qwen2", "qwen3"].contains(c.architecture) ? c.architecture : "llama" },
        huggingFaceNames: .huggingFace, ggufNames: .gguf,
        readHuggingFace: { reader, c in
            let modelType = c.architecture
            for key in ["hidden_act", "hidden_activation"] {
                if let act = try reader.string(key), act != "silu" { throw reader.unsupported(key, "activation '\(act)' (only silu is implemented for \(modelType))") }
            }
            if try reader.bool("mlp_bias") == true { throw reader.unsupported("mlp_bias", "MLP biases are not implemented for \(modelType)") }
            if try reader.rotaryDimensions(headDim: c.headDim) != nil {
                throw reader.unsupported("partial_rotary_factor", "partial rotary embeddings are not implemented for \(modelType)")
            }
            if modelType != "mistral", try reader.bool("use_sliding_window") == true {
                throw reader.unsupported("use_sliding_window", "sliding-window attention is not implemented for \(modelType)")
            }
            try reader.requireFullAttention()
            // Mistral's sliding window only matters past its length: cap the context there, exactly.
            if modelType == "mistral", let window = try reader.int("sliding_window") { c.contextLength = min(c.contextLength, window) }
            c.attentionBias = try reader.bool("attention_bias") ?? (modelType == "qwen2")
            c.outputBias = c.attentionBias && modelType != "qwen2"
            c.queryKeyNorm = modelType == "qwen3"
            c.ropeLayers = try reader.ropeLayers(modelType: modelType, layers: c.layerCount)
        },
        readGGUF: { keys, c in
            // llama.cpp's converter permutes llama/mistral Q,K for pairwise RoPE; qwen keeps NEOX order.
            c.ropeInterleaved = !keys.arch.hasPrefix("qwen")
            // Mixtral: llama with routed experts.
            c.experts = try c.expertLayout(keys)
        })
}

extension ConfigReader {
    /// `layer_types` other than full attention are refused by families that do not implement them.
    func requireFullAttention() throws {
        if let types = present("layer_types") {
            guard let list = types as? [String] else { throw wrongType("layer_types", "a list of strings") }
            if let other = list.first(where: { $0 != "full_attention" }) {
                throw unsupported("layer_types", "layer type '\(other)' (only full_attention is implemented for this family)")
            }
        }
    }

    /// `layer_types` as sliding (true) or full (false) per layer.
    func slidingLayers(count: Int) throws -> [Bool]? {
        guard let types = present("layer_types") else { return nil }
        guard let list = types as? [String] else { throw wrongType("layer_types", "a list of strings") }
        guard list.count == count else { throw PivotError.malformed(file: file, "'layer_types' has \(list.count) entries for \(count) layers") }
        return try list.map {
            switch $0 {
            case "sliding_attention": return true
            case "full_attention": return false
            default: throw unsupported("layer_types", "layer type '\($0)'")
            }
        }
    }
}
