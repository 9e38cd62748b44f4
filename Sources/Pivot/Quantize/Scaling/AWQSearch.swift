import Foundation
import PivotKernels

/// AWQ's two searches on one equivalence. Output errors are measured through the input's second
/// moment H = E[x·xᵀ]: the mean over calibration tokens of ‖ΔW·x‖² is tr(ΔW·H·ΔWᵀ), exact for those
/// tokens without keeping them (AWQ's reference keeps a sample of the tokens and runs the layer).
enum AWQSearch {
    /// A projection reading the scaled channels, quantized as it will be in the file.
    struct Consumer {
        let weights: UnsafePointer<Float>
        let rows: Int
        let format: BlockFormat
    }

    struct ScaleResult {
        var scales: [Float]
        var alpha: Double
        /// Summed output error of the consumers at the chosen α and at α = 0 (no scaling).
        var error: Double
        var unscaledError: Double
    }

    static let grid = 20

    /// The scales s = stat^α / √(max s · min s) for α = 0, 1/20 … 19/20 (AWQ's grid) with the least summed
    /// output error of `consumers` after each is quantized to its format with `importance` (E[x²]) weighting,
    /// both seen through the scaling. `expand` spreads per-channel values over the consumers' columns.
    static func scales(consumers: [Consumer], columns: Int, statistic: [Float], expand: ([Float]) -> [Float],
                       hessian: UnsafePointer<Float>, importance: [Float], pool: ThreadPool) -> ScaleResult {
        let largest = consumers.map(\.rows).max() ?? 0
        let scaled = FloatBuffer(count: largest * columns), restored = FloatBuffer(count: largest * columns)
        let product = FloatBuffer(count: largest * columns)
        var best = ScaleResult(scales: [Float](repeating: 1, count: statistic.count), alpha: 0, error: .infinity, unscaledError: 0)
        for step in 0..<grid {
            let alpha = Double(step) / Double(grid)
            var s = statistic.map { Swift.max(Float(pow(Double($0), alpha)), 1e-4) }
            let norm = (s.max()! * s.min()!).squareRoot()
            s = s.map { $0 / norm }
            let columnScales = expand(s)
            let scaledImportance = zip(importance, columnScales).map { $0 / ($1 * $1) }
            var error = 0.0
            for c in consumers {
                for r in 0..<c.rows {
                    for j in 0..<columns { scaled.pointer[r * columns + j] = c.weights[r * columns + j] * columnScales[j] }
                }
                _ = c.format.roundTrip(scaled.pointer, rows: c.rows, columns: columns, importance: scaledImportance, pool: pool,
                                       restored: restored.pointer)
                for r in 0..<c.rows {
                    for j in 0..<columns {
                        let i = r * columns + j
                        restored.pointer[i] = restored.pointer[i] / columnScales[j] - c.weights[i]
                    }
                }
                error += outputError(restored.pointer, rows: c.rows, columns: columns, hessian: hessian, scratch: product.pointer,
                                     pool: pool)
            }
            if step == 0 { best.unscaledError = error }
            if error < best.error { best = ScaleResult(scales: s, alpha: alpha, error: error, unscaledError: best.unscaledError) }
        }
        return best
    }

    /// tr(Δ·H·Δᵀ): the mean squared output error of the weight error Δ (rows × columns) on inputs of
    /// second moment H (columns × columns, symmetric).
    static func outputError(_ delta: UnsafePointer<Float>, rows: Int, columns: Int, hessian: UnsafePointer<Float>,
                            scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) -> Double {
        sgemm(transposeA: false, transposeB: false, m: rows, n: columns, k: columns, a: delta, lda: columns, b: hessian, ldb: columns,
              c: scratch, ldc: columns, pool: pool)
        var total = 0.0
        for r in 0..<rows {
            var sum: Float = 0
            for j in 0..<columns { sum += delta[r * columns + j] * scratch[r * columns + j] }
            total += Double(sum)
        }
        return total
    }

    /// Clipping ratios tried: 1.0, 0.95 … 0.55 of each block's max |w| (AWQ: 20-step grid, half of it).
    static let clipRatios: [Float] = (0..<10).map { 1 - Float($0) / 20 }

