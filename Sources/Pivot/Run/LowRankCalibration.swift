import Foundation
import PivotKernels

/// An exact F32 cache that also sums, per layer and KV head, the outer products of the keys it is given
/// (turned back to their pre-RoPE form) and of the values: the second moments CSKV's factors come from.
final class SecondMomentRecorder: KVCache {
    let inner: DenseKVCache
    let rope: RotaryGeometry
    let table: RoPETable
    /// Per vector (layer·kvHeads + head)·2 + kind: Σ x xᵀ, row-major headDim².
    var moments: [[Double]]
    /// Per (layer·kvHeads + head): Σ q² per dimension over the group's query heads and every query.
    var queryEnergy: [[Double]]
    private let batch: FloatBuffer, work: FloatBuffer
    private(set) var tokens = 0

    init(shape: AttentionShape, capacity: Int, rope: RotaryGeometry) {
        inner = DenseKVCache(shape: shape, capacity: capacity, maxBatch: capacity)
        self.rope = rope
        table = rope.makeTable(positions: capacity)
        let d = shape.headDim
        moments = Array(repeating: Array(repeating: 0, count: d * d), count: shape.layers * shape.kvHeads * 2)
        queryEnergy = Array(repeating: Array(repeating: 0, count: d), count: shape.layers * shape.kvHeads)
        batch = FloatBuffer(count: d * d)
        work = FloatBuffer(count: 2 * d)
    }

    var length: Int { inner.length }
    var capacity: Int { inner.capacity }
    var bytesPerToken: Double { inner.bytesPerToken }

    func append(layer: Int, keys: Matrix, values: Matrix) {
        inner.append(layer: layer, keys: keys, values: values)
        let shape = inner.shape, d = shape.headDim, x = work.pointer, rotation = work.pointer + d
        if layer == 0 { tokens += keys.rows }
        for h in 0..<shape.kvHeads {
            for kind in 0..<2 {
                // Summed in F32 over one pass, then added to the F64 total.
                batch.pointer.update(repeating: 0, count: d * d)
                for t in 0..<keys.rows {
                    x.update(from: (kind == 0 ? keys : values).row(t) + h * d, count: d)
                    if kind == 0 && rope.layers[layer] {
                        table.rotate(x, position: length + t, interleaved: rope.interleaved, inverse: true, scratch: rotation)
                    }
                    for i in 0..<d { axpyF32(x[i], x, batch.pointer + i * d, count: d) }
                }
                let v = (layer * shape.kvHeads + h) * 2 + kind
                moments[v].withUnsafeMutableBufferPointer { m in
                    for i in 0..<(d * d) { m[i] += Double(batch.pointer[i]) }
                }
            }
        }
    }

    func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) {
        inner.attend(layer: layer, queries: queries, into: out, pool: pool)
        let shape = inner.shape, d = shape.headDim, group = shape.heads / shape.kvHeads
        for t in 0..<queries.rows {
            for h in 0..<shape.heads {
                let q = queries.row(t) + h * d
                for i in 0..<d { queryEnergy[layer * shape.kvHeads + h / group][i] += Double(q[i] * q[i]) }
            }
        }
    }
    func advance(by tokens: Int) { inner.advance(by: tokens) }
    func truncate(to length: Int) { inner.truncate(to: length) }
}

