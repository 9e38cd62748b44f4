import PivotKernels

/// KIVI's settings (keys per channel over groups of tokens, values per token over groups of channels,
/// asymmetric `bits`-bit codes, the newest `window` tokens in F16), with IntactKV's pivots and OTT's
/// outlier tokens, which only a quantized cache can keep out of quantization.
public struct KIVISettings: KVCacheSettings, Equatable {
    public var bits: Int
    public var group: Int
    public var window: Int
    /// The first `pivots` positions are kept F32 and never quantized (IntactKV's pivot tokens).
    public var pivots: Int
    /// Pivots given as text (a system prompt): `pivots` becomes its token count when the cache is prepared.
    public var pivotPrefix: String?
    /// IntactKV: the pivots' keys/values come from this full-precision model (a file or model name).
    public var intactFrom: String?
    /// OTT: per key group, up to this many outlier tokens keep F16 keys in a pool instead of codes.
    public var outlierTokens: Int
    /// OTT: the pool's size per layer and KV head; once full, groups are quantized whole.
    public var outlierPool: Int
    public var outlierCriterion: OutlierCriterion

    public static let defaultWindow = 128

    /// How a key group's outlier tokens are picked.
    public enum OutlierCriterion: String, Codable, Sendable, CaseIterable {
        /// Smallest L2 norm of the key (the OTT paper's observation: unusually small magnitudes).
        case norm
        /// Largest share of the group's per-channel ranges: the tokens whose removal narrows the
        /// quantization steps the most.
        case range
    }

    public init(bits: Int = 2, group: Int = 32, window: Int = KIVISettings.defaultWindow, pivots: Int = 0, pivotPrefix: String? = nil,
                intactFrom: String? = nil, outlierTokens: Int = 0, outlierPool: Int = 64, outlierCriterion: OutlierCriterion = .norm) {
        self.bits = bits; self.group = group; self.window = window; self.pivots = pivots; self.pivotPrefix = pivotPrefix
        self.intactFrom = intactFrom; self.outlierTokens = outlierTokens; self.outlierPool = outlierPool; self.outlierCriterion = outlierCriterion
    }

    public func validate(headDim: Int? = nil) throws {
        guard [2, 3, 4, 8].contains(bits) else { throw PivotError.invalidArgument("--kv-bits must be 2, 3, 4 or 8 (got \(bits))") }
        guard group >= 8, group % 8 == 0 else { throw PivotError.invalidArgument("--kv-group must be a positive multiple of 8 (got \(group))") }
        guard window >= 0 else { throw PivotError.invalidArgument("--kv-window must be >= 0 (got \(window))") }
        guard pivots >= 0 else { throw PivotError.invalidArgument("--pivot must be >= 0 (got \(pivots))") }
        guard outlierTokens >= 0, outlierTokens < group else { throw PivotError.invalidArgument("--outlier-tokens must be between 0 and the group size − 1 (got \(outlierTokens))") }
        if pivotPrefix != nil && pivots > 0 { throw PivotError.invalidArgument("give --pivot or --pivot-prefix, not both") }
        if intactFrom != nil && pivots == 0 && pivotPrefix == nil { throw PivotError.invalidArgument("--intact-from needs --pivot N (how many first tokens come from it)") }
        guard outlierPool >= 0 else { throw PivotError.invalidArgument("--outlier-pool must be >= 0 (got \(outlierPool))") }
        if let headDim, headDim % group != 0 {
            throw PivotError.invalidArgument("--kv-group \(group) must divide the head size \(headDim) (values are grouped over channels)")
        }
    }

    /// "kivi-2", "kivi-2 g64 r32 p4 intact o1/64".
    public var label: String {
        var s = "kivi-\(bits)"
        if group != 32 { s += " g\(group)" }
        if window != Self.defaultWindow { s += " r\(window)" }
        if pivots > 0 { s += " p\(pivots)" + (intactFrom == nil ? "" : " intact") }
        if outlierTokens > 0 { s += " o\(outlierTokens)/\(outlierPool)" + (outlierCriterion == .norm ? "" : " \(outlierCriterion.rawValue)") }
        return s
    }

    // MARK: Where positions live

    /// Keys of positions below this are read from codes by a query that sees `count` positions: at least
    /// `window` keys stay F16 and they leave a whole group at a time.
    @inline(__always) public func keyBoundary(count: Int) -> Int {
        let newer = count - pivots
        return newer >= window ? pivots + (newer - window) / group * group : min(pivots, count)
    }

    /// Values of positions below this are read from codes by a query that sees `count` positions.
    @inline(__always) public func valueBoundary(count: Int) -> Int { max(min(pivots, count), count - window) }

    /// Pivots (F32), codes with their F16 scales and minimums, and the F16 window; the ring's slack
    /// beyond the window is batch staging, sized by the batch like activations, and not counted.
    public func bytes(atLength tokens: Int, shape: AttentionShape) -> Double {
        let d = Double(shape.headDim), heads = Double(shape.layers * shape.kvHeads)
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
