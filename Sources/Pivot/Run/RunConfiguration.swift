import Foundation
import PivotKernels

/// One description of a run: the model and every runtime option that changes its numbers or its
/// speed. The CLI's option groups and an eval matrix's rows build it; `load` is the one way a model
/// becomes ready to run with it (quantize-on-load, activation bits, the prepared KV cache).
public struct RunConfiguration: Codable, Sendable, Equatable {
    public var name: String
    /// A .gguf file, a HuggingFace folder or a bare file name looked up like `-m`; nil: the default model.
    public var model: String?
    /// Float projections quantized in memory as the model loads (nil: as stored).
    public var quantizeOnLoad: BlockFormat?
    public var precision: ActivationPrecision
    /// Simulated per-token activation bits for every block projection (nil: none).
    public var actBits: Int?
    /// The x value of this row in plots (e.g. weight bits); nil: measured bits per weight.
    public var bits: Double?
    /// The KV cache (in a matrix spec: `kv_type`, `kv_bits`, `kv_group`, `kv_window`, `pivot` beside the other keys).
    public var kvCache: KVCacheSpec
    /// `kvCache` is a verb's default rather than the user's choice (serve's F16): a family whose
    /// attention only the F32 cache implements (sliding windows, soft caps) then gets F32 instead.
    public var kvCacheIsDefault = false
    /// Lossless drafting for the verbs that generate (nil: plain decoding).
    public var draft: DraftSettings?
    /// Tokens run before every scored window or request and never scored (`--prefix`; nil: none).
    public var prefix: PrefixText?
    /// Run the file a quantization method makes from `model` (made once, kept in the cache folder).
    public var quantize: QuantizeSpec?
    /// The output shortlist for the verbs that generate (nil: the full head).
    public var shortlist: OutputShortlist.Settings?

    public init(name: String, model: String? = nil, quantizeOnLoad: BlockFormat? = nil, precision: ActivationPrecision = .int8,
                actBits: Int? = nil, bits: Double? = nil, kvCache: KVCacheSpec = .f32, draft: DraftSettings? = nil, prefix: PrefixText? = nil, quantize: QuantizeSpec? = nil) {
        self.name = name; self.model = model; self.quantizeOnLoad = quantizeOnLoad; self.precision = precision; self.actBits = actBits
        self.bits = bits; self.kvCache = kvCache; self.draft = draft; self.prefix = prefix; self.quantize = quantize
    }

