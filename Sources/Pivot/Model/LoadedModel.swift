import Foundation
import PivotKernels

/// A model ready to run: weights, tokenizer and chat format, from a GGUF file or an HF folder.
public final class LoadedModel {
    public let path: String
    public let transformer: Transformer
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate
    /// Sampling defaults the checkpoint ships (HF generation_config.json), used when the user gives none.
    public let generationDefaults: GenerationDefaults
    /// Keeps the mapped files alive.
    let stores: [AnyObject]

    public var config: ModelConfig { transformer.config }

    init(path: String, transformer: Transformer, tokenizer: Tokenizer, stores: [AnyObject],
         generationDefaults: GenerationDefaults = GenerationDefaults()) throws {
        guard tokenizer.vocabularySize <= transformer.config.vocabularySize else {
            throw PivotError.malformed(file: path, "tokenizer has \(tokenizer.vocabularySize) tokens, the model only \(transformer.config.vocabularySize)")
        }
        self.path = path
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.chatTemplate = ChatTemplate(jinja: tokenizer.chatTemplate)
        self.stores = stores
        self.generationDefaults = generationDefaults
    }

    /// Loads a `.gguf` file or a HuggingFace folder (config.json + safetensors + tokenizer.json);
    /// `quantizeOnLoad` quantizes float projection weights in memory (see `WeightLoader.build`).
    public static func load(path: String, quantizeOnLoad: BlockFormat? = nil) throws -> LoadedModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw PivotError.fileNotFound(path)
        }
        if isDirectory.boolValue { return try HuggingFaceLoader.load(directory: path, quantizeTo: quantizeOnLoad) }
        let gguf = try GGUFFile(path: path)
        let transformer = try GGUFModelLoader.load(gguf, quantizeTo: quantizeOnLoad)
        let loaded = try LoadedModel(path: path, transformer: transformer, tokenizer: try Tokenizer(gguf: gguf), stores: [gguf])
        loaded.intactPrefix = try IntactPrefix.read(from: gguf)
        try loaded.intactPrefix?.check(for: transformer.config, file: path)
        if let prefix = loaded.intactPrefix { loaded.kvCache = PreparedKVCache(spec: .f32, pivotSource: StoredPivots(prefix)) }
        return loaded
    }

    /// IntactKV's prefix stored in the file by `pivot intact` (nil: none): every cache of this model
    /// takes its keys/values for a sequence that starts with its tokens (see `KVCacheSpec.prepare`).
    public internal(set) var intactPrefix: IntactPrefix?

    /// The output shortlist the head runs through (`RunConfiguration.shortlist`), told each prompt's tokens.
    public var shortlist: OutputShortlist?

    /// The KV cache every run of this model uses, prepared by `RunConfiguration.load` (F32 unless set, with
    /// the file's intact prefix if it has one).
    public var kvCache = PreparedKVCache.f32

    /// A fresh KV cache of kind `kvCache` for `capacity` tokens; `maxBatch`: the most tokens one pass appends.
    public func makeCache(capacity: Int? = nil, maxBatch: Int = 512) -> KVCache {
        kvCache.makeCache(shape: AttentionShape(config), capacity: min(capacity ?? config.contextLength, config.contextLength), maxBatch: maxBatch)
    }

    /// Parameter count over every linear operator (biases aside), the embedding and the norms.
    public var parameterCount: Int {
        let c = config
        var total = c.vocabularySize * c.hiddenSize + c.hiddenSize
        for layer in transformer.layers {
            total += c.normParametersPerLayer + (c.stateSpace?.vectorParameters ?? 0)
            for op in layer.linears { total += op.inFeatures * op.outFeatures }
        }
        if !c.tiedEmbeddings { total += transformer.output.inFeatures * transformer.output.outFeatures }
        return total
    }

    /// Bytes of weights as they are held for inference.
    public var weightBytes: Int {
        let c = config
        var total = transformer.embedding.tensor.byteCount + c.hiddenSize * 4
        for layer in transformer.layers {
            total += (c.normParametersPerLayer + (c.stateSpace?.vectorParameters ?? 0)) * 4
            for op in layer.linears { total += op.weightBytes }
        }
        if !c.tiedEmbeddings { total += transformer.output.weightBytes }
        return total
    }
}

/// Sampling settings from a checkpoint's generation_config.json; nil where it sets none.
public struct GenerationDefaults: Sendable, Equatable {
    public var temperature: Float?
    public var topK: Int?
    public var topP: Float?

    public init(temperature: Float? = nil, topK: Int? = nil, topP: Float? = nil) {
        self.temperature = temperature; self.topK = topK; self.topP = topP
    }

    /// A sampler with the settings a user gave, the checkpoint's for the rest, else llama.cpp's
    /// defaults (temperature 0.8, top-k 40, top-p 0.95).
    public func sampler(temperature: Float? = nil, topK: Int? = nil, topP: Float? = nil, seed: UInt64) -> Sampler {
        Sampler(temperature: temperature ?? self.temperature ?? 0.8, topK: topK ?? self.topK ?? 40,
                topP: topP ?? self.topP ?? 0.95, seed: seed)
    }

    /// `do_sample: false` means greedy, whatever temperature says.
    init(huggingFace json: [String: Any], file: String) throws {
        let reader = ConfigReader(json: json, file: file)
        self.init(temperature: try reader.double("temperature").map(Float.init), topK: try reader.int("top_k"),
                  topP: try reader.double("top_p").map(Float.init))
        if try reader.bool("do_sample") == false { temperature = 0 }
    }
}
