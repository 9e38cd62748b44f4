import Foundation
import PivotKernels

/// Which KV cache a run uses, and its parameters: the same flags on every verb that runs the model
/// (`--kv-type`, `--kv-bits`, `--kv-group`, `--kv-window`, `--pivot`) and the same keys in an eval matrix.
public struct KVCacheSpec: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// Exact F32 keys and values (the default: every recorded figure and the float reference use it).
        case f32
        /// F16 keys and values: the baseline other engines use and compressed caches are compared to.
        case f16
        /// KIVI: keys per channel over groups of tokens, values per token over groups of channels,
        /// asymmetric `bits`-bit codes, the newest `window` tokens in F16.
        case kivi
        /// CSKV: keys (before RoPE) and values as low-rank latent channels per head (`rank` of them on
        /// average), F16 or 4-bit, the newest `window` tokens exact.
        case cskv
    }

    public var kind: Kind
    public var bits: Int
    public var group: Int
    public var window: Int
    /// The first `pivots` positions are kept F32 and never quantized (IntactKV's pivot tokens).
    public var pivots: Int
    /// OTT: per key group, up to this many outlier tokens keep F16 keys in a pool instead of codes.
    public var outlierTokens: Int
    /// OTT: the pool's size per layer and KV head; once full, groups are quantized whole.
    public var outlierPool: Int
    public var outlierCriterion: OutlierCriterion
    /// IntactKV: the pivots' keys/values come from this full-precision model (a file or model name).
    public var intactFrom: String?
    /// Pivots given as text (a system prompt): `pivots` becomes its token count when a model uses the spec.
    public var pivotPrefix: String?
    /// CSKV: latent channels as a fraction of all key/value channels (allocated per head from the
    /// calibration error).
    public var rank: Double
    /// CSKV: latent storage, 16 (F16) or 4 bits.
    public var latentBits: Int
    /// CSKV: the factor file (made from calibration text when missing; default in the cache folder).
    public var factors: String?
    /// CSKV: calibration text for new factors (default: calibration.txt of the shared data).
    public var calibration: String?

    /// The full-precision window when none is given: KIVI's 128, CSKV's 32.
    public static func defaultWindow(_ kind: Kind) -> Int { kind == .cskv ? 32 : 128 }

    /// How a key group's outlier tokens are picked.
    public enum OutlierCriterion: String, Codable, Sendable, CaseIterable {
        /// Smallest L2 norm of the key (the OTT paper's observation: unusually small magnitudes).
        case norm
        /// Largest share of the group's per-channel ranges: the tokens whose removal narrows the
        /// quantization steps the most.
        case range
    }

    public init(kind: Kind = .f32, bits: Int = 2, group: Int = 32, window: Int? = nil, pivots: Int = 0,
                outlierTokens: Int = 0, outlierPool: Int = 64, outlierCriterion: OutlierCriterion = .norm, intactFrom: String? = nil, pivotPrefix: String? = nil,
                rank: Double = 0.5, latentBits: Int = 16, factors: String? = nil, calibration: String? = nil) {
        self.kind = kind; self.bits = bits; self.group = group; self.window = window ?? Self.defaultWindow(kind); self.pivots = pivots
        self.outlierTokens = outlierTokens; self.outlierPool = outlierPool; self.outlierCriterion = outlierCriterion
        self.intactFrom = intactFrom; self.pivotPrefix = pivotPrefix
        self.rank = rank; self.latentBits = latentBits; self.factors = factors; self.calibration = calibration
    }

    public static let f32 = KVCacheSpec()

    enum CodingKeys: String, CodingKey {
        case kind = "kv_type", bits = "kv_bits", group = "kv_group", window = "kv_window", pivots = "pivot"
        case outlierTokens = "outlier_tokens", outlierPool = "outlier_pool", outlierCriterion = "outlier_criterion"
        case intactFrom = "intact_from", pivotPrefix = "pivot_prefix"
        case rank = "kv_rank", latentBits = "kv_latent_bits", factors = "kv_factors", calibration = "kv_calib"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = KVCacheSpec()
        kind = try c.decodeIfPresent(Kind.self, forKey: .kind) ?? defaults.kind
        bits = try c.decodeIfPresent(Int.self, forKey: .bits) ?? defaults.bits
        group = try c.decodeIfPresent(Int.self, forKey: .group) ?? defaults.group
        window = try c.decodeIfPresent(Int.self, forKey: .window) ?? Self.defaultWindow(kind)
        pivots = try c.decodeIfPresent(Int.self, forKey: .pivots) ?? defaults.pivots
        outlierTokens = try c.decodeIfPresent(Int.self, forKey: .outlierTokens) ?? defaults.outlierTokens
        outlierPool = try c.decodeIfPresent(Int.self, forKey: .outlierPool) ?? defaults.outlierPool
        outlierCriterion = try c.decodeIfPresent(OutlierCriterion.self, forKey: .outlierCriterion) ?? defaults.outlierCriterion
        intactFrom = try c.decodeIfPresent(String.self, forKey: .intactFrom)
        pivotPrefix = try c.decodeIfPresent(String.self, forKey: .pivotPrefix)
        rank = try c.decodeIfPresent(Double.self, forKey: .rank) ?? defaults.rank
        latentBits = try c.decodeIfPresent(Int.self, forKey: .latentBits) ?? defaults.latentBits
        factors = try c.decodeIfPresent(String.self, forKey: .factors)
        calibration = try c.decodeIfPresent(String.self, forKey: .calibration)
    }

    /// One clear message for a setting the cache cannot hold.
    public func validate(headDim: Int? = nil) throws {
        if kind == .cskv {
            guard rank > 0, rank <= 1 else { throw PivotError.invalidArgument("--kv-rank must be in (0, 1] (got \(rank))") }
            guard latentBits == 16 || latentBits == 4 else { throw PivotError.invalidArgument("--kv-latent-bits must be 16 or 4 (got \(latentBits))") }
            guard window >= 0 else { throw PivotError.invalidArgument("--kv-window must be >= 0") }
        }
        guard kind == .kivi else {
            if pivots > 0 { throw PivotError.invalidArgument("--pivot keeps tokens out of quantization: it needs --kv-type kivi") }
            if outlierTokens > 0 { throw PivotError.invalidArgument("--outlier-tokens keeps tokens out of quantization: it needs --kv-type kivi") }
            if pivotPrefix != nil { throw PivotError.invalidArgument("--pivot-prefix keeps tokens out of quantization: it needs --kv-type kivi") }
            if intactFrom != nil { throw PivotError.invalidArgument("--intact-from supplies pivot tokens: it needs --kv-type kivi and --pivot N") }
            return
        }
        guard [2, 3, 4, 8].contains(bits) else { throw PivotError.invalidArgument("--kv-bits must be 2, 3, 4 or 8 (got \(bits))") }
        guard group >= 8, group % 8 == 0 else { throw PivotError.invalidArgument("--kv-group must be a positive multiple of 8 (got \(group))") }
        guard window >= 0 else { throw PivotError.invalidArgument("--kv-window must be >= 0") }
        guard pivots >= 0 else { throw PivotError.invalidArgument("--pivot must be >= 0") }
        guard outlierTokens >= 0, outlierTokens < group else { throw PivotError.invalidArgument("--outlier-tokens must be between 0 and the group size − 1") }
        if pivotPrefix != nil && pivots > 0 { throw PivotError.invalidArgument("give --pivot or --pivot-prefix, not both") }
        if intactFrom != nil && pivots == 0 && pivotPrefix == nil { throw PivotError.invalidArgument("--intact-from needs --pivot N (how many first tokens come from it)") }
        guard outlierPool >= 0 else { throw PivotError.invalidArgument("--outlier-pool must be >= 0") }
        if let headDim, headDim % group != 0 {
            throw PivotError.invalidArgument("--kv-group \(group) must divide the head size \(headDim) (values are grouped over channels)")
        }
    }

    /// Short name for tables: "f16", "kivi-2", "kivi-2 g64 r32 p4".
    public var label: String {
        if kind == .cskv {
            var s = "cskv-\(Int((rank * 100).rounded()))%"
            if latentBits != 16 { s += " l\(latentBits)" }
            if window != Self.defaultWindow(kind) { s += " r\(window)" }
            return s
        }
        guard kind == .kivi else { return kind.rawValue }
        var s = "kivi-\(bits)"
        if group != 32 { s += " g\(group)" }
        if window != 128 { s += " r\(window)" }
        if pivots > 0 { s += " p\(pivots)" + (intactFrom == nil ? "" : " intact") }
        if outlierTokens > 0 { s += " o\(outlierTokens)/\(outlierPool)" + (outlierCriterion == .norm ? "" : " \(outlierCriterion.rawValue)") }
        return s
    }

    /// A fresh cache of this kind; `maxBatch` is the most tokens one forward pass appends.
    /// `intact`: where pivot keys/values come from with `intactFrom` (see `LoadedModel.useKVCache`).
    public func makeCache(shape: AttentionShape, capacity: Int, maxBatch: Int, intact: IntactPivots? = nil, lowRank: LowRankPlan? = nil) -> KVCache {
        switch kind {
        case .cskv:
            guard let lowRank else { fatalError("a CSKV cache needs its factors (LoadedModel.useKVCache loads them)") }
            return LowRankKVCache(shape: shape, capacity: capacity, maxBatch: maxBatch, spec: self, plan: lowRank)
        case .f32, .f16, .kivi: return QuantizedKVCache(shape: shape, capacity: capacity, maxBatch: maxBatch, spec: self, intact: intact)
        }
    }

    // MARK: Where positions live (KIVI)

    /// Keys of positions below this are read from codes by a query that sees `count` positions: at least
    /// `window` keys stay F16 and they leave a whole group at a time.
    @inline(__always) public func keyBoundary(count: Int) -> Int {
        guard kind == .kivi else { return 0 }
        let newer = count - pivots
        return newer >= window ? pivots + (newer - window) / group * group : min(pivots, count)
    }

    /// Values of positions below this are read from codes by a query that sees `count` positions.
    @inline(__always) public func valueBoundary(count: Int) -> Int {
        kind == .kivi ? max(min(pivots, count), count - window) : 0
    }

    /// What the cache holds at `tokens` positions: pivots (F32), codes with their F16 scales and
    /// minimums, and the F16 window; the ring's slack beyond the window is batch staging, sized by the
    /// batch like activations, and not counted.
    public func bytes(atLength tokens: Int, shape: AttentionShape) -> Double {
        let d = Double(shape.headDim), heads = Double(shape.layers * shape.kvHeads), n = Double(tokens)
        switch kind {
        case .f32: return heads * n * 2 * d * 4
        case .f16: return heads * n * 2 * d * 2
        case .cskv:
            // Latents of every token (written on arrival), the exact F32 window, and the F32 encoder and
            // decoder rows of every head (fixed, so they weigh less per token as the context grows).
            let vectors = Double(shape.layers * shape.kvHeads * 2)
            let channels = Double(lowRankChannels(shape: shape))
            let latent = latentBits == 16 ? 2 * channels : channels / 2 + 4 * vectors
            return n * latent + heads * Double(min(tokens, window)) * 2 * d * 4 + 2 * channels * d * 4
        case .kivi:
            let format = PackedCodeFormat(bits: bits)
            let pivotCount = min(tokens, pivots)
            let keysFrom = keyBoundary(count: tokens), valuesFrom = valueBoundary(count: tokens)
            var perHead = Double(pivotCount) * 2 * d * 4
            perHead += Double((keysFrom - pivotCount) / group) * (Double(format.bytes(codes: group)) * d + d * 4)
            perHead += Double(valuesFrom - pivotCount) * (Double(format.bytes(codes: shape.headDim)) + d / Double(group) * 4)
            perHead += Double(2 * tokens - keysFrom - valuesFrom) * d * 2
            // OTT: at most one pool entry (F16 key + position) per picked token, bounded by the pool.
            perHead += Double(min(outlierPool, (keysFrom - pivotCount) / group * outlierTokens)) * (d * 2 + 4)
            return heads * perHead
        }
    }

    /// CSKV's latent channels over all heads: `rank` of all channels, in steps of 8 (as allocated).
    public func lowRankChannels(shape: AttentionShape) -> Int {
        LowRankKVFactors.channelBudget(fraction: rank, channels: shape.layers * shape.kvHeads * 2 * shape.headDim)
    }

    /// "KV cache (kivi-2): 2.9 KiB/token at 4096 tokens, 5.12x smaller than F16".
    public func memorySummary(shape: AttentionShape, tokens: Int) -> String {
        let perToken = bytes(atLength: tokens, shape: shape) / Double(max(1, tokens))
        let ratio = Self.f16BytesPerToken(shape) / perToken
        return "KV cache (\(label)): \(formatBytes(perToken))/token at \(tokens) tokens, "
            + (abs(ratio - 1) < 0.005 ? "the size of F16"
               : ratio > 1 ? String(format: "%.2fx smaller than F16", ratio) : String(format: "%.2fx the size of F16", 1 / ratio))
    }

    /// Bytes per token of an F16 cache of this shape: the reference every ratio is taken against.
    public static func f16BytesPerToken(_ shape: AttentionShape) -> Double {
        Double(shape.layers * 2 * shape.kvHeads * shape.headDim * 2)
    }
}

func formatBytes(_ bytes: Double) -> String {
    bytes >= 1024 ? String(format: "%.1f KiB", bytes / 1024) : String(format: "%.0f B", bytes)
}
