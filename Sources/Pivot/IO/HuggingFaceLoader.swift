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
        let transformer = try buildTransformer(config: config, store: store)
        let tokenizer = try Tokenizer(huggingFaceDirectory: directory)
        guard tokenizer.vocabularySize <= config.vocabularySize else {
            throw PivotError.malformed(file: directory, "tokenizer has \(tokenizer.vocabularySize) tokens, the model only \(config.vocabularySize)")
        }
        return LoadedModel(path: directory, transformer: transformer, tokenizer: tokenizer, stores: [store])
    }

    static func readJSON(_ path: String) throws -> [String: Any] {
        guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PivotError.malformed(file: path, "not a JSON object")
        }
        return object
    }

    static func buildTransformer(config c: ModelConfig, store: SafetensorsStore) throws -> Transformer {
        let d = c.hiddenSize
        func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
            let values = try store.require(name, shape: [count]).toFloats()
            let buffer = FloatBuffer(count: count)
            for i in 0..<count { buffer.pointer[i] = values[i] }
            return buffer
        }
        func linear(_ name: String, out: Int, in inFeatures: Int, bias: Bool = false) throws -> LinearOperator {
            let op = makeLinear(try store.require(name + ".weight", shape: [out, inFeatures]))
            guard bias else { return op }
            return BiasedLinear(op, bias: try store.require(name + ".bias", shape: [out]).toFloats())
        }
        let embedding = try store.require("model.embed_tokens.weight", shape: [c.vocabularySize, d])
        var layers: [DecoderLayer] = []
        for i in 0..<c.layerCount {
            let p = "model.layers.\(i)."
            layers.append(DecoderLayer(
                attentionNorm: try vector(p + "input_layernorm.weight", d),
                query: try linear(p + "self_attn.q_proj", out: c.queryWidth, in: d, bias: c.attentionBias),
                key: try linear(p + "self_attn.k_proj", out: c.kvWidth, in: d, bias: c.attentionBias),
                value: try linear(p + "self_attn.v_proj", out: c.kvWidth, in: d, bias: c.attentionBias),
                attentionOutput: try linear(p + "self_attn.o_proj", out: d, in: c.queryWidth),
                mlpNorm: try vector(p + "post_attention_layernorm.weight", d),
                gate: try linear(p + "mlp.gate_proj", out: c.intermediateSize, in: d),
                up: try linear(p + "mlp.up_proj", out: c.intermediateSize, in: d),
                down: try linear(p + "mlp.down_proj", out: d, in: c.intermediateSize)))
        }
        let output = c.tiedEmbeddings ? makeLinear(embedding) : try linear("lm_head", out: c.vocabularySize, in: d)
        return Transformer(config: c, embedding: Embedding(embedding), layers: layers,
                           finalNorm: try vector("model.norm.weight", d), output: output)
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
