import Foundation
import PivotKernels

/// A model file plus the runtime options that change its numbers: one row of an evaluation matrix.
public struct RunConfiguration: Codable, Sendable, Equatable {
    public var name: String
    /// A .gguf file, a HuggingFace folder or a bare file name looked up like `-m`; nil: the default model.
    public var model: String?
    public var precision: ActivationPrecision
    /// Simulated per-token activation bits for every block projection (nil: none).
    public var actBits: Int?
    /// The x value of this row in plots (e.g. weight bits); nil: measured bits per weight.
    public var bits: Double?
    /// The KV cache (in a matrix spec: `kv_type`, `kv_bits`, `kv_group`, `kv_window`, `pivot` beside the other keys).
    public var kvCache: KVCacheSpec

    public init(name: String, model: String? = nil, precision: ActivationPrecision = .int8, actBits: Int? = nil, bits: Double? = nil,
                kvCache: KVCacheSpec = .f32) {
        self.name = name; self.model = model; self.precision = precision; self.actBits = actBits; self.bits = bits
        self.kvCache = kvCache
    }

    enum CodingKeys: String, CodingKey { case name, model, precision, actBits = "act_bits", bits }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encode(precision, forKey: .precision)
        try c.encodeIfPresent(actBits, forKey: .actBits)
        try c.encodeIfPresent(bits, forKey: .bits)
        if kvCache != .f32 { try kvCache.encode(to: encoder) }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        precision = try c.decodeIfPresent(ActivationPrecision.self, forKey: .precision) ?? .int8
        actBits = try c.decodeIfPresent(Int.self, forKey: .actBits)
        bits = try c.decodeIfPresent(Double.self, forKey: .bits)
        kvCache = try KVCacheSpec(from: decoder)
        try validate()
    }

    public func validate() throws {
        guard !name.isEmpty, !name.contains("/") else { throw PivotError.invalidArgument("configuration name '\(name)' must be non-empty and contain no '/'") }
        if let actBits, !(2...16).contains(actBits) { throw PivotError.invalidArgument("configuration '\(name)': act_bits must be between 2 and 16") }
        do { try kvCache.validate() } catch PivotError.invalidArgument(let message) {
            throw PivotError.invalidArgument("configuration '\(name)': \(message)")
        }
    }

    /// Loads the model and applies the runtime options that change the model itself.
    public func load() throws -> LoadedModel {
        guard let path = ModelLocator.resolve(model) else {
            throw PivotError.fileNotFound((model ?? ModelLocator.defaultModelName) + " (configuration '\(name)')")
        }
        let loaded = try LoadedModel.load(path: path)
        if let actBits { loaded.transformer.quantizeActivations(bits: actBits) }
        try loaded.useKVCache(kvCache)
        return loaded
    }
}

extension ActivationPrecision: Codable {}

/// What a configuration costs: weight size, cache size, memory and speed.
public struct Efficiency: Codable, Sendable {
    public var weightBytes: Int
    public var bitsPerWeight: Double
    public var kvBytesPerToken: Double
    public var peakRSSMiB: Double
    public var prefillTokensPerSecond: Double
    public var decodeTokensPerSecond: Double
    /// The context at which KV bytes per token are counted (a window or pivots weigh less the longer it is).
    public static let kvReferenceTokens = 4096

    /// A short speed probe: one pass over `prompt` random tokens, then `decode` single-token steps.
    public static func measure(model: LoadedModel, pool: ThreadPool, precision: ActivationPrecision,
                               prompt: Int = 256, decode: Int = 64) -> Efficiency {
        let cache = model.makeCache(capacity: prompt + decode + 1, maxBatch: prompt)
        let state = ForwardState(config: model.config, maxTokens: prompt, allLogits: false, pool: pool, precision: precision)
        var rng = SplitMix64(seed: 7)
        let vocabulary = UInt64(model.tokenizer.vocabularySize)
        let tokens = (0..<(prompt + decode)).map { _ in Int(rng.next() % vocabulary) }
        model.transformer.forward(Array(tokens[0..<32]), cache: cache, state: state)  // warm-up
        cache.truncate(to: 0)
        var start = DispatchTime.now().uptimeNanoseconds
        model.transformer.forward(Array(tokens[0..<prompt]), cache: cache, state: state)
        let prefill = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        start = DispatchTime.now().uptimeNanoseconds
        for t in tokens[prompt...] { model.transformer.forward(token: t, cache: cache, state: state) }
        let decodeSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Efficiency(weightBytes: model.weightBytes,
                          bitsPerWeight: Double(model.weightBytes * 8) / Double(model.parameterCount),
                          kvBytesPerToken: model.kvCache.bytes(atLength: Self.kvReferenceTokens, shape: AttentionShape(model.config))
                              / Double(Self.kvReferenceTokens), peakRSSMiB: peakResidentMiB(),
                          prefillTokensPerSecond: Double(prompt) / prefill, decodeTokensPerSecond: Double(decode) / decodeSeconds)
    }
}

/// Peak resident set size of this process (Linux reports kilobytes, macOS bytes).
public func peakResidentMiB() -> Double {
    var usage = rusage()
    #if os(Linux)
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024
    #else
    getrusage(RUSAGE_SELF, &usage)
    return Double(usage.ru_maxrss) / 1_048_576
    #endif
}
