import XCTest
import Pivot
import PivotKernels

/// GPTQ on a random layer with correlated inputs: the output error ‖(Q(W) − W)X‖ against
/// round-to-nearest with the same format and the same importance weighting.
final class GPTQTests: XCTestCase {
    /// X = Z·A (tokens × n): Gaussian Z mixed by a random A, so columns are correlated as real activations are.
    static func correlatedInputs(tokens: Int, columns n: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        func gauss() -> Float {
            let u = max(Float.random(in: 0...1, using: &g), 1e-7), v = Float.random(in: 0...1, using: &g)
            return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
        }
        let a = (0..<(n * n)).map { _ in gauss() / Float(n).squareRoot() }
        let scale = (0..<n).map { _ in exp(Float.random(in: -1...1, using: &g)) }
        var x = [Float](repeating: 0, count: tokens * n)
        for t in 0..<tokens {
            let z = (0..<n).map { _ in gauss() }
            for j in 0..<n { var s: Float = 0; for k in 0..<n { s += z[k] * a[k * n + j] }; x[t * n + j] = s * scale[j] }
        }
        return x
    }

    static func hessian(_ x: [Float], tokens: Int, columns n: Int) -> [Double] {
        var h = [Double](repeating: 0, count: n * n)
        for t in 0..<tokens { for i in 0..<n { let xi = Double(x[t * n + i]); for j in 0..<n { h[i * n + j] += xi * Double(x[t * n + j]) } } }
        return h
    }

    /// ‖(Ŵ − W)Xᵀ‖² summed over tokens and rows.
    static func outputError(_ bytes: [UInt8], _ w: [Float], _ x: [Float], rows: Int, columns n: Int, tokens: Int, format: BlockFormat) -> Double {
        var restored = [Float](repeating: 0, count: rows * n)
        bytes.withUnsafeBytes { b in restored.withUnsafeMutableBufferPointer { out in
            for r in 0..<rows { format.dequantizeRow(b.baseAddress! + r * format.rowBytes(n), count: n, into: out.baseAddress! + r * n) }
        } }
        var total = 0.0
        for r in 0..<rows {
            for t in 0..<tokens {
                var s = 0.0
                for j in 0..<n { s += Double(restored[r * n + j] - w[r * n + j]) * Double(x[t * n + j]) }
                total += s * s
            }
        }
        return total
    }

    func testFactorIsTheCholeskyOfTheDampedInverse() throws {
        let n = 24, tokens = 200
        let x = Self.correlatedInputs(tokens: tokens, columns: n, seed: 3)
        let h = Self.hessian(x, tokens: tokens, columns: n)
        let factor = try HessianFactor(hessian: h, columns: n, tokens: tokens, dampening: 0.01)
        let mean = (0..<n).reduce(0.0) { $0 + h[$1 * n + $1] } / Double(n)
        // (UᵀU)·(P H Pᵀ + λI) = I.
        for i in 0..<n {
            for j in 0..<n {
                var s = 0.0
                for k in 0..<n {
                    var inv = 0.0
                    for m in 0...min(i, k) { inv += Double(factor.upper[m * n + i]) * Double(factor.upper[m * n + k]) }
                    s += inv * (h[factor.order[k] * n + factor.order[j]] + (k == j ? 0.01 * mean : 0))
                }
                XCTAssertEqual(s, i == j ? 1 : 0, accuracy: 2e-3, "(\(i), \(j))")
            }
        }
        XCTAssertEqual(factor.order.map { h[$0 * n + $0] }, factor.order.map { h[$0 * n + $0] }.sorted(by: >), "act-order: largest diag(H) first")
    }

