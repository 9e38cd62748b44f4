/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations, in Double: small matrices
/// (a head's 64×64 second moment) where accuracy matters more than speed and no LAPACK is linked.
///
/// Returns eigenvalues in descending order and the matching unit eigenvectors as rows of an n×n
/// row-major array (`vectors[i*n ..< (i+1)*n]` belongs to `values[i]`).
public func symmetricEigen(_ matrix: [Double], n: Int, maxSweeps: Int = 60) -> (values: [Double], vectors: [Double]) {
    precondition(matrix.count == n * n, "symmetricEigen needs an n×n matrix")
    var a = matrix
    // Columns of v are the eigenvectors while rotating.
    var v = [Double](repeating: 0, count: n * n)
    for i in 0..<n { v[i * n + i] = 1 }
    var total = 0.0
    for x in a { total += x * x }
    let tolerance = max(total, .leastNormalMagnitude) * 1e-26
    for _ in 0..<maxSweeps {
        var off = 0.0
        for p in 0..<n { for q in (p + 1)..<max(p + 1, n) { off += a[p * n + q] * a[p * n + q] } }
        if off <= tolerance { break }
        for p in 0..<n {
            for q in (p + 1)..<max(p + 1, n) {
                let apq = a[p * n + q]
                if abs(apq) < 1e-300 { continue }
                // The rotation that zeroes a[p][q]: t = tan φ, the smaller root of t² + 2θt − 1 = 0.
                let theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                for k in 0..<n {   // A ← A·J (columns p, q)
                    let akp = a[k * n + p], akq = a[k * n + q]
                    a[k * n + p] = c * akp - s * akq
                    a[k * n + q] = s * akp + c * akq
                }
                for k in 0..<n {   // A ← Jᵀ·A (rows p, q)
                    let apk = a[p * n + k], aqk = a[q * n + k]
                    a[p * n + k] = c * apk - s * aqk
                    a[q * n + k] = s * apk + c * aqk
                }
                for k in 0..<n {   // V ← V·J
                    let vkp = v[k * n + p], vkq = v[k * n + q]
                    v[k * n + p] = c * vkp - s * vkq
                    v[k * n + q] = s * vkp + c * vkq
                }
            }
        }
    }
    let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] }
    var values = [Double](), vectors = [Double]()
    values.reserveCapacity(n); vectors.reserveCapacity(n * n)
    for i in order {
        values.append(a[i * n + i])
        for k in 0..<n { vectors.append(v[k * n + i]) }
    }
    return (values, vectors)
}
