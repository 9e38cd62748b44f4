/// The flat form of a cache's settings, as flags and matrix keys give them (nil: not given). The one
/// place that turns it into a typed `KVCacheSpec`: a setting of another method is refused by name,
/// the rest take the method's defaults, and the method's settings validate themselves.
public struct KVCacheParameters: Codable, Sendable, Equatable {
    public var kind: KVCacheSpec.Kind?
    public var bits: Int?, group: Int?, window: Int?
    public var pivots: Int?, pivotPrefix: String?, intactFrom: String?
    public var outlierTokens: Int?, outlierPool: Int?, outlierCriterion: KIVISettings.OutlierCriterion?
    public var rank: Double?, latentBits: Int?, factors: String?, calibration: String?
    public var trainSteps: Int?, trainLearningRate: Double?

    public init(kind: KVCacheSpec.Kind? = nil, bits: Int? = nil, group: Int? = nil, window: Int? = nil, pivots: Int? = nil,
                pivotPrefix: String? = nil, intactFrom: String? = nil, outlierTokens: Int? = nil, outlierPool: Int? = nil,
                outlierCriterion: KIVISettings.OutlierCriterion? = nil, rank: Double? = nil, latentBits: Int? = nil,
                factors: String? = nil, calibration: String? = nil, trainSteps: Int? = nil, trainLearningRate: Double? = nil) {
        self.kind = kind; self.bits = bits; self.group = group; self.window = window; self.pivots = pivots
        self.pivotPrefix = pivotPrefix; self.intactFrom = intactFrom; self.outlierTokens = outlierTokens; self.outlierPool = outlierPool
        self.outlierCriterion = outlierCriterion; self.rank = rank; self.latentBits = latentBits; self.factors = factors; self.calibration = calibration
        self.trainSteps = trainSteps; self.trainLearningRate = trainLearningRate
    }

    /// Matrix keys; the CLI flags are the same names with `--` and dashes (`kv_bits` is `--kv-bits`).
    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind = "kv_type", bits = "kv_bits", group = "kv_group", window = "kv_window", pivots = "pivot"
        case outlierTokens = "outlier_tokens", outlierPool = "outlier_pool", outlierCriterion = "outlier_criterion"
        case intactFrom = "intact_from", pivotPrefix = "pivot_prefix"
        case rank = "kv_rank", latentBits = "kv_latent_bits", factors = "kv_factors", calibration = "kv_calib"
        case trainSteps = "kv_train_steps", trainLearningRate = "kv_train_lr"

        var flag: String { "--" + rawValue.replacingOccurrences(of: "_", with: "-") }
    }

    /// The keys each method takes.
    private static func settings(of kind: KVCacheSpec.Kind) -> Set<CodingKeys> {
        switch kind {
        case .f32, .f16: []
        case .kivi: [.bits, .group, .window, .pivots, .pivotPrefix, .intactFrom, .outlierTokens, .outlierPool, .outlierCriterion]
        case .cskv: [.rank, .latentBits, .window, .factors, .calibration, .trainSteps, .trainLearningRate]
        }
    }

    /// The settings given, by key.
    private var given: [CodingKeys] {
        let present: [(CodingKeys, Bool)] = [(.bits, bits != nil), (.group, group != nil), (.window, window != nil), (.pivots, pivots != nil),
            (.pivotPrefix, pivotPrefix != nil), (.intactFrom, intactFrom != nil), (.outlierTokens, outlierTokens != nil),
            (.outlierPool, outlierPool != nil), (.outlierCriterion, outlierCriterion != nil), (.rank, rank != nil),
            (.latentBits, latentBits != nil), (.factors, factors != nil), (.calibration, calibration != nil),
            (.trainSteps, trainSteps != nil), (.trainLearningRate, trainLearningRate != nil)]
        return present.filter(\.1).map(\.0)
    }

    /// The typed spec, validated.
    public func spec() throws -> KVCacheSpec {
        let kind = self.kind ?? .f32
        if let foreign = given.first(where: { !Self.settings(of: kind).contains($0) }) {
            let owner = KVCacheSpec.Kind.allCases.first { Self.settings(of: $0).contains(foreign) }!
            throw PivotError.invalidArgument("\(foreign.flag) is a setting of --kv-type \(owner.rawValue) (this run uses \(kind.rawValue))")
        }
        let spec: KVCacheSpec = switch kind {
        case .f32: .f32
        case .f16: .f16
        case .kivi:
            .kivi(KIVISettings(bits: bits ?? 2, group: group ?? 32, window: window ?? KIVISettings.defaultWindow, pivots: pivots ?? 0,
                               pivotPrefix: pivotPrefix, intactFrom: intactFrom, outlierTokens: outlierTokens ?? 0,
                               outlierPool: outlierPool ?? 64, outlierCriterion: outlierCriterion ?? .norm))
        case .cskv:
            .cskv(CSKVSettings(window: window ?? CSKVSettings.defaultWindow, rank: rank ?? 0.5, latentBits: latentBits ?? 16,
                               factors: factors, calibration: calibration, trainSteps: trainSteps ?? 0,
                               trainLearningRate: trainLearningRate ?? CSKVSettings.defaultTrainLearningRate))
        }
        try spec.validate()
        return spec
    }

    /// Every setting of `spec`, written out (so a stored matrix spec says what ran).
    public init(_ spec: KVCacheSpec) {
        switch spec {
        case .f32: self.init(kind: .f32)
        case .f16: self.init(kind: .f16)
        case .kivi(let s):
            self.init(kind: .kivi, bits: s.bits, group: s.group, window: s.window, pivots: s.pivots, pivotPrefix: s.pivotPrefix,
                      intactFrom: s.intactFrom, outlierTokens: s.outlierTokens, outlierPool: s.outlierPool, outlierCriterion: s.outlierCriterion)
        case .cskv(let s):
            self.init(kind: .cskv, window: s.window, rank: s.rank, latentBits: s.latentBits, factors: s.factors, calibration: s.calibration,
                      trainSteps: s.trainSteps, trainLearningRate: s.trainLearningRate)
        }
    }
}

extension KVCacheSpec: Codable {
    /// The flat matrix keys (`kv_type`, `kv_bits`, ...) beside a configuration's other keys.
    public init(from decoder: Decoder) throws {
        self = try KVCacheParameters(from: decoder).spec()
    }

    public func encode(to encoder: Encoder) throws { try KVCacheParameters(self).encode(to: encoder) }
}
