import Foundation
import PivotKernels

/// Float building blocks of the training pass: the one GEMM entry point every projection (forward,
/// input gradient, weight gradient) goes through, RMSNorm and its gradients, RoPE and its inverse.
/// Matrices are row-major, one row per token; W is [out][in] as the checkpoints store it.
enum TrainKernels {
    /// C[m×n] = op(A)·op(B) + beta·C (row-major BLAS semantics; op(A) = Aᵀ reads A as k×m).
    static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, pool: ThreadPool?) {
        sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
              beta: beta, c: c, ldc: ldc, pool: pool)
    }

    /// Y = X·Wᵀ for `rows` tokens.
    static func linear(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
                       into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        gemm(transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs, a: x, lda: inputs, b: w, ldb: inputs,
             beta: 0, c: y, ldc: outputs, pool: pool)
    }

    /// dX (+)= dY·W: the gradient reaching a projection's input (`accumulate` adds to dX).
    static func linearInputGradient(_ dy: UnsafePointer<Float>, _ w: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
                                    into dx: UnsafeMutablePointer<Float>, accumulate: Bool, pool: ThreadPool) {
        gemm(transposeA: false, transposeB: false, m: rows, n: inputs, k: outputs, a: dy, lda: outputs, b: w, ldb: inputs,
             beta: accumulate ? 1 : 0, c: dx, ldc: inputs, pool: pool)
    }

    /// dW += dYᵀ·X: the gradient of the weights, summed over tokens.
    static func linearWeightGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
                                     into dw: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        gemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows, a: dy, lda: outputs, b: x, ldb: inputs,
             beta: 1, c: dw, ldc: inputs, pool: pool)
    }

    /// y = g ⊙ x·r per row with r = 1/√(mean x² + ε); r saved per row for the gradient.
    static func rmsNormRows(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, rows: Int, width n: Int, epsilon: Float,
                            into y: UnsafeMutablePointer<Float>, r: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        pool.parallelRanges(count: rows, minChunk: 16) { range in
            for t in range {
                let row = x + t * n, out = y + t * n
                let inverse = 1 / (dotF32(row, row, count: n) / Float(n) + epsilon).squareRoot()
                r[t] = inverse
                for i in 0..<n { out[i] = g[i] * row[i] * inverse }
            }
        }
    }

    /// dx += r·(g⊙dy) − x·r³·⟨g⊙dy, x⟩/n per row, and dg += Σ_t dy⊙x·r (columns split over threads).
    static func rmsNormBackwardRows(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, r: UnsafePointer<Float>,
                                    _ dy: UnsafePointer<Float>, rows: Int, width n: Int, dx: UnsafeMutablePointer<Float>,
                                    dg: UnsafeMutablePointer<Float>?, pool: ThreadPool) {
        pool.parallelRanges(count: rows, minChunk: 16) { range in
            for t in range {
                let xr = x + t * n, d = dy + t * n, out = dx + t * n, rt = r[t]
                var dot: Float = 0
                for i in 0..<n { dot += g[i] * d[i] * xr[i] }
                let c = rt * rt * rt * dot / Float(n)
                for i in 0..<n { out[i] += rt * g[i] * d[i] - c * xr[i] }
            }
        }
        guard let dg else { return }
        pool.parallelRanges(count: n, minChunk: 32) { columns in
            for t in 0..<rows {
                let xr = x + t * n, d = dy + t * n, rt = r[t]
                for i in columns { dg[i] += d[i] * xr[i] * rt }
            }
        }
    }

    /// RoPE on one head vector, or its inverse (the transpose of the rotation) for gradients.
    @inline(__always)
    static func rotate(_ v: UnsafeMutablePointer<Float>, headDim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                       interleaved: Bool, inverse: Bool) {
        let half = headDim / 2
        for i in 0..<half {
            let (a, b) = interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
            let x0 = v[a], x1 = v[b], c = cos[i], s = inverse ? -sin[i] : sin[i]
            v[a] = x0 * c - x1 * s
            v[b] = x0 * s + x1 * c
        }
    }

    @inline(__always) static func sigmoid(_ z: Float) -> Float { 1 / (1 + Foundation.exp(-z)) }
}