extension LowRankKVFactors {
    /// Runs `model` over `tokens` in chunks of `chunkLength` (each from an empty cache) and factors the
    /// keys' and values' second moments.
    public static func calibrate(model: LoadedModel, tokens: [Int], chunkLength: Int = 512, chunks limit: Int = 32,
                                 pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws -> LowRankKVFactors {
        let chunks = min(limit, tokens.count / chunkLength)
        guard chunks > 0 else {
            throw PivotError.invalidArgument("the calibration text has \(tokens.count) tokens, fewer than one chunk of \(chunkLength)")
        }
        let c = model.config
        let recorder = SecondMomentRecorder(shape: AttentionShape(c), capacity: chunkLength, rope: RotaryGeometry(c))
        let state = ForwardState(config: c, maxTokens: chunkLength, allLogits: false, execution: Execution(pool: pool))
        for chunk in 0..<chunks {
            recorder.truncate(to: 0)
            model.transformer.forward(Array(tokens[(chunk * chunkLength)..<((chunk + 1) * chunkLength)]), cache: recorder, state: state)
            progress(chunk + 1, chunks)
        }
        let metrics = errorMetrics(model: model, queryEnergy: recorder.queryEnergy, context: state.context)
        return LowRankKVFactors(secondMoments: recorder.moments, metrics: metrics, layers: c.layerCount, kvHeads: c.kvHeadCount,
                                headDim: c.headDim, tokens: recorder.tokens)
    }

    /// Per vector, the metric its error is measured in (see `LowRankKVFactors`): keys, the queries' mean
    /// energy per rotary pair on the diagonal; values, (Σ_h W_o,hᵀ W_o,h)^½ over the group's query heads.
    /// Both scaled to a mean eigenvalue of 1.
    static func errorMetrics(model: LoadedModel, queryEnergy: [[Double]], context: ComputeContext) -> [[Double]] {
        let c = model.config, d = c.headDim, group = c.headCount / c.kvHeadCount, half = d / 2
        let units = FloatBuffer(count: d * c.queryWidth), columns = FloatBuffer(count: d * c.hiddenSize)
        var metrics: [[Double]] = []
        for layer in 0..<c.layerCount {
            for g in 0..<c.kvHeadCount {
                // Keys: a pair's weight is its two dimensions' query energy.
                let energy = queryEnergy[layer * c.kvHeadCount + g]
                var pair = [Double](repeating: 0, count: d)
                for i in 0..<half {
                    let (a, b) = c.ropeInterleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                    pair[a] = energy[a] + energy[b]; pair[b] = pair[a]
                }
                let mean = max(pair.reduce(0, +) / Double(d), 1e-30)
                var keyMetric = [Double](repeating: 0, count: d * d)
                for i in 0..<d { keyMetric[i * d + i] = max(pair[i] / mean, 1e-6).squareRoot() }
                // Values: W_o's columns for each query head of the group, from unit inputs.
                var gram = [Double](repeating: 0, count: d * d)
                for h in (g * group)..<((g + 1) * group) {
                    units.pointer.update(repeating: 0, count: d * c.queryWidth)
                    for i in 0..<d { units.pointer[i * c.queryWidth + h * d + i] = 1 }
                    model.transformer.layers[layer].attentionOutput.forward(units.matrix(rows: d, columns: c.queryWidth),
                                                                            into: columns.matrix(rows: d, columns: c.hiddenSize), context: context)
                    for i in 0..<d {
                        for j in i..<d {
                            let dot = Double(dotF32(columns.pointer + i * c.hiddenSize, columns.pointer + j * c.hiddenSize, count: c.hiddenSize))
                            gram[i * d + j] += dot; if i != j { gram[j * d + i] += dot }
                        }
                    }
                }
                let trace = max((0..<d).reduce(0.0) { $0 + gram[$1 * d + $1] } / Double(d), 1e-30)
                metrics.append(keyMetric)
                metrics.append(symmetricPower(gram.map { $0 / trace }, n: d, power: 0.5))
            }
        }
        return metrics
    }

    /// Where factors of the model at `modelPath` are kept unless `--kv-factors` says: the cache folder,
    /// keyed by the model file's name and size.
    public static func defaultPath(modelPath: String) -> String {
        let size = ((try? FileManager.default.attributesOfItem(atPath: modelPath))?[.size] as? Int) ?? 0
        let name = (modelPath as NSString).lastPathComponent
        return ModelLocator.cacheDirectory + "/cskv/\(name)-\(size).v2.safetensors"
    }
}

extension ModelLocator {
    /// The default calibration text: `calibration.txt` beside the evaluation data folders.
    public static var calibrationText: String? {
        for dir in dataDirectories {
            for candidate in [(dir as NSString).appendingPathComponent("calibration.txt"),
                              ((dir as NSString).deletingLastPathComponent as NSString).appendingPathComponent("calibration.txt")]
            where FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return nil
    }
}
