import Foundation
import PivotKernels

/// Loads a HuggingFace folder: config.json, safetensors (single or sharded), tokenizer.json and
/// tokenizer_config.json. Float weights become `DenseLinear` operators.
enum HuggingFaceLoader {
    static func load(directory: String, quantizeTo: BlockFormat? = nil) throws -> LoadedModel {
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        let json = try readJSON(configPath)
        var config = try ModelConfig(huggingFace: json, file: configPath)
        let store = try SafetensorsStore(directory: directory)
        // Without the key, a checkpoint with no lm_head is tied (what transformers does on load).
        let family = ModelFamily.huggingFace(config.architecture)!
        if json["tie_word_embeddings"] == nil && store.tensor(named: family.huggingFaceNames(for: config).output + ".weight") == nil {
            config.tiedEmbeddings = true
        }
        let transformer = try WeightLoader.build(config: config, store: store, names: family.huggingFaceNames(for: config), quantizeTo: quantizeTo,
                                                 normOffset: family.huggingFaceNormOffset)
        let generationPath = (directory as NSString).appendingPathComponent("generation_config.json")
        let generation = FileManager.default.fileExists(atPath: generationPath) ? try readJSON(generationPath) : [:]
        let defaults = try GenerationDefaults(huggingFace: generation, file: generationPath)
        var stops = try eosIDs(json, file: configPath)
        stops.formUnion(try eosIDs(generation, file: generationPath))
        let tokenizer = try Tokenizer(huggingFaceDirectory: directory, extraStopTokens: stops)
        return try LoadedModel(path: directory, transformer: transformer, tokenizer: tokenizer, stores: [store],
                               generationDefaults: defaults)
    }

    /// `eos_token_id` as one id or a list (Llama-3 lists several end-of-turn tokens).
    static func eosIDs(_ json: [String: Any], file: String) throws -> Set<Int> {
        switch json["eos_token_id"] {
        case nil, is NSNull: return []
        case let list as [Int]: return Set(list)
        case let id as Int: return [id]
        default: throw PivotError.malformed(file: file, "'eos_token_id' must be an integer or a list of integers")
        }
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
