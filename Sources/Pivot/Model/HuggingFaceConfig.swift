import Foundation

/// Reads `config.json` in every form transformers writes or wrote: top-level `rope_theta` +
/// `rope_scaling` (4.x) or `rope_parameters` (5.x), `torch_dtype` or `dtype`. A key that
/// changes the model's output and is not understood is an error naming it, never a default.
/// The common numbers are read here; the family (`ModelFamily`) reads what is its own.
extension ModelConfig {
    public static var huggingFaceModelTypes: [String] { ModelFamily.huggingFaceTypes }

    public init(huggingFace json: [String: Any], file: String) throws {
        let reader = ConfigReader(json: json, file: file)
        let modelType = try reader.string("model_type") ?? "llama"
        guard let family = ModelFamily.huggingFace(modelType) else {
            throw PivotError.unsupported(file: file, "model_type '\(modelType)' (supported: \(Self.huggingFaceModelTypes.joined(separator: ", ")))")
        }
        if reader.present("quantization_config") != nil {
            throw reader.unsupported("quantization_config", "pre-quantized HF checkpoints (GPTQ/AWQ/bitsandbytes) are not supported; use the float checkpoint or a GGUF file")
        }
        let hidden = try reader.requiredInt("hidden_size")
        // Falcon's older configs say n_head / n_layer.
        // A state-space family has no attention heads, whatever a config says.
        guard let heads = family.hasAttention ? try reader.int("num_attention_heads") ?? reader.int("n_head") : 0 else {
            throw PivotError.malformed(file: file, "missing 'num_attention_heads'")
        }
        // Mamba-2's head_dim is its scan's, not attention's.
        let headDim = family.hasAttention ? try reader.int("head_dim") ?? (heads > 0 ? hidden / heads : 0) : 0
        let context = try reader.int("max_position_embeddings") ?? 2048
        let (theta, scaling) = try reader.rope(headDim: headDim, context: context)
        self.init(
            architecture: modelType,
            vocabularySize: try reader.requiredInt("vocab_size"),
            hiddenSize: hidden,
            // Falcon has none (its family sets 4 × hidden); validation refuses a family that leaves it 0.
            intermediateSize: try reader.int("intermediate_size") ?? 0,
            layerCount: try reader.int("num_hidden_layers") ?? reader.int("n_layer") ?? 0,
            headCount: heads,
            kvHeadCount: family.hasAttention ? try reader.int("num_key_value_heads") ?? heads : 0,
            headDim: headDim,
            contextLength: context,
            ropeTheta: Float(theta),
            rmsNormEpsilon: Float(try reader.double("rms_norm_eps") ?? reader.double("layer_norm_eps") ?? reader.double("layer_norm_epsilon") ?? 1e-6),
            ropeInterleaved: false,
            tiedEmbeddings: try reader.bool("tie_word_embeddings") ?? false,
            attentionBias: false,
            ropeScaling: scaling,
            declaredDType: try reader.dtype())
        capContextForLongRoPE()
        try validateCounts(file: file, attention: family.hasAttention)
        try family.readHuggingFace(reader, &self)
        try validate(file: file)
    }
}

/// Typed access to config.json with errors that name the key.
struct ConfigReader {
    let json: [String: Any]
    let file: String

    func present(_ key: String, in object: [String: Any]? = nil) -> Any? {
        let value = (object ?? json)[key]
        return value is NSNull ? nil : value
    }

    func wrongType(_ key: String, _ expected: String) -> PivotError {
        .malformed(file: file, "'\(key)' must be \(expected)")
    }

    func string(_ key: String, in object: [String: Any]? = nil) throws -> String? {
        guard let value = present(key, in: object) else { return nil }
        guard let s = value as? String else { throw wrongType(key, "a string") }
        return s
    }

    func int(_ key: String, in object: [String: Any]? = nil) throws -> Int? {
        guard let value = present(key, in: object) else { return nil }
        if let n = value as? NSNumber, !isJSONBoolean(n), n.doubleValue == n.doubleValue.rounded() { return n.intValue }
        throw wrongType(key, "an integer")
    }

    func requiredInt(_ key: String) throws -> Int {
        guard let value = try int(key) else { throw PivotError.malformed(file: file, "missing '\(key)'") }
        return value
    }

    func double(_ key: String, in object: [String: Any]? = nil) throws -> Double? {
        guard let value = present(key, in: object) else { return nil }
        if let n = value as? NSNumber, !isJSONBoolean(n) { return n.doubleValue }
        throw wrongType(key, "a number")
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = present(key) else { return nil }
        if let n = value as? NSNumber, isJSONBoolean(n) { return n.boolValue }
        throw wrongType(key, "true or false")
    }

    /// JSONSerialization gives true/false as NSNumber too; their objCType is "c" (char).
    func isJSONBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    func unsupported(_ key: String, _ why: String) -> PivotError {
        .unsupported(file: file, "'\(key)': \(why)")
    }