    /// AWQ's clipping: each block of `format` in each row is clamped to ±r·max|w|, r chosen among
    /// `clipRatios` for the least output error of that block alone (Δ_bᵀ·H_bb·Δ_b, AWQ's per-group
    /// measure); `weights` are clamped in place. Returns the summed block errors at r = 1 and as chosen.
    static func clip(_ weights: UnsafeMutablePointer<Float>, rows: Int, columns: Int, format: BlockFormat,
                     hessian: UnsafePointer<Float>, importance: [Float], pool: ThreadPool) -> (before: Double, after: Double) {
        let block = format.elementsPerBlock, blocks = columns / block, count = rows * columns
        precondition(columns % block == 0 && block % 8 == 0)
        var maxima = [Float](repeating: 0, count: rows * blocks)
        for b in 0..<(rows * blocks) {
            let start = weights + b * block
            var m: Float = 0
            for i in 0..<block { m = Swift.max(m, abs(start[i])) }
            maxima[b] = m
        }
        var bestError = [Double](repeating: .infinity, count: rows * blocks), firstError = bestError
        var bestRatio = [Float](repeating: 1, count: rows * blocks)
        let clipped = FloatBuffer(count: count), restored = FloatBuffer(count: count)
        for ratio in clipRatios {
            for b in 0..<(rows * blocks) {
                let limit = maxima[b] * ratio
                for i in (b * block)..<((b + 1) * block) { clipped.pointer[i] = Swift.min(limit, Swift.max(-limit, weights[i])) }
            }
            _ = format.roundTrip(clipped.pointer, rows: rows, columns: columns, importance: importance, pool: pool, restored: restored.pointer)
            let delta = restored.pointer
            for i in 0..<count { delta[i] -= weights[i] }
            bestError.withUnsafeMutableBufferPointer { best in bestRatio.withUnsafeMutableBufferPointer { chosen in
                firstError.withUnsafeMutableBufferPointer { first in
                    pool.parallelRanges(count: rows, minChunk: 4) { range in
                        for r in range {
                            for b in 0..<blocks {
                                let k = r * blocks + b
                                let e = blockError(delta + r * columns + b * block, hessian: hessian + (b * block) * columns + b * block,
                                                   stride: columns, size: block)
                                if ratio == 1 { first[k] = e }
                                if e < best[k] { best[k] = e; chosen[k] = ratio }
                            }
                        }
                    }
                }
            } }
        }
        for b in 0..<(rows * blocks) where bestRatio[b] < 1 {
            let limit = maxima[b] * bestRatio[b]
            for i in (b * block)..<((b + 1) * block) { weights[i] = Swift.min(limit, Swift.max(-limit, weights[i])) }
        }
        return (firstError.reduce(0, +), bestError.reduce(0, +))
    }

    /// δᵀ·H·δ for one block: `hessian` points at the block's diagonal sub-matrix, rows `stride` apart.
    @inline(__always)
    static func blockError(_ delta: UnsafePointer<Float>, hessian: UnsafePointer<Float>, stride: Int, size: Int) -> Double {
        var total: Float = 0
        for i in 0..<size {
            let row = UnsafeRawPointer(hessian + i * stride)
            var acc = SIMD8<Float>()
            var j = 0
            while j < size {
                acc += row.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
                    * UnsafeRawPointer(delta).loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
                j += 8
            }
            total += delta[i] * acc.sum()
        }
        return Double(total)
    }
}

extension ChannelScaling {
    /// AWQ's scale search for one projection on explicit inputs (`tokens` × `columns`, row-major): the
    /// scales and the mean output errors with and without them, quantized to `format` with E[x²] weighting.
    public static func awqScales(weights: [Float], rows: Int, columns: Int, format: BlockFormat, inputs: [Float], tokens: Int,
                                 pool: ThreadPool) -> (scales: [Float], alpha: Double, error: Double, unscaledError: Double) {
        var hessian = [Float](repeating: 0, count: columns * columns)
        inputs.withUnsafeBufferPointer { x in hessian.withUnsafeMutableBufferPointer { h in
            sgemm(transposeA: true, transposeB: false, m: columns, n: columns, k: tokens, alpha: 1 / Float(tokens),
                  a: x.baseAddress!, lda: columns, b: x.baseAddress!, ldb: columns, c: h.baseAddress!, ldc: columns, pool: pool)
        } }
        let statistic = (0..<columns).map { j in (0..<tokens).reduce(Float(0)) { $0 + abs(inputs[$1 * columns + j]) } / Float(tokens) }
        let importance = (0..<columns).map { hessian[$0 * columns + $0] }
        let result = weights.withUnsafeBufferPointer { w in hessian.withUnsafeBufferPointer { h in
            AWQSearch.scales(consumers: [.init(weights: w.baseAddress!, rows: rows, format: format)], columns: columns, statistic: statistic,
                             expand: { $0 }, hessian: h.baseAddress!, importance: importance, pool: pool)
        } }
        return (result.scales, result.alpha, result.error, result.unscaledError)
    }
}
