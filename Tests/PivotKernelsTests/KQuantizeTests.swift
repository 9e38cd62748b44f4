import XCTest
import PivotKernels

/// K-quant quantizers: what they lose, measured on Gaussian weights with outliers, against bounds
/// from their bit widths; and what importance weighting buys where it is asked to.
final class KQuantizeTests: XCTestCase {
    static func gaussianRow(_ count: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            // Box–Muller, plus 1% outliers of 8σ as real projection weights have.
            let u = max(Float.random(in: 0...1, using: &g), 1e-7), v = Float.random(in: 0...1, using: &g)
            let z = (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
            return Float.random(in: 0...1, using: &g) < 0.01 ? 8 * z : z
        }
    }

    static func roundTrip(_ format: BlockFormat, _ x: [Float], importance: [Float]? = nil) -> [Float] {
        var bytes = [UInt8](repeating: 0xAA, count: format.rowBytes(x.count))
        var back = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { xs in
            bytes.withUnsafeMutableBytes { out in
                if let importance {
                    importance.withUnsafeBufferPointer { format.quantizeRow(xs.baseAddress!, count: x.count, into: out.baseAddress!, importance: $0.baseAddress) }
                } else {
                    format.quantizeRow(xs.baseAddress!, count: x.count, into: out.baseAddress!, importance: nil)
                }
            }
        }
        bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { format.dequantizeRow(b.baseAddress!, count: x.count, into: $0.baseAddress!) } }
        return back
    }

    /// RMS error relative to the RMS of the weights: each extra bit should roughly halve it; the
    /// limits are the measured values (0.337, 0.194, 0.090, 0.046, 0.0255) + 15%, so a broken
    /// scale search fails them.
    func testRoundTripErrorShrinksWithBits() {
        let x = Self.gaussianRow(256 * 64, seed: 5)
        let rms = (x.reduce(0) { $0 + $1 * $1 } / Float(x.count)).squareRoot()
        let limits: [BlockFormat: Float] = [.q2_K: 0.39, .q3_K: 0.225, .q4_K: 0.104, .q5_K: 0.052, .q6_K: 0.029]
        var previous = Float.infinity
        for format in [BlockFormat.q2_K, .q3_K, .q4_K, .q5_K, .q6_K] {
            let back = Self.roundTrip(format, x)
            let error = (zip(x, back).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Float(x.count)).squareRoot() / rms
            XCTAssertLessThan(error, limits[format]!, "\(format.name) relative RMS error \(error)")
            XCTAssertLessThan(error, previous * 0.7, "\(format.name) should clearly beat the format one bit below")
            previous = error
            // No value moves by more than its sub-block's range (a code never lands on the wrong side).
            XCTAssertLessThan(zip(x, back).map { abs($0 - $1) }.max()!, 8 * x.map(abs).max()! / 3)
        }
    }

    /// With importance on a few columns, those columns come out more precisely than without it,
    /// and the importance-weighted error falls, for every K-quant and block-32 type with a search.
    func testImportanceLowersTheWeightedError() {
        let x = Self.gaussianRow(256 * 32, seed: 9)
        let importance = (0..<x.count).map { c in c % 16 == 3 ? Float(50) : Float(1) }
        func weightedError(_ back: [Float]) -> Float {
            zip(zip(x, back), importance).reduce(0) { $0 + $1.1 * ($1.0.0 - $1.0.1) * ($1.0.0 - $1.0.1) }
        }
        for format in [BlockFormat.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q4_0, .q4_1, .q5_0, .q5_1] {
            let plain = weightedError(Self.roundTrip(format, x))
            let weighted = weightedError(Self.roundTrip(format, x, importance: importance))
            XCTAssertLessThan(weighted, plain * 0.9, "\(format.name): weighted \(weighted) vs plain \(plain)")
        }
    }

    /// All-zero and constant super-blocks give exact zeros / stay finite (the searches' degenerate paths).
    func testDegenerateBlocks() {
        for format in [BlockFormat.q2_K, .q3_K, .q4_K, .q5_K, .q6_K] {
            XCTAssertEqual(Self.roundTrip(format, [Float](repeating: 0, count: 512)), [Float](repeating: 0, count: 512), format.name)
            let constant = Self.roundTrip(format, [Float](repeating: 0.5, count: 256))
            XCTAssertTrue(constant.allSatisfy { abs($0 - 0.5) < 0.05 }, "\(format.name): \(constant.prefix(4))")
        }
    }

    /// Packing helpers invert the readers the dot products use.
    func testScalePackingInvertsUnpacking() {
        var g = SplitMix64(seed: 3)
        let ls = (0..<8).map { _ in UInt8.random(in: 0...63, using: &g) }, lm = (0..<8).map { _ in UInt8.random(in: 0...63, using: &g) }
        var packed = [UInt8](repeating: 0xFF, count: 12)
        packed.withUnsafeMutableBytes { BlockFormat.packScaleMinK4(ls, lm, into: $0.baseAddress!) }
        packed.withUnsafeBytes { p in
            for j in 0..<8 { XCTAssertTrue(BlockFormat.scaleMinK4(j, p.baseAddress!) == (ls[j], lm[j])) }
        }
        let scales = (0..<16).map { _ in Int.random(in: 0...63, using: &g) }
        packed.withUnsafeMutableBytes { BlockFormat.packScalesQ3K({ scales[$0] }, into: $0.baseAddress!) }
        packed.withUnsafeBytes { p in
            for j in 0..<16 { XCTAssertEqual(BlockFormat.scaleQ3K(j, p.baseAddress!), scales[j] - 32) }
        }
    }

    func testNearestIntRoundsHalfToEven() {
        XCTAssertEqual([0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -3.51].map { ScaleSearch.nearestInt(Float($0)) }, [0, 2, 2, 0, -2, 3, -4])
    }
}
