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
        return try LoadedModel(path: path, transformer: transformer, tokenizer: try Tokenizer(gguf: gguf), stores: [gguf])
    }

    /// The KV cache every run of this model uses (`--kv-type` and friends); F32 unless set.
    public var kvCache = KVCacheSpec.f32
    /// IntactKV's full-precision model, when `kvCache.intactFrom` names one.
    public private(set) var intactPivots: IntactPivots?

    /// CSKV's factors and ranks, when `kvCache.kind` is `.cskv`.
    public private(set) var lowRankPlan: LowRankPlan?

    /// Checks `spec` against this model and, for IntactKV, loads the full-precision model it names; for
    /// CSKV, loads its factors or calibrates them (on `pool`, a new one if nil) and saves them.
    public func useKVCache(_ spec: KVCacheSpec, pool: ThreadPool? = nil) throws {
        try spec.validate(headDim: config.headDim)
        var spec = spec
        if let prefix = spec.pivotPrefix {
            spec.pivots = tokenizer.encode(prefix).count
            spec.pivotPrefix = nil
        }
        intactPivots = nil
        if let name = spec.intactFrom {
            guard let path = ModelLocator.resolve(name) else { throw PivotError.fileNotFound(name + " (--intact-from)") }
            intactPivots = try IntactPivots(base: try LoadedModel.load(path: path), for: self, pivots: spec.pivots)
        }
        lowRankPlan = nil
        if spec.kind == .cskv {
            let factors = try lowRankFactors(spec, pool: pool)
            lowRankPlan = try LowRankPlan(factors: factors, fraction: spec.rank, latentBits: spec.latentBits, rope: RotaryGeometry(config))
        }
        kvCache = spec
    }

    /// A fresh KV cache of kind `kvCache` for `capacity` tokens; `maxBatch`: the most tokens one pass appends.
    public func makeCache(capacity: Int? = nil, maxBatch: Int = 512) -> KVCache {
        kvCache.makeCache(shape: AttentionShape(config), capacity: min(capacity ?? config.contextLength, config.contextLength),
                          maxBatch: maxBatch, intact: intactPivots, lowRank: lowRankPlan)
    }

    /// CSKV factors from `spec.factors` (or the default path), calibrated and saved there when missing.
    private func lowRankFactors(_ spec: KVCacheSpec, pool: ThreadPool?) throws -> LowRankKVFactors {
        let path = spec.factors ?? LowRankKVFactors.defaultPath(modelPath: self.path)
        let c = config
        if FileManager.default.fileExists(atPath: path) {
            let factors = try LowRankKVFactors.load(path: path)
            guard factors.layers == c.layerCount, factors.kvHeads == c.kvHeadCount, factors.headDim == c.headDim else {
                throw PivotError.invalidArgument("--kv-factors \(path): \(factors.layers) layers × \(factors.kvHeads) KV heads × \(factors.headDim), "
                    + "the model has \(c.layerCount) × \(c.kvHeadCount) × \(c.headDim)")
            }
            return factors
        }
        guard let text = spec.calibration ?? ModelLocator.calibrationText else {
            throw PivotError.invalidArgument("CSKV needs factors: no file at \(path) and no calibration text (give --kv-calib FILE)")
        }
        guard FileManager.default.fileExists(atPath: text) else { throw PivotError.fileNotFound(text + " (--kv-calib)") }
        guard let contents = try? String(contentsOfFile: text, encoding: .utf8) else { throw PivotError.cannotRead(text, "not UTF-8 text") }
        let err = FileHandle.standardError
        err.write("CSKV: calibrating factors on \((text as NSString).lastPathComponent) (32 chunks of 512 tokens)\n".data(using: .utf8)!)
        let factors = try LowRankKVFactors.calibrate(model: self, tokens: tokenizer.encode(contents, addBOS: false), pool: pool ?? ThreadPool()) { done, total in
            err.write("\rCSKV calibration \(done)/\(total)\(done == total ? "\n" : "")".data(using: .utf8)!)
        }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try factors.write(to: path)
        err.write("CSKV: factors saved to \(path)\n".data(using: .utf8)!)
        return factors
    }

    /// Parameter count over every linear operator, the embedding and the norms.
    public var parameterCount: Int {
        let c = config
        var total = c.vocabularySize * c.hiddenSize + c.hiddenSize
        for layer in transformer.layers {
            total += 2 * c.hiddenSize
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
            total += 2 * c.hiddenSize * 4
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

/// Where models and data are found, from any working directory: `$PIVOT_MODELS` / `$PIVOT_DATA`,
/// the cache folder `~/.cache/pivot` (`$PIVOT_CACHE`) that scripts/fetch-model.sh fills, `./models`,
/// and `shared/` beside the checkout the running binary was built in (then beside the working directory).
public enum ModelLocator {
    public static let defaultModelName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// `$PIVOT_CACHE`, else `$XDG_CACHE_HOME/pivot`, else `~/.cache/pivot`.
    public static var cacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["PIVOT_CACHE"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/pivot" }
        return NSHomeDirectory() + "/.cache/pivot"
    }

    /// The checkouts this process can see: the one holding the executable (…/.build/release/pivot), and the working directory.
    static var checkoutDirectories: [String] {
        var dirs: [String] = []
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        var dir = executable.deletingLastPathComponent()
        for _ in 0..<4 {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { dirs.append(dir.path); break }
            dir = dir.deletingLastPathComponent()
        }
        dirs.append(FileManager.default.currentDirectoryPath)
        return dirs
    }

    public static var searchDirectories: [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["PIVOT_MODELS"], !env.isEmpty { dirs.append(env) }
        dirs.append(cacheDirectory + "/models")
        for checkout in checkoutDirectories {
            dirs += [checkout + "/models", (checkout as NSString).deletingLastPathComponent + "/shared/models"]
        }
        return dirs
    }

    /// Folders holding the evaluation task files (`hellaswag_validation.jsonl`, ...).
    public static var dataDirectories: [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["PIVOT_DATA"], !env.isEmpty { dirs.append(env) }
        dirs.append(cacheDirectory + "/data/eval")
        for checkout in checkoutDirectories { dirs.append((checkout as NSString).deletingLastPathComponent + "/shared/data/eval") }
        return dirs
    }

    /// The first data folder that holds `file`.
    public static func dataDirectory(containing file: String) -> String? {
        dataDirectories.first { FileManager.default.fileExists(atPath: ($0 as NSString).appendingPathComponent(file)) }
    }

    public static func resolve(_ name: String?) -> String? {
        let wanted = name ?? defaultModelName
        if FileManager.default.fileExists(atPath: wanted) { return wanted }
        if wanted.contains("/") && name != nil { return nil }
        for dir in searchDirectories {
            let candidate = (dir as NSString).appendingPathComponent(wanted)
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return nil
    }
}