    /// θ and scaling from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (4.x).
    func rope(headDim: Int, context: Int) throws -> (theta: Double, scaling: RoPEScaling) {
        var parameters: [String: Any]?
        var key = "rope_scaling"
        if let value = present("rope_parameters") {
            guard var object = value as? [String: Any] else { throw wrongType("rope_parameters", "an object") }
            // Per layer type (Gemma 3): the full-attention layers' parameters; the family reads the rest.
            if let full = object["full_attention"] as? [String: Any] { object = full }
            if object["rope_type"] == nil && object["rope_theta"] == nil && object["type"] == nil {
                throw unsupported("rope_parameters", "per-layer-type RoPE parameters (\(object.keys.sorted().joined(separator: ", "))) are not implemented")
            }
            parameters = object
            key = "rope_parameters"
        } else if let value = present("rope_scaling") {
            guard let object = value as? [String: Any] else { throw wrongType("rope_scaling", "an object") }
            parameters = object
        }
        let theta = try double("rope_theta", in: parameters) ?? double("rope_theta") ?? 10000
        guard let p = parameters else { return (theta, .none) }
        let type = try string("rope_type", in: p) ?? string("type", in: p) ?? "default"
        func factor() throws -> Double {
            guard let f = try double("factor", in: p), f > 0 else { throw PivotError.malformed(file: file, "'\(key).factor' must be a positive number for rope_type '\(type)'") }
            return f
        }
        let original = try int("original_max_position_embeddings", in: p)
        switch type {
        case "default":
            return (theta, .none)
        case "linear":
            return (theta, .linear(factor: try factor()))
        case "llama3":
            guard let original else { throw PivotError.malformed(file: file, "'\(key).original_max_position_embeddings' is required for rope_type 'llama3'") }
            let low = try double("low_freq_factor", in: p) ?? 1, high = try double("high_freq_factor", in: p) ?? 4
            guard high > low else { throw PivotError.malformed(file: file, "'\(key)': high_freq_factor must exceed low_freq_factor") }
            return (theta, .llama3(factor: try factor(), lowFrequencyFactor: low, highFrequencyFactor: high, originalContext: original))
        case "yarn":
            let f = try factor()
            func mscale(_ scale: Double, _ m: Double) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            var attention = try double("attention_factor", in: p)
            if attention == nil {
                if let m = try double("mscale", in: p), let all = try double("mscale_all_dim", in: p), m != 0, all != 0 {
                    attention = mscale(f, m) / mscale(f, all)
                } else {
                    attention = mscale(f, 1)
                }
            }
            let truncate = (p["truncate"] as? Bool) ?? true
            return (theta, .yarn(factor: f, originalContext: original ?? context, betaFast: try double("beta_fast", in: p) ?? 32,
                                 betaSlow: try double("beta_slow", in: p) ?? 1, attentionFactor: attention!, truncate: truncate))
        case "longrope", "su":
            // transformers' rule: factor = max_position_embeddings / original, attention √(1 + ln f / ln original).
            // Phi-3's top-level key first, as transformers' standardize_rope_params reads it.
            guard let original = try int("original_max_position_embeddings") ?? original, original > 0 else {
                throw PivotError.malformed(file: file, "'original_max_position_embeddings' is required for rope_type '\(type)'")
            }
            func factors(_ name: String) throws -> [Float] {
                guard let list = p[name] as? [Any] else { throw PivotError.malformed(file: file, "'\(key).\(name)' is required for rope_type '\(type)'") }
                return try list.map { v in
                    guard let n = v as? NSNumber, n.doubleValue > 0 else { throw wrongType("\(key).\(name)", "a list of positive numbers") }
                    return n.floatValue
                }
            }
            let short = try factors("short_factor"), long = try factors("long_factor")
            let rotary = try rotaryDimensions(headDim: headDim) ?? headDim
            guard short.count == long.count, short.count * 2 == rotary else {
                throw PivotError.malformed(file: file, "'\(key)': \(short.count) short and \(long.count) long factors for \(rotary / 2) rotary frequencies")
            }
            let scale = try double("factor", in: p) ?? Double(context) / Double(original)
            let attention = try double("attention_factor", in: p) ?? RoPEScaling.longRoPEAttentionFactor(scale: scale, originalContext: original)
            return (theta, .longRoPE(short: short, long: long, originalContext: original, attentionFactor: attention, context: context))
        default:
            throw unsupported("\(key).rope_type", "'\(type)' is not implemented (supported: default, linear, llama3, yarn, longrope)")
        }
    }

    /// SmolLM3 leaves RoPE out of every `no_rope_layer_interval`-th layer (`no_rope_layers[i] == 0`).
    func ropeLayers(modelType: String, layers: Int) throws -> [Bool]? {
        if let value = present("no_rope_layers") {
            guard let list = value as? [Int] else { throw wrongType("no_rope_layers", "a list of 0/1 integers") }
            return list.map { $0 != 0 }
        }
        guard modelType == "smollm3" else { return nil }
        let interval = try int("no_rope_layer_interval") ?? 4
        guard interval > 0 else { throw PivotError.malformed(file: file, "'no_rope_layer_interval' must be positive") }
        return (0..<layers).map { ($0 + 1) % interval != 0 }
    }

    func dtype() throws -> String? {
        guard let value = try string("dtype") ?? string("torch_dtype") else { return nil }
        guard ["float32", "float16", "bfloat16"].contains(value) else {
            throw unsupported(present("dtype") != nil ? "dtype" : "torch_dtype", "'\(value)' (expected float32, float16 or bfloat16)")
        }
        return value
    }
}
