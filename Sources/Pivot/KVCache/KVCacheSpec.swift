import Foundation
import PivotKernels

/// What every cache method's settings own: their checks, their name in tables and their memory.
public protocol KVCacheSettings: Sendable {
    /// One clear message for a setting the cache cannot hold (`headDim`: checks that need the model).
    func validate(headDim: Int?) throws
    /// Short name for tables: "f16", "kivi-2 p4", "cskv-50%".
    var label: String { get }
    /// What the cache holds at `tokens` positions.
    func bytes(atLength tokens: Int, shape: AttentionShape) -> Double
}

/// Exact F32 keys and values: the default (every recorded figure and the float reference use it).
public struct F32Settings: KVCacheSettings, Equatable {
    public func validate(headDim: Int?) throws {}
    public var label: String { "f32" }
    public func bytes(atLength tokens: Int, shape: AttentionShape) -> Double { Double(shape.layers * shape.kvHeads * tokens * 2 * shape.headDim * 4) }
}

/// F16 keys and values: the baseline other engines use and compressed caches are compared to.
public struct F16Settings: KVCacheSettings, Equatable {
    public func validate(headDim: Int?) throws {}
    public var label: String { "f16" }
    public func bytes(atLength tokens: Int, shape: AttentionShape) -> Double { Double(tokens) * KVCacheSpec.f16BytesPerToken(shape) }
}

/// Which KV cache a run uses: one settings type per method. The same flags on every verb that runs
/// the model (`--kv-type`, `--kv-bits`, ...) and the same keys in an eval matrix build it, through
/// `KVCacheParameters`, which refuses a setting the chosen method does not have.
public enum KVCacheSpec: Sendable, Equatable {
    case f32
    case f16
    case kivi(KIVISettings)
    case cskv(CSKVSettings)

    public enum Kind: String, Codable, Sendable, CaseIterable { case f32, f16, kivi, cskv }

    public var kind: Kind {
        switch self { case .f32: .f32; case .f16: .f16; case .kivi: .kivi; case .cskv: .cskv }
    }

    /// The method's own settings, for what every method answers alike.
    public var settings: any KVCacheSettings {
        switch self { case .f32: F32Settings(); case .f16: F16Settings(); case .kivi(let s): s; case .cskv(let s): s }
    }

    public func validate(headDim: Int? = nil) throws { try settings.validate(headDim: headDim) }
    public var label: String { settings.label }
    public func bytes(atLength tokens: Int, shape: AttentionShape) -> Double { settings.bytes(atLength: tokens, shape: shape) }

    /// "KV cache (kivi-2): 2.9 KiB/token at 4096 tokens, 5.12x smaller than F16".
    public func memorySummary(shape: AttentionShape, tokens: Int) -> String {
        if let s = shape.recurrent {
            return "recurrent state: \(formatBytes(Double(s.stateBytes(layers: shape.layers)))) per sequence, whatever its length, "
                + "and up to \(RecurrentStateCache.defaultSnapshotLimit) copies of it to return to (no KV cache)"
        }
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

/// A cache spec made ready for one model: what constructing its caches needs beyond the settings
/// (IntactKV's pivot source, CSKV's factors). Made by `KVCacheSpec.prepare` (Run/), which runs models.
public struct PreparedKVCache {
    public let spec: KVCacheSpec
    /// IntactKV's keys/values for the first positions, for any spec (nil: the model's own everywhere).
    public let pivotSource: PivotSource?
    let lowRankPlan: LowRankPlan?

    public static var f32: PreparedKVCache { PreparedKVCache(spec: .f32) }

    /// `lowRankPlan` only where the spec uses it.
    public init(spec: KVCacheSpec, pivotSource: PivotSource? = nil, lowRankPlan: LowRankPlan? = nil) {
        self.spec = spec; self.pivotSource = pivotSource; self.lowRankPlan = lowRankPlan
    }

    /// A fresh cache; `maxBatch` is the most tokens one forward pass appends. With a pivot source the
    /// cache keeps the source's positions F32 and `PivotedKVCache` fills them.
    public func makeCache(shape: AttentionShape, capacity: Int, maxBatch: Int) -> KVCache {
        let lossless = min(pivotSource?.count ?? 0, capacity)
        let cache: KVCache
        if let layout = shape.recurrent {
            precondition(spec == .f32 && pivotSource == nil, "a state-space model keeps a recurrent state, not keys and values")
            return RecurrentStateCache(layout: layout, layers: shape.layers, capacity: capacity)
        }
        if !shape.isPlainCausal {
            // Sliding windows and soft caps live in the dense cache's attention (`prepare` refuses the others).
            precondition(spec == .f32, "\(spec.label) caches implement plain causal attention only")
            cache = DenseKVCache(shape: shape, capacity: capacity, maxBatch: maxBatch)
            return pivotSource.map { PivotedKVCache(inner: cache, source: $0, shape: shape) } ?? cache
        }
        switch spec {
        case .cskv(let settings):
            guard let lowRankPlan else { fatalError("a CSKV cache needs its factors (KVCacheSpec.prepare loads them)") }
            cache = LowRankKVCache(shape: shape, capacity: capacity, maxBatch: maxBatch, settings: settings, plan: lowRankPlan, pivots: lossless)
        case .f32, .f16, .kivi:
            cache = QuantizedKVCache(shape: shape, capacity: capacity, maxBatch: maxBatch, spec: spec, pivots: lossless)
        }
        return pivotSource.map { PivotedKVCache(inner: cache, source: $0, shape: shape) } ?? cache
    }
}

func formatBytes(_ bytes: Double) -> String {
    bytes >= 1024 ? String(format: "%.1f KiB", bytes / 1024) : String(format: "%.0f B", bytes)
}
