import PivotKernels

/// What GPTQ needs of H = Σ x·xᵀ over the calibration inputs of one projection: the column order
/// (act-order: largest diag(H) first), and U, the upper Cholesky factor of H⁻¹ in that order
/// (H⁻¹ = UᵀU), after 1% dampening. Computed once per distinct input (Q/K/V share one).
public final class HessianFactor {
    public let columns: Int
    /// order[p] = the original column processed p-th.
    public let order: [Int]
    /// U, row-major `columns × columns`, in processing order.
    public let upper: [Float]
    /// Columns no calibration token ever touched (their weights are set to 0, as GPTQ does).
    public let dead: [Bool]
    /// diag(H) / tokens: llama.cpp's importance (mean x²), for choosing each block's scales.
    public let importance: [Float]

    /// `hessian` is Σ x·xᵀ (row-major, symmetric) over `tokens` inputs.
    public init(hessian: [Double], columns n: Int, tokens: Int, dampening: Double = 0.01, actOrder: Bool = true) throws {
        precondition(hessian.count == n * n)
        columns = n
        var h = hessian
        var dead = [Bool](repeating: false, count: n)
        for i in 0..<n where h[i * n + i] == 0 { dead[i] = true; h[i * n + i] = 1 }
        self.dead = dead
        importance = (0..<n).map { dead[$0] ? 0 : Float(hessian[$0 * n + $0] / Double(max(1, tokens))) }
        let meanDiagonal = (0..<n).reduce(0.0) { $0 + h[$1 * n + $1] } / Double(n)
        order = actOrder ? (0..<n).sorted { h[$0 * n + $0] > h[$1 * n + $1] } : Array(0..<n)
        // M = J·P·H·Pᵀ·J (processing order, reversed): if M = L·Lᵀ then U = J·L⁻¹·J.
        var damp = dampening * meanDiagonal
        for _ in 0..<6 {
            var m = [Double](repeating: 0, count: n * n)
            for i in 0..<n {
                for j in 0..<n { m[(n - 1 - i) * n + (n - 1 - j)] = h[order[i] * n + order[j]] }
                m[(n - 1 - i) * n + (n - 1 - i)] += damp
            }
            if let lower = Self.cholesky(&m, n) {
                let inverse = Self.invertLower(lower, n)
                var u = [Float](repeating: 0, count: n * n)
                for i in 0..<n { for j in i..<n { u[i * n + j] = Float(inverse[(n - 1 - i) * n + (n - 1 - j)]) } }
                upper = u
                return
            }
            damp = max(damp * 10, 1e-8)
        }
        throw PivotError.invalidArgument("GPTQ: the calibration Hessian is not positive definite even after dampening")
    }

    /// In-place lower Cholesky factor of a symmetric positive definite matrix (upper part left
    /// as garbage-free zeros); nil if it is not positive definite.
    static func cholesky(_ a: inout [Double], _ n: Int) -> [Double]? {
        var l = [Double](repeating: 0, count: n * n)
        let ok = l.withUnsafeMutableBufferPointer { lp -> Bool in
            a.withUnsafeBufferPointer { ap -> Bool in
                let L = lp.baseAddress!, A = ap.baseAddress!
                for i in 0..<n {
                    for j in 0...i {
                        let s = dotDouble(L + i * n, L + j * n, count: j)
                        if i == j {
                            let d = A[i * n + i] - s
                            guard d > 0, d.isFinite else { return false }
                            L[i * n + i] = d.squareRoot()
                        } else {
                            L[i * n + j] = (A[i * n + j] - s) / L[j * n + j]
                        }
                    }
                }
                return true
            }
        }
        return ok ? l : nil
    }

    /// L⁻¹ of a lower-triangular L, row by row: row i = (eᵢ − Σ_{k<i} L[i][k]·row k) / L[i][i].
    static func invertLower(_ l: [Double], _ n: Int) -> [Double] {
        var x = [Double](repeating: 0, count: n * n)
        x.withUnsafeMutableBufferPointer { xp in
            l.withUnsafeBufferPointer { lp in
                let X = xp.baseAddress!, L = lp.baseAddress!
                for i in 0..<n {
                    let row = X + i * n
                    for k in 0..<i where L[i * n + k] != 0 {
                        let f = -L[i * n + k]
                        let source = X + k * n
                        for j in 0...k { row[j] += f * source[j] }
                    }
                    row[i] += 1
                    let inverse = 1 / L[i * n + i]
                    for j in 0...i { row[j] *= inverse }
                }
            }
        }
        return x
    }
}

/// Σ a[i]·b[i] in double, four lanes at a time.
@inline(__always)
func dotDouble(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, count: Int) -> Double {
    var acc = SIMD4<Double>()
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 4 <= count {
        acc += ra.loadUnaligned(fromByteOffset: i * 8, as: SIMD4<Double>.self) * rb.loadUnaligned(fromByteOffset: i * 8, as: SIMD4<Double>.self)
        i += 4
    }
    var s = acc.sum()
    while i < count { s += a[i] * b[i]; i += 1 }
    return s
}
