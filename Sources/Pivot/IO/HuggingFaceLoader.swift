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
        func object(_ data: Data) -> [String: Any]? { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] }
        guard let data = FileManager.default.contents(atPath: path), let object = object(data) ?? object(quotingNonFiniteNumbers(data)) else {
            throw PivotError.malformed(file: path, "not a JSON object")
        }
        return object
    }

    /// Python's json writes infinities and NaN bare (Mamba-2's `"time_step_limit": [0.0, Infinity]`), which
    /// JSON does not allow: outside strings they become transformers 5's `{"__float__": "Infinity"}`.
    static func quotingNonFiniteNumbers(_ data: Data) -> Data {
        let bytes = [UInt8](data)
        var out: [UInt8] = [], i = 0, inString = false
        out.reserveCapacity(bytes.count)
        while i < bytes.count {
            let b = bytes[i]
            if inString {
                out.append(b)
                if b == UInt8(ascii: "\\"), i + 1 < bytes.count { out.append(bytes[i + 1]); i += 2; continue }
                if b == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            if b == UInt8(ascii: "\"") { inString = true }
            var matched = false
            for word in ["-Infinity", "Infinity", "NaN"] where bytes[i...].starts(with: word.utf8) {
                out += Array("{\"__float__\": \"\(word)\"}".utf8)
                i += word.utf8.count
                matched = true
                break
            }
            if !matched { out.append(b); i += 1 }
        }
        return Data(out)
    }
}
