import PivotKernels

/// The per-channel factors a file's attn_v rows were divided by (AWQ's and SmoothQuant's v→o site),
/// kept in its metadata (`pivot.value_scales`: layers × KV width f32, which llama.cpp ignores). The
/// file computes what its source computes, but the values its KV cache holds are V / s; keys and values
/// made by another model — IntactKV's pivots — are brought into that space with `convert`.
public struct ValueScales: Sendable, Equatable {
    public static let metadataKey = "pivot.value_scales"
    public let layers: Int
    public let kvWidth: Int
    /// Layer-major: factor of channel c of layer l at l·kvWidth + c.
    public let factors: [Float]

    public init(layers: Int, kvWidth: Int, factors: [Float]) {
        precondition(factors.count == layers * kvWidth)
        self.layers = layers; self.kvWidth = kvWidth; self.factors = factors
    }

    /// The scales stored in `gguf` (nil: none, V as the source computes it).
    public init?(gguf: GGUFFile, config: ModelConfig) {
        guard let items = gguf.metadata[Self.metadataKey]?.array else { return nil }
        let values = items.compactMap { $0.double.map(Float.init) }
        guard values.count == items.count, values.count == config.layerCount * config.kvWidth else { return nil }
        self.init(layers: config.layerCount, kvWidth: config.kvWidth, factors: values)
    }

    /// The scales of the model file at `path` (nil for folders and files without them).
    public static func read(path: String) -> ValueScales? {
        guard path.hasSuffix(".gguf"), let gguf = try? GGUFFile(path: path), let config = try? ModelConfig(gguf: gguf) else { return nil }
        return ValueScales(gguf: gguf, config: config)
    }

    var metadata: GGUFMetadataEntry {
        GGUFMetadataEntry(Self.metadataKey, .array(factors.map { .float(Double($0)) }), type: 9, itemType: 6)
    }

    /// Per layer, the factors taking values made by a model with `source` scales into a model with
    /// `target` scales (source / target); nil when both are the same.
    public static func conversion(from source: ValueScales?, to target: ValueScales?) -> [[Float]]? {
        guard source != target, let shape = source ?? target else { return nil }
        return (0..<shape.layers).map { l in
            (0..<shape.kvWidth).map { c in
                (source?.factors[l * shape.kvWidth + c] ?? 1) / (target?.factors[l * shape.kvWidth + c] ?? 1)
            }
        }
    }
}

extension IntactPrefix {
    /// The values, computed by a model with `source` scales, brought into the space of a model with `target`
    /// scales (an AWQ / SmoothQuant file holds V / s).
    public mutating func convertValues(from source: ValueScales?, to target: ValueScales?) {
        guard let conversion = ValueScales.conversion(from: source, to: target) else { return }
        for (layer, factors) in conversion.enumerated() {
            for i in values[layer].indices { values[layer][i] *= factors[i % factors.count] }
        }
    }
}
