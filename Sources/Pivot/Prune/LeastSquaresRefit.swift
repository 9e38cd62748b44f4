import Foundation
import PivotKernels

/// The closed-form re-fit of a projection after its inputs lost channels (FLAP's compensation without
/// a bias, done exactly): over calibration inputs a with Gram matrix G = Σ a·aᵀ, the kept columns K of
/// W' minimise Σ‖W'·a_K − (W·a + Δ)‖² + λ‖W' − W_K‖², whose solution is
///     W'·(G_KK + λI) = W·G_:K + C_:K + λ·W_K,     C = Σ Δ·aᵀ,
/// Δ being an extra target (what dropped blocks added to the residual stream; zero if none). The ridge
/// pulls toward the unhealed weights rather than toward zero, so a poorly determined direction keeps
/// its old value. λ = `dampening` × mean of G_KK's diagonal.
public enum LeastSquaresRefit {
    /// `weights`: rows × n (row-major, float); `gram`: n × n full symmetric; `cross`: rows × n or nil;
    /// returns rows × |kept|.
    public static func refit(weights: UnsafePointer<Float>, rows: Int, columns n: Int, gram: [Double], cross: UnsafePointer<Float>?,
                             kept: [Int], dampening: Double = 0.01, pool: ThreadPool) throws -> [Float] {
        precondition(gram.count == n * n)
        let k = kept.count
        // System matrix A = G_KK + λI, factored A = L·Lᵀ.
        var a = [Double](repeating: 0, count: k * k)
        var diagonal = 0.0
        for (i, ki) in kept.enumerated() {
            for (j, kj) in kept.enumerated() { a[i * k + j] = gram[ki * n + kj] }
            diagonal += gram[ki * n + ki]
        }
        let lambda = max(dampening * diagonal / Double(max(k, 1)), 1e-8)
        for i in 0..<k { a[i * k + i] += lambda }
        guard let factor = cholesky(a, n: k) else {
            throw PivotError.invalidArgument("least squares: the Gram matrix of the kept channels is not positive definite")
        }
        // Right-hand sides, one per output row: W·G_:K + C_:K + λ·W_K.
        var result = [Float](repeating: 0, count: rows * k)
        let chunkRows = max(1, rows / (pool.threads * 4))
        let chunks = (rows + chunkRows - 1) / chunkRows
        result.withUnsafeMutableBufferPointer { out in
            let outBase = out.baseAddress!
            pool.parallelFor(chunks: chunks) { chunk in
                var b = [Double](repeating: 0, count: k)
                for r in (chunk * chunkRows)..<min(rows, (chunk + 1) * chunkRows) {
                    let w = weights + r * n
                    for (j, kj) in kept.enumerated() {
                        var sum = 0.0
                        let g = kj * n
                        for i in 0..<n { sum += Double(w[i]) * gram[g + i] }
                        if let cross { sum += Double(cross[r * n + kj]) }
                        b[j] = sum + lambda * Double(w[kj])
                    }
                    solve(factor, n: k, rhs: &b)
                    for j in 0..<k { outBase[r * k + j] = Float(b[j]) }
                }
            }
        }
        return result
    }

    /// Lower-triangular L with L·Lᵀ = a (n × n, row-major), or nil when a is not positive definite.
    static func cholesky(_ a: [Double], n: Int) -> [Double]? {
        var l = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = a[i * n + j]
                for p in 0..<j { sum -= l[i * n + p] * l[j * n + p] }
                if i == j {
                    guard sum > 0 else { return nil }
                    l[i * n + i] = sum.squareRoot()
                } else {
                    l[i * n + j] = sum / l[j * n + j]
                }
            }
        }
        return l
    }

    /// Solves L·Lᵀ·x = b in place.
    static func solve(_ l: [Double], n: Int, rhs b: inout [Double]) {
        for i in 0..<n {
            var sum = b[i]
            for p in 0..<i { sum -= l[i * n + p] * b[p] }
            b[i] = sum / l[i * n + i]
        }
        for i in stride(from: n - 1, through: 0, by: -1) {
            var sum = b[i]
            for p in (i + 1)..<n { sum -= l[p * n + i] * b[p] }
            b[i] = sum / l[i * n + i]
        }
    }
}
