import XCTest
import PivotKernels

/// The non-Llama blocks' element-wise kernels against plain Double loops.
final class BlockKernelsTests: XCTestCase {
    func values(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in (Float(rng.next() % 1_000_000) / 500_000 - 1) * scale }
    }

    func testLayerNormMatchesReference() {
        for count in [1, 7, 8, 64, 131] {
            let x = values(count, seed: 1), w = values(count, seed: 2), b = values(count, seed: 3)
            var out = [Float](repeating: 0, count: count), plain = out
            layerNorm(x, weight: w, bias: b, epsilon: 1e-5, out: &out, count: count)
            layerNorm(x, weight: w, bias: nil, epsilon: 1e-5, out: &plain, count: count)
            let mean = x.reduce(0.0) { $0 + Double($1) } / Double(count)
            let variance = x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(count)
            for i in 0..<count {
                let n = (Double(x[i]) - mean) / (variance + 1e-5).squareRoot()
                XCTAssertEqual(Double(out[i]), n * Double(w[i]) + Double(b[i]), accuracy: 2e-5, "count \(count), element \(i)")
                XCTAssertEqual(Double(plain[i]), n * Double(w[i]), accuracy: 2e-5)
            }
        }
    }

    func testGELUFormsMatchTheirDefinitions() {
        let x = values(203, seed: 4, scale: 9) + [0, -0.0, 1e-6, -30, 30]
        for activation in [Activation.gelu, .geluTanh, .silu] {
            var fast = x
            activation.apply(&fast, count: x.count)
            var gated = x
            let up = values(x.count, seed: 5)
            activation.applyGated(&gated, up, count: x.count)
            for i in 0..<x.count {
                let v = Double(x[i])
                let exact: Double
                switch activation {
                case .gelu: exact = 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
                case .geluTanh: exact = 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
                case .silu: exact = v / (1 + exp(-v))
                }
                XCTAssertEqual(Double(fast[i]), exact, accuracy: 2e-6 * max(1, abs(exact)), "\(activation) at \(v)")
                XCTAssertEqual(Double(gated[i]), exact * Double(up[i]), accuracy: 4e-6 * max(1, abs(exact * Double(up[i]))), "\(activation) gated at \(v)")
            }
        }
    }

    func testSoftCapIsCapTimesTanh() {
        var x = values(50, seed: 6, scale: 100)
        let original = x
        softCap(&x, count: x.count, cap: 30)
        for (capped, v) in zip(x, original) { XCTAssertEqual(Double(capped), 30 * tanh(Double(v) / 30), accuracy: 1e-5) }
    }
}