    func testGPTQLowersTheOutputErrorAgainstRoundToNearest() throws {
        let rows = 32, n = 256, tokens = 1024
        let x = Self.correlatedInputs(tokens: tokens, columns: n, seed: 9)
        var g = SplitMix64(seed: 4)
        let w = (0..<(rows * n)).map { _ in Float.random(in: -1...1, using: &g) * Float.random(in: 0...1, using: &g) }
        let h = Self.hessian(x, tokens: tokens, columns: n)
        let factor = try HessianFactor(hessian: h, columns: n, tokens: tokens)
        let natural = try HessianFactor(hessian: h, columns: n, tokens: tokens, actOrder: false)
        let pool = ThreadPool(threads: 2)
        for format in [BlockFormat.q3_K, .q4_K, .q4_0, .q5_0, .q2_g64, .q3_g128] {
            var rtn = [UInt8](repeating: 0, count: rows * format.rowBytes(n))
            w.withUnsafeBufferPointer { ws in rtn.withUnsafeMutableBytes { out in factor.importance.withUnsafeBufferPointer { imp in
                for r in 0..<rows { format.quantizeRow(ws.baseAddress! + r * n, count: n, into: out.baseAddress! + r * format.rowBytes(n), importance: imp.baseAddress!) }
            } } }
            let rtnError = Self.outputError(rtn, w, x, rows: rows, columns: n, tokens: tokens, format: format)
            for staticGroups in [true, false] {
                // Act-order with scales chosen first, or the natural order with scales chosen on the way.
                let gptq = w.withUnsafeBufferPointer {
                    GPTQ.quantize($0.baseAddress!, rows: rows, columns: n, format: format, factor: staticGroups ? factor : natural, staticGroups: staticGroups, pool: pool)
                }
                let gptqError = Self.outputError(gptq, w, x, rows: rows, columns: n, tokens: tokens, format: format)
                print("GPTQ \(format) static \(staticGroups): output error \(gptqError / rtnError) of RTN+importance")
                XCTAssertLessThan(gptqError, 0.8 * rtnError, "\(format), static groups \(staticGroups)")
            }
        }
    }
}

/// LSI on a random layer: the singular values it finds are W's, and the learned increments lower
/// the quantized layer's output error (never raise it: the best step is kept).
final class SingularValueCompensationTests: XCTestCase {
    func testIncrementsLowerTheOutputError() {
        let rows = 64, n = 256, tokens = 512
        let x = GPTQTests.correlatedInputs(tokens: tokens, columns: n, seed: 5)
        let h = GPTQTests.hessian(x, tokens: tokens, columns: n).map { Float($0 / Double(tokens)) }
        let importance = (0..<n).map { h[$0 * n + $0] }
        var g = SplitMix64(seed: 6)
        // A low-rank structure plus noise, as trained weights have.
        let left = (0..<(rows * 4)).map { _ in Float.random(in: -1...1, using: &g) }, right = (0..<(4 * n)).map { _ in Float.random(in: -1...1, using: &g) }
        var w = (0..<(rows * n)).map { i in (0..<4).reduce(Float(0)) { $0 + left[(i / n) * 4 + $1] * right[$1 * n + i % n] } * 0.3 + Float.random(in: -0.2...0.2, using: &g) }
        let lsi = SingularValueCompensation(rank: 8, steps: 40)
        let (u, sigma, _) = w.withUnsafeBufferPointer { lsi.topSingular($0.baseAddress!, rows: rows, columns: n, rank: 4) }
        XCTAssertEqual(sigma.count, 4)
        // σ₁ = ‖W·v₁‖ for the unit vector u₁: ‖Wᵀu₁‖ equals σ₁.
        var norm: Float = 0
        for j in 0..<n { var s: Float = 0; for i in 0..<rows { s += w[i * n + j] * u[i] }; norm += s * s }
        XCTAssertEqual(norm.squareRoot(), sigma[0], accuracy: 1e-3 * sigma[0])
        let pool = ThreadPool(threads: 2)
        for format in [BlockFormat.q3_K, .q4_0] {
            var copy = w
            let (before, after) = copy.withUnsafeMutableBufferPointer {
                lsi.compensate($0.baseAddress!, rows: rows, columns: n, format: format, hessian: h, importance: importance, pool: pool)
            }
            print("LSI \(format): output error \(after / before) of plain")
            // The increments move only 8 directions of a 64×256 matrix: small gains (measured 1.0 and 0.997).
            XCTAssertLessThanOrEqual(after, before, "\(format)")
            if format == .q4_0 { XCTAssertLessThan(after, 0.999 * before) }
        }
        w = []
    }
}
