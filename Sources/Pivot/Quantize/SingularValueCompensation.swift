import Foundation
import PivotKernels

/// LSI (learnable singular-value increments): W = UΣVᵀ; increments ΔΣ are learned so that the
/// quantized W' = U(Σ+ΔΣ)Vᵀ errs least on the calibration inputs, ‖(Q(W') − W)X‖² = tr(E·H·Eᵀ) with
/// E = Q(W') − W and H = XᵀX/N. Q is not differentiable: its gradient passes straight through (STE),
/// so ∂/∂Δσₖ = uₖᵀ(2·E·H)vₖ, and Adam takes the steps; the best increments seen are kept (none,
/// if no step helps). Applied before the final quantization, so the file stays standard.
///
/// Here only the top `rank` singular values move (found by a randomized range finder with two power
/// iterations), not all of them as in the paper, and Q inside the loop is the importance-weighted
/// round-to-nearest of the target type even when GPTQ does the final rounding.
public struct SingularValueCompensation {
    public var rank = 32
    public var steps = 30
    /// Adam's step, relative to the largest singular value.
    public var learningRate: Float = 0.002

    public init(rank: Int = 32, steps: Int = 30) { self.rank = rank; self.steps = steps }

    /// Adjusts `weights` (rows × n, row-major) in place; returns the output error before and after.
    public func compensate(_ weights: UnsafeMutablePointer<Float>, rows: Int, columns n: Int, format: BlockFormat,
                           hessian h: [Float], importance: [Float], pool: ThreadPool) -> (before: Double, after: Double) {
        let (u, sigma, v) = topSingular(weights, rows: rows, columns: n, rank: min(rank, rows, n))
        let r = sigma.count
        let original = Array(UnsafeBufferPointer(start: weights, count: rows * n))
        var delta = [Float](repeating: 0, count: r), best = delta
        var m = delta, s = delta
        let lr = learningRate * (sigma.first ?? 1)
        var trial = original, quantized = original, gradient = original
        var bestError = Double.infinity, firstError = 0.0
        for step in 0...steps {
            // W' = W + U·diag(δ)·Vᵀ
            trial = original
            for k in 0..<r where delta[k] != 0 {
                for i in 0..<rows { let a = delta[k] * u[k * rows + i]; if a != 0 { for j in 0..<n { trial[i * n + j] += a * v[k * n + j] } } }
            }
            trial.withUnsafeBufferPointer { w in quantized.withUnsafeMutableBufferPointer { q in
                _ = format.roundTrip(w.baseAddress!, rows: rows, columns: n, importance: importance, pool: pool, restored: q.baseAddress!)
            } }
            for i in 0..<(rows * n) { quantized[i] -= original[i] }  // E
            let error = outputError(quantized, h, rows: rows, columns: n, gradient: &gradient, pool: pool)
            if step == 0 { firstError = error }
            if error < bestError { bestError = error; best = delta }
            if step == steps { break }
            // ∂/∂δₖ = uₖᵀ·(2·E·H)·vₖ, then Adam.
            for k in 0..<r {
                var g: Float = 0
                for i in 0..<rows {
                    var dot: Float = 0
                    for j in 0..<n { dot += gradient[i * n + j] * v[k * n + j] }
                    g += u[k * rows + i] * dot
                }
                g *= 2
                m[k] = 0.9 * m[k] + 0.1 * g
                s[k] = 0.999 * s[k] + 0.001 * g * g
                let mHat = m[k] / (1 - pow(0.9, Float(step + 1))), sHat = s[k] / (1 - pow(0.999, Float(step + 1)))
                delta[k] -= lr * mHat / (sHat.squareRoot() + 1e-12)
            }
        }
        for i in 0..<(rows * n) { weights[i] = original[i] }
        for k in 0..<r where best[k] != 0 {
            for i in 0..<rows { let a = best[k] * u[k * rows + i]; for j in 0..<n { weights[i * n + j] += a * v[k * n + j] } }
        }
        return (firstError, bestError)
    }