    enum CodingKeys: String, CodingKey { case name, model, quantizeOnLoad = "quantize_on_load", precision, actBits = "act_bits", bits, draft, prefix, quantize, shortlist }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encodeIfPresent(quantizeOnLoad?.name, forKey: .quantizeOnLoad)
        try c.encode(precision, forKey: .precision)
        try c.encodeIfPresent(actBits, forKey: .actBits)
        try c.encodeIfPresent(bits, forKey: .bits)
        try c.encodeIfPresent(draft, forKey: .draft)
        try c.encodeIfPresent(prefix, forKey: .prefix)
        try c.encodeIfPresent(quantize, forKey: .quantize)
        try c.encodeIfPresent(shortlist, forKey: .shortlist)
        if kvCache != .f32 { try kvCache.encode(to: encoder) }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        if let type = try c.decodeIfPresent(String.self, forKey: .quantizeOnLoad) {
            guard let format = BlockFormat.named(type) else {
                throw PivotError.invalidArgument("configuration '\(name)': unknown quantize_on_load type '\(type)'")
            }
            quantizeOnLoad = format
        }
        precision = try c.decodeIfPresent(ActivationPrecision.self, forKey: .precision) ?? .int8
        actBits = try c.decodeIfPresent(Int.self, forKey: .actBits)
        bits = try c.decodeIfPresent(Double.self, forKey: .bits)
        draft = try c.decodeIfPresent(DraftSettings.self, forKey: .draft)
        prefix = try c.decodeIfPresent(PrefixText.self, forKey: .prefix)
        quantize = try c.decodeIfPresent(QuantizeSpec.self, forKey: .quantize)
        shortlist = try c.decodeIfPresent(OutputShortlist.Settings.self, forKey: .shortlist)
        do { kvCache = try KVCacheSpec(from: decoder) } catch PivotError.invalidArgument(let message) {
            throw PivotError.invalidArgument("configuration '\(name)': \(message)")
        }
        try validate()
    }

    public func validate() throws {
        guard !name.isEmpty, !name.contains("/") else { throw PivotError.invalidArgument("configuration name '\(name)' must be non-empty and contain no '/'") }
        if let actBits, !(2...16).contains(actBits) { throw PivotError.invalidArgument("configuration '\(name)': act_bits must be between 2 and 16 (got \(actBits))") }
        do {
            try kvCache.validate()
            try draft?.validate()
            try quantize?.validate()
        } catch PivotError.invalidArgument(let message) {
            throw PivotError.invalidArgument("configuration '\(name)': \(message)")
        }
    }

    /// The model file this configuration names, or an error listing where it looked.
    public func resolvedModelPath() throws -> String {
        guard let path = ModelLocator.resolve(model) else { throw ModelLocator.notFound(model, context: "configuration '\(name)'") }
        return path
    }

    /// Loads the model and applies every runtime option that changes the model itself; the KV cache is
    /// prepared on `pool` (CSKV may calibrate), `log` gets its one-line notes.
    public func load(pool: ThreadPool, log: (String) -> Void = { _ in }, progress: (Int, Int) -> Void = { _, _ in }) throws -> LoadedModel {
        var path = try resolvedModelPath()
        if let quantize { path = try quantize.file(for: path, pool: pool, log: log) }
        let loaded = try LoadedModel.load(path: path, quantizeOnLoad: quantizeOnLoad)
        if let actBits { loaded.transformer.quantizeActivations(bits: actBits) }
        var spec = kvCache
        if kvCacheIsDefault && spec != .f32, let why = AttentionShape(loaded.config).f32OnlyReason {
            log("KV cache: F32 (\(loaded.config.architecture): \(why))")
            spec = .f32
        }
        loaded.kvCache = try spec.prepare(for: loaded, pool: pool, log: log, progress: progress)
        if let shortlist {
            let head = try shortlist.make(for: loaded, pool: pool)
            loaded.transformer.output = head
            loaded.shortlist = head
        }
        return loaded
    }

    /// The `prefix` tokens for `model` (none without a prefix).
    public func prefixTokens(for model: LoadedModel) throws -> [Int] { try prefix?.tokens(for: model).tokens ?? [] }

    /// How this configuration's passes run on `pool`.
    public func execution(pool: ThreadPool) -> Execution { Execution(pool: pool, precision: precision) }
}

/// Lossless drafting settings (`--draft ngram`, `--draft-max`, `--ngram-max`).
public struct DraftSettings: Codable, Sendable, Equatable {
    public enum Method: String, Codable, Sendable, CaseIterable { case ngram }
    public var method: Method
    /// Most tokens drafted per step.
    public var maxDraft: Int
    /// Longest n-gram the drafter matches.
    public var ngramMax: Int

    public init(method: Method = .ngram, maxDraft: Int = 10, ngramMax: Int = 4) {
        self.method = method; self.maxDraft = maxDraft; self.ngramMax = ngramMax
    }

    enum CodingKeys: String, CodingKey { case method, maxDraft = "draft_max", ngramMax = "ngram_max" }

    public func validate() throws {
        guard (1...32).contains(maxDraft) else { throw PivotError.invalidArgument("--draft-max must be between 1 and 32 (got \(maxDraft))") }
        guard (2...8).contains(ngramMax) else { throw PivotError.invalidArgument("--ngram-max must be between 2 and 8 (got \(ngramMax))") }
    }

    public func makeDrafter() -> Drafter {
        switch method { case .ngram: NGramDrafter(maxN: ngramMax) }
    }
}

extension Generator {
    /// A generator for `model` run as `configuration` says (precision, drafting).
    public convenience init(model: LoadedModel, configuration: RunConfiguration, pool: ThreadPool, contextLength: Int? = nil) {
        self.init(model: model, execution: configuration.execution(pool: pool), contextLength: contextLength,
                  drafter: configuration.draft?.makeDrafter(), maxDraft: configuration.draft?.maxDraft ?? 10)
    }
}
