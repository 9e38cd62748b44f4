import PivotKernels

/// GPTQ (Frantar et al. 2022) into GGML block formats: columns are quantized one at a time (in
/// act-order) and each column's rounding error, scaled by U (the Cholesky factor of H⁻¹), is
/// pushed onto the columns not yet quantized, so the layer's output error ‖(Q(W) − W)X‖ shrinks
/// rather than each weight's own. Updates inside a block of 128 columns are applied at once,
/// the rest lazily after the block (the paper's "lazy batch" form).
///
/// A format's scales are per block of 32 (or per super-block of 256 with sub-block scales): with
/// act-order they are chosen first, from the original weights, by the format's own quantizer
/// (weighted by each column's mean x², as llama.cpp's imatrix weighs them) — the "static groups"
/// of the reference code, which keep each block's columns contiguous so the file stays standard.
/// Without act-order they are chosen when GPTQ reaches a block, from the updated weights. Each
/// weight then gets the level of that grid nearest to its updated value (`BlockFormat.levelGrid`).
public enum GPTQ {
    public static let blockColumns = 128

    /// Quantizes `weights` (rows × columns, row-major) into `rows × format.rowBytes(columns)` bytes.
    /// Weights flagged in `outliers` (row-major, like `weights`) are kept exactly by a sparse correction:
    /// they pass no error on, and `residuals` receives (their updated value − their quantized value).
    public static func quantize(_ weights: UnsafePointer<Float>, rows: Int, columns n: Int, format: BlockFormat,
                                factor: HessianFactor, staticGroups: Bool = true, pool: ThreadPool,
                                outliers: UnsafePointer<Bool>? = nil, residuals: UnsafeMutablePointer<Float>? = nil) -> [UInt8] {
        precondition(factor.columns == n && n % format.elementsPerBlock == 0)
        precondition(staticGroups || factor.order == Array(0..<n), "scales chosen on the way need the natural column order")
        let group = format.elementsPerBlock, groups = n / group, rowBytes = format.rowBytes(n)
        let order = factor.order
        var position = [Int](repeating: 0, count: n)
        for (p, c) in order.enumerated() { position[c] = p }
        // Wᵀ in processing order: column p of the layer is a contiguous run of `rows` floats.
        let wt = FloatBuffer(count: n * rows)
        for r in 0..<rows { for c in 0..<n { wt.pointer[position[c] * rows + r] = factor.dead[c] ? 0 : weights[r * n + c] } }
        var output = [UInt8](repeating: 0, count: rows * rowBytes)
        // Per row and column: the grid (origin + level·step) of its block, once the block's scales are set.
        let origin = FloatBuffer(count: rows * n), step = FloatBuffer(count: rows * n)
        let importance = factor.importance

        output.withUnsafeMutableBytes { outBytes in
            let out = outBytes.baseAddress!
            /// Chooses block g's scales for every row from the current weights and records its grid.
            func chooseScales(_ g: Int) {
                let outP = out, wtP = wt.pointer, originP = origin.pointer, stepP = step.pointer
                importance.withUnsafeBufferPointer { imp in
                    pool.parallelRanges(count: rows, minChunk: 16) { range in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: group) { segment in
                            let x = segment.baseAddress!
                            for r in range {
                                for j in 0..<group { x[j] = wtP[position[g * group + j] * rows + r] }
                                let block = outP + r * rowBytes + g * format.bytesPerBlock
                                format.quantizeRow(x, count: group, into: block, importance: imp.baseAddress! + g * group)
                                format.levelGrid(UnsafeRawPointer(block), origin: originP + r * n + g * group, step: stepP + r * n + g * group)
                            }
                        }
                    }
                }
            }
            if staticGroups { for g in 0..<groups { chooseScales(g) } }

            let errors = FloatBuffer(count: blockColumns * rows)
            let u = factor.upper
            u.withUnsafeBufferPointer { uBuffer in
                let U = uBuffer.baseAddress!
                var start = 0
                while start < n {
                    let end = min(n, start + blockColumns)
                    for p in start..<end {
                        let c = order[p]
                        if !staticGroups && c % group == 0 { chooseScales(c / group) }
                        let column = wt.pointer + p * rows, err = errors.pointer + (p - start) * rows
                        let diagonal = U[p * n + p]
                        let g = c / group, j = c % group, levels = format.levels
                        for r in 0..<rows {
                            let o = origin.pointer[r * n + c], s = step.pointer[r * n + c]
                            var level = 0
                            if s != 0 { level = Int(((column[r] - o) / s).rounded()); level = min(levels - 1, max(0, level)) }
                            format.setLevel(out + r * rowBytes + g * format.bytesPerBlock, j, level)
                            let quantized = o + Float(level) * s
                            if let outliers, outliers[r * n + c] {
                                residuals?[r * n + c] = column[r] - quantized
                                err[r] = 0
                            } else {
                                err[r] = (column[r] - quantized) / diagonal
                            }
                        }
                        // Inside the block: push this column's error onto the block's later columns now.
                        for q in (p + 1)..<end {
                            let f = U[p * n + q]
                            if f != 0 { axpyF32(-f, UnsafePointer(err), column + (q - p) * rows, count: rows) }
                        }
                    }
                    // After the block: every later column at once.
                    if end < n {
                        let wtP = wt.pointer, errP = errors.pointer, width = end - start
                        pool.parallelRanges(count: n - end, minChunk: 8) { range in
                            for q in range {
                                let target = wtP + (end + q) * rows
                                for i in 0..<width {
                                    let f = U[(start + i) * n + end + q]
                                    if f != 0 { axpyF32(-f, UnsafePointer(errP + i * rows), target, count: rows) }
                                }
                            }
                        }
                    }
                    start = end
                }
            }
        }
        return output
    }
}
