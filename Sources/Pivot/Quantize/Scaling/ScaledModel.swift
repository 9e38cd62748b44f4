import Foundation
import PivotKernels

/// A model with channel scales folded in: the rewritten float tensors, and per projection the Hessian
/// of its (scaled) input, which the rounding that follows weighs errors with.
public struct ScaledModel {
    let tensors: FloatTensors
    public let hessians: [String: InputHessian]
    /// One line per site kind: what the search chose and what it bought.
    public let summary: [String]
    /// What attn_v's rows are now divided by (the source file's own scales included), for the metadata.
    public let valueScales: ValueScales

    /// The whole model with the folded tensors in F32 and every other tensor as in the source: the
    /// float model the quantizer sees, which computes what the source computes.
    public func writeFloat(to path: String) throws {
        let source = tensors.source, views = tensors.views()
        let list = source.tensorOrder.map { name -> GGUFWriter.Tensor in
            let t = views[name] ?? source.tensors[name]!
            return .init(name: name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
        }
        let metadata = source.metadataEntries.filter { $0.key != ValueScales.metadataKey } + [valueScales.metadata]
        try withExtendedLifetime((source, views)) { try GGUFWriter.write(metadata: metadata, tensors: list, to: path) }
    }
}

extension ChannelScaling {
    /// Folds scales into `source` at every site of every layer. `hessians` (per projection, with activation
    /// statistics) come from the float model; `formats` are the types the projections will be written in.
    public func apply(source: GGUFFile, hessians: [String: InputHessian], formats: [String: BlockFormat], pool: ThreadPool,
               progress: (Int, Int) -> Void = { _, _ in }) throws -> ScaledModel {
        let config = try ModelConfig(gguf: source)
        try config.requireLlamaBlock(for: "AWQ/SmoothQuant scaling")
        let store = FloatTensors(source: source)
        var current = hessians
        // The source's own value scales (a file scaled before) compound with this run's.
        var valueFactors = ValueScales(gguf: source, config: config)?.factors ?? [Float](repeating: 1, count: config.layerCount * config.kvWidth)
        var alphas: [String: [Double]] = [:], gains: [String: [Double]] = [:]
        var clipGains: [Double] = []
        var spreads: [String: [(before: Double, after: Double)]] = [:]
        for layer in 0..<config.layerCount {
            let sites = ScalingSite.sites(layer: layer, config: config)
            for site in sites {
                guard let h = current[site.input], h.hasActivationStatistics else {
                    throw PivotError.invalidArgument("\(name): no activation statistics for '\(site.input)' (calibration cache from an older Pivot? delete it)")
                }
                let scales: [Float]
                let kind = site.consumers.map { TensorName($0).role!.rawValue }.joined(separator: "/")
                switch self {
                case .awq:
                    let mean = h.meanMatrix(), importance = h.meanSquares
                    let consumers = try site.consumers.map { name -> AWQSearch.Consumer in
                        guard let format = formats[name] else { throw PivotError.invalidArgument("\(self.name): '\(name)' is not quantized to a block type") }
                        let t = try store.tensor(name)
                        return AWQSearch.Consumer(weights: t.pointer, rows: t.rows, format: format)
                    }
                    let result = mean.withUnsafeBufferPointer {
                        AWQSearch.scales(consumers: consumers, columns: h.columns, statistic: site.gather(h.meanAbsolute, max: false),
                                         expand: site.expand, hessian: $0.baseAddress!, importance: importance, pool: pool)
                    }
                    scales = result.scales
                    alphas[kind, default: []].append(result.alpha)
                    gains[kind, default: []].append(result.unscaledError > 0 ? result.error / result.unscaledError : 1)
                case .smooth(let alpha):
                    var weightMaxima = [Float](repeating: 0, count: h.columns)
                    for name in site.consumers {
                        let t = try store.tensor(name)
                        for r in 0..<t.rows { for j in 0..<t.columns { weightMaxima[j] = max(weightMaxima[j], abs(t.pointer[r * t.columns + j])) } }
                    }
                    let activations = site.gather(h.absoluteMaxima, max: true), weights = site.gather(weightMaxima, max: true)
                    // Clamped to [1e-3, 1e3] (the reference: ≥ 1e-5) so a channel dead on the calibration text cannot
                    // blow its producer's row past F16.
                    scales = zip(activations, weights).map { x, w in
                        min(max(Float(pow(Double(max(x, 1e-5)), alpha) / pow(Double(max(w, 1e-5)), 1 - alpha)), 1e-3), 1e3)
                    }
                    alphas[kind, default: []].append(alpha)
                    spreads[kind, default: []].append((Self.spread(activations), Self.spread(zip(activations, scales).map { $0 / $1 })))
                }
                try fold(scales, at: site, into: store)
                if case .rows(let weight, _) = site.producer, weight == ProjectionRole.value.tensorName(layer: layer) {
                    for c in 0..<config.kvWidth { valueFactors[layer * config.kvWidth + c] *= scales[c] }
                }
                let scaledHessian = h.scaled(by: site.expand(scales))
                for (name, known) in current where known === h { current[name] = scaledHessian }
            }
            if case .awq(clip: true) = self {
                for site in sites {
                    let h = current[site.input]!, mean = h.meanMatrix(), importance = h.meanSquares
                    for name in site.clippable {
                        guard let format = formats[name] else { continue }
                        let t = try store.tensor(name)
                        let (before, after) = mean.withUnsafeBufferPointer {
                            AWQSearch.clip(t.pointer, rows: t.rows, columns: t.columns, format: format, hessian: $0.baseAddress!,
                                           importance: importance, pool: pool)
                        }
                        clipGains.append(before > 0 ? after / before : 1)
                    }
                }
            }
            progress(layer + 1, config.layerCount)
        }
        func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
        var summary = alphas.keys.sorted().map { kind -> String in
            if let s = spreads[kind] {
                return String(format: "%@ %@: largest channel max|x| / median %.1f → %.1f (mean over layers)", name, kind,
                              mean(s.map(\.before)), mean(s.map(\.after)))
            }
            let a = alphas[kind]!
            return String(format: "%@ %@: α mean %.2f (min %.2f, max %.2f), output error %.3f of unscaled (mean over layers)",
                          name, kind, mean(a), a.min()!, a.max()!, mean(gains[kind] ?? [1]))
        }
        if !clipGains.isEmpty {
            summary.append(String(format: "awq clipping: block output error %.3f of unclipped (mean over tensors)", mean(clipGains)))
        }
        return ScaledModel(tensors: store, hessians: current, summary: summary,
                           valueScales: ValueScales(layers: config.layerCount, kvWidth: config.kvWidth, factors: valueFactors))
    }

    /// Largest over median of per-channel activation maxima: how far the outlier channels stick out.
    static func spread(_ maxima: [Float]) -> Double {
        let sorted = maxima.sorted()
        return Double(sorted.last ?? 0) / Double(max(sorted[sorted.count / 2], 1e-12))
    }

    /// Divides the producer's output channels by `scales` and multiplies the consumers' columns by them.
    private func fold(_ scales: [Float], at site: ScalingSite, into store: FloatTensors) throws {
        switch site.producer {
        case .norm(let norm):
            try store.divideRows(norm, by: scales)
        case .rows(let weight, let bias):
            try store.divideRows(weight, by: scales)
            if store.has(bias) { try store.divideRows(bias, by: scales) }
        }
        let columnScales = site.expand(scales)
        for name in site.consumers { try store.scaleColumns(name, by: columnScales) }
    }
}
