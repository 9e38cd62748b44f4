import Foundation
import PivotKernels

/// Loads a HuggingFace folder: config.json, safetensors (single or sharded), tokenizer.json and
/// tokenizer_config.json. Float weights become `DenseLinear` operators.
enum HuggingFaceLoader {
    static func load(directory: String) throws -> LoadedModel {
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        let json = try readJSON(configPath)
        let config = try ModelConfig(huggingFace: json, file: configPath)
        let store = try SafetensorsStore(directory: directory)
        let transformer = try WeightLoader.build(config: config, store: store, names: .huggingFace)
        return try LoadedModel(path: directory, transformer: transformer,
                               tokenizer: try Tokenizer(huggingFaceDirectory: directory), stores: [store])
    }

    static func readJSON(_ path: String) throws -> [String: Any] {
        guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PivotError.malformed(file: path, "not a JSON object")
        }
        return object
    }
}

extension ModelConfig {
    /// From a HuggingFace `config.json` (Llama, Mistral, Qwen2, SmolLM).
    public init(huggingFace json: [String: Any], file: String) throws {
        let modelType = (json["model_type"] as? String) ?? "llama"
        guard ["llama", "mistral", "qwen2"].contains(modelType) else {
            throw PivotError.unsupported(file: file, "model_type '\(modelType)' (supported: llama, mistral, qwen2)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = json[key] as? Int else { throw PivotError.malformed(file: file, "missing or non-integer '\(key)'") }
            return v
        }
        func double(_ key: String, _ fallback: Double) -> Double { (json[key] as? Double) ?? (json[key] as? Int).map(Double.init) ?? fallback }
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        if let scaling = json["rope_scaling"], !(scaling is NSNull) {
            throw PivotError.unsupported(file: file, "rope_scaling is not implemented")
        }
        self.init(
            architecture: modelType,
            vocabularySize: try int("vocab_size"),
            hiddenSize: hidden,
            intermediateSize: try int("intermediate_size"),
            layerCount: try int("num_hidden_layers"),
            headCount: heads,
            kvHeadCount: (json["num_key_value_heads"] as? Int) ?? heads,
            headDim: (json["head_dim"] as? Int) ?? (heads > 0 ? hidden / heads : 0),
            contextLength: (json["max_position_embeddings"] as? Int) ?? 2048,
            ropeTheta: Float(double("rope_theta", 10000)),
            rmsNormEpsilon: Float(double("rms_norm_eps", 1e-6)),
            ropeInterleaved: false,
            tiedEmbeddings: (json["tie_word_embeddings"] as? Bool) ?? false,
            attentionBias: (json["attention_bias"] as? Bool) ?? (modelType == "qwen2"))
        try validate(file: file)
    }
}