    /// tr(E·H·Eᵀ); `gradient` receives E·H.
    func outputError(_ e: [Float], _ h: [Float], rows: Int, columns n: Int, gradient: inout [Float], pool: ThreadPool) -> Double {
        var partial = [Double](repeating: 0, count: rows)
        e.withUnsafeBufferPointer { ep in h.withUnsafeBufferPointer { hp in gradient.withUnsafeMutableBufferPointer { gp in partial.withUnsafeMutableBufferPointer { pp in
            let E = ep.baseAddress!, H = hp.baseAddress!, G = gp.baseAddress!, P = pp.baseAddress!
            pool.parallelRanges(count: rows, minChunk: 8) { range in
                for i in range {
                    var total = 0.0
                    for j in 0..<n {
                        let value = dotF32(E + i * n, H + j * n, count: n)
                        G[i * n + j] = value
                        total += Double(value) * Double(E[i * n + j])
                    }
                    P[i] = total
                }
            }
        } } } }
        return partial.reduce(0, +)
    }

    /// The `rank` largest singular triplets: u (rank × rows), σ, v (rank × columns).
    public func topSingular(_ w: UnsafePointer<Float>, rows: Int, columns n: Int, rank: Int) -> ([Float], [Float], [Float]) {
        let k = min(rank + 8, rows, n)
        var g = SplitMix64(seed: 17)
        // Y = W·Ω, then two power iterations Y ← W·(Wᵀ·Y), each followed by orthonormalization.
        var omega = (0..<(k * n)).map { _ in Float.random(in: -1...1, using: &g) }  // k × n (rows of Ωᵀ)
        var y = [Float](repeating: 0, count: k * rows)  // k × rows (columns of Y as rows)
        func multiplyW(_ x: [Float]) -> [Float] {  // rows of W·xᵀ: out[c][i] = W[i]·x[c]
            var out = [Float](repeating: 0, count: k * rows)
            for c in 0..<k { x.withUnsafeBufferPointer { xp in for i in 0..<rows { out[c * rows + i] = dotF32(w + i * n, xp.baseAddress! + c * n, count: n) } } }
            return out
        }
        func multiplyWT(_ x: [Float]) -> [Float] {  // out[c] = Wᵀ·x[c]
            var out = [Float](repeating: 0, count: k * n)
            out.withUnsafeMutableBufferPointer { op in for c in 0..<k { for i in 0..<rows { axpyF32(x[c * rows + i], w + i * n, op.baseAddress! + c * n, count: n) } } }
            return out
        }
        func orthonormalize(_ m: inout [Float], _ length: Int) {
            for c in 0..<k {
                for p in 0..<c {
                    var dot: Float = 0
                    for i in 0..<length { dot += m[c * length + i] * m[p * length + i] }
                    for i in 0..<length { m[c * length + i] -= dot * m[p * length + i] }
                }
                var norm: Float = 0
                for i in 0..<length { norm += m[c * length + i] * m[c * length + i] }
                let inverse = norm > 0 ? 1 / norm.squareRoot() : 0
                for i in 0..<length { m[c * length + i] *= inverse }
            }
        }
        y = multiplyW(omega); orthonormalize(&y, rows)
        for _ in 0..<2 { omega = multiplyWT(y); orthonormalize(&omega, n); y = multiplyW(omega); orthonormalize(&y, rows) }
        // B = Yᵀ·W (k × n); B·Bᵀ = Z·Λ·Zᵀ; σ = √λ, u = Y·z, v = Bᵀ·z / σ.
        let b = multiplyWT(y)
        var gram = [Double](repeating: 0, count: k * k)
        for p in 0..<k { for q in 0..<k { var dot = 0.0; for j in 0..<n { dot += Double(b[p * n + j]) * Double(b[q * n + j]) }; gram[p * k + q] = dot } }
        let (values, vectors) = symmetricEigen(gram, n: k)
        var u = [Float](repeating: 0, count: rank * rows), v = [Float](repeating: 0, count: rank * n), sigma = [Float]()
        for r in 0..<rank {
            let s = Float(max(values[r], 0).squareRoot())
            guard s > 0 else { break }
            sigma.append(s)
            for c in 0..<k {
                let z = Float(vectors[r * k + c])
                for i in 0..<rows { u[r * rows + i] += z * y[c * rows + i] }
                for j in 0..<n { v[r * n + j] += z * b[c * n + j] / s }
            }
        }
        return (u, sigma, v)
    }
}
