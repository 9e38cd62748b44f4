import PivotKernels

/// One model family: how its config.json and GGUF metadata describe the block, and the names its
/// tensors go by in each format. Everything else (loading, the forward pass, quantization, caches,
/// the server) is shared; a new family is one file in this folder and one entry in `all`.
struct ModelFamily: Sendable {
    /// `model_type` values of config.json.
    var huggingFaceTypes: [String]
    /// `general.architecture` values of GGUF files.
    var ggufArchitectures: [String]
    /// The architecture `pivot convert` writes for a config (llama.cpp's name); nil: none.
    var convertsTo: @Sendable (ModelConfig) -> String?
    var huggingFaceNames: TensorNaming
    var ggufNames: TensorNaming
    /// Added to every norm weight of an HF checkpoint (Gemma stores w for a scale of 1 + w; llama.cpp's
    /// converter adds the 1, so GGUF files hold the scale).
    var huggingFaceNormOffset: Float = 0
    /// Family keys of config.json, applied after the common ones.
    var readHuggingFace: @Sendable (ConfigReader, inout ModelConfig) throws -> Void
    /// Family keys of GGUF metadata (`{arch}.*`), applied after the common ones.
    var readGGUF: @Sendable (GGUFKeys, inout ModelConfig) throws -> Void
    /// GGUF metadata the family adds when converting (beside the common keys).
    var ggufMetadata: @Sendable (ModelConfig, String) -> [GGUFMetadataEntry] = { _, _ in [] }
    /// The names of one config's tensors where they depend on it (Falcon-40B's two norms); given the
    /// family's HF or GGUF names, returns those of this config.
    var adjustNames: @Sendable (ModelConfig, TensorNaming, _ gguf: Bool) -> TensorNaming = { _, names, _ in names }
    /// Why llama.cpp could not load this model's GGUF (nil: it can), checked before converting.
    var unconvertible: @Sendable (ModelConfig) -> String? = { _ in nil }
    /// False for state-space families (Mamba): no heads to read, counts of 0 expected.
    var hasAttention = true

    static let all: [ModelFamily] = [.llama, .mixtral, .qwen2MoE, .phi3, .olmo2, .stableLM, .gptNeoX, .falcon, .gemma2, .gemma3, .mamba, .mamba2]

    func huggingFaceNames(for c: ModelConfig) -> TensorNaming { adjustNames(c, huggingFaceNames, false) }
    func ggufNames(for c: ModelConfig) -> TensorNaming { adjustNames(c, ggufNames, true) }

    static func huggingFace(_ modelType: String) -> ModelFamily? { all.first { $0.huggingFaceTypes.contains(modelType) } }
    static func gguf(_ architecture: String) -> ModelFamily? { all.first { $0.ggufArchitectures.contains(architecture) } }
    static var huggingFaceTypes: [String] { all.flatMap(\.huggingFaceTypes) }
    static var ggufArchitectures: [String] { all.flatMap(\.ggufArchitectures) }
}

/// Typed reads of one GGUF file's `{arch}.*` keys with errors that name the key.
struct GGUFKeys {
    let gguf: GGUFFile
    let arch: String

    func value(_ key: String) -> MetadataValue? { gguf.metadata["\(arch).\(key)"] }
    func int(_ key: String) -> Int? { value(key)?.int }
    func double(_ key: String) -> Double? { value(key)?.double }
    func bool(_ key: String) -> Bool? { value(key)?.bool }
    func requiredInt(_ key: String) throws -> Int {
        guard let v = int(key) else { throw PivotError.malformed(file: gguf.path, "missing \(arch).\(key)") }
        return v
    }
    func has(tensor name: String) -> Bool { gguf.tensor(named: name) != nil }

    /// llama.cpp's `load_swa_pattern`: a bool array `attention.sliding_window_pattern`, else every
    /// `period`-th layer (from the uint key, or `defaultPeriod`) global and the rest sliding.
    func slidingLayers(count: Int, defaultPeriod: Int) throws -> [Bool] {
        if let list = value("attention.sliding_window_pattern")?.array {
            guard list.count == count else {
                throw PivotError.malformed(file: gguf.path, "\(arch).attention.sliding_window_pattern has \(list.count) entries for \(count) layers")
            }
            return list.map { $0.bool ?? false }
        }
        let period = int("attention.sliding_window_pattern") ?? defaultPeriod
        guard period > 0 else { throw PivotError.malformed(file: gguf.path, "\(arch).attention.sliding_window_pattern must be positive") }
        return (0..<count).map { $0 % period < period - 1 }
    }
}

extension GGUFMetadataEntry {
    static func u32(_ key: String, _ v: Int) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .uint(UInt64(v)), type: 4) }
    static func f32(_ key: String, _ v: Double) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .float(v), type: 6) }
    static func str(_ key: String, _ v: String) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .string(v), type: 8) }
    static func bool(_ key: String, _ v: Bool) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .bool(v), type: 7) }
    static func bools(_ key: String, _ v: [Bool]) -> GGUFMetadataEntry {
        GGUFMetadataEntry(key, .array(v.map { .bool($0) }), type: 9, itemType: 7)
    }
}

extension ConfigReader {
    /// RoPE's share of each head: `partial_rotary_factor` in `rope_parameters` (transformers 5) or at the
    /// top level (4.x), or `rotary_pct` (GPT-NeoX).
    func rotaryDimensions(headDim: Int) throws -> Int? {
        var factor = try double("partial_rotary_factor") ?? double("rotary_pct")
        if let p = present("rope_parameters") as? [String: Any], let f = try double("partial_rotary_factor", in: p) { factor = f }
        guard let factor, factor != 1 else { return nil }
        guard factor > 0, factor < 1 else { throw PivotError.malformed(file: file, "'partial_rotary_factor' \(factor) must be in (0, 1]") }
        return Int((Double(headDim) * factor).rounded(.down))
    }

    /// The activation named by `key` (transformers' ACT2FN names the forward pass implements).
    func activation(_ keys: [String], default fallback: Activation) throws -> Activation {
        for key in keys {
            guard let name = try string(key) else { continue }
            switch name {
            case "silu", "swish": return .silu
            case "gelu": return .gelu
            case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": return .geluTanh
            default: throw unsupported(key, "activation '\(name)' (implemented: silu, gelu, gelu_pytorch_tanh)")
            }
        }
        return fallback
    }
}
