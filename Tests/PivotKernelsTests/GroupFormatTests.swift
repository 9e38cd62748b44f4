import XCTest
import PivotKernels

/// Pivot's group-wise extension formats: the byte layout, the quantizer's error, and their place
/// among the formats (the kernels are covered with every format in QuantizedDotTests).
final class GroupFormatTests: XCTestCase {
    func testSizesAndIdentity() {
        let expected: [BlockFormat: (bytes: Int, bits: Double)] = [
            .q2_g32: (12, 3.0), .q2_g64: (20, 2.5), .q2_g128: (36, 2.25), .q3_g32: (16, 4.0),
            .q3_g64: (28, 3.5), .q3_g128: (52, 3.25), .q4_g64: (36, 4.5), .q4_g128: (68, 4.25)]
        for format in BlockFormat.extensionFormats {
            XCTAssertEqual(format.bytesPerBlock, expected[format]!.bytes, format.name)
            XCTAssertEqual(Double(format.bytesPerBlock * 8) / Double(format.elementsPerBlock), expected[format]!.bits, format.name)
            XCTAssertEqual(BlockFormat(ggmlType: format.ggmlType), format)
            XCTAssertGreaterThan(format.ggmlType, 255, "must not collide with ggml's type ids")
            XCTAssertEqual(BlockFormat.grouped(bits: format.groupBits!, group: format.elementsPerBlock), format)
        }
        XCTAssertEqual(BlockFormat.q3_g64.name, "Q3_G64")
        XCTAssertFalse(BlockFormat.q4_K.isExtension)
    }

    /// Hand-written bytes: Q3_G64 with d = 0.5, m = −1; run 1 weight 9 has code 6 = plane 2 (byte 4 + 8 + 1,
    /// bits 2–3) + third bit 1 (third-bit word of run 1 at 4 + 16 + 4, bit 9).
    func testThreeBitLayout() {
        let format = BlockFormat.q3_g64
        var block = [UInt8](repeating: 0, count: format.bytesPerBlock)
        withUnsafeBytes(of: Float16(0.5).bitPattern) { block[0] = $0[0]; block[1] = $0[1] }
        withUnsafeBytes(of: Float16(-1).bitPattern) { block[2] = $0[0]; block[3] = $0[1] }
        block[4 + 8 + 1] = 0b10 << 2
        block[4 + 16 + 4 + 1] = 1 << 1
        block[4] = 0b11  // run 0, weight 0: code 3
        var out = [Float](repeating: 0, count: 64)
        block.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { format.dequantizeRow(b.baseAddress!, count: 64, into: $0.baseAddress!) } }
        XCTAssertEqual(out[32 + 9], 0.5 * 6 - 1)
        XCTAssertEqual(out[0], 0.5 * 3 - 1)
        XCTAssertEqual(out.filter { $0 == -1 }.count, 62)
    }

    /// Each group's codes span its range: the searched scale and minimum give a squared error no
    /// larger than 1.05× the plain min–max round-to-nearest of the same grid (usually well below), and
    /// more bits or smaller groups give less error.
    func testQuantizerErrorAgainstMinMaxRounding() {
        let count = 128 * 48
        let x = KQuantizeTests.gaussianRow(count, seed: 17)
        var errors: [BlockFormat: Double] = [:]
        for format in BlockFormat.extensionFormats {
            let back = roundTrip(format, x, importance: nil)
            let error = zip(back, x).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
            let top = Float((1 << format.groupBits!) - 1), group = format.elementsPerBlock
            var plain = 0.0
            for b in 0..<(count / group) {
                let slice = x[(b * group)..<((b + 1) * group)]
                let lo = slice.min()!, d = (slice.max()! - lo) / top
                for v in slice { let q = ((v - lo) / d).rounded(); plain += Double((q * d + lo - v) * (q * d + lo - v)) }
            }
            XCTAssertLessThanOrEqual(error, plain * 1.05, format.name)
            errors[format] = error
        }
        XCTAssertLessThan(errors[.q2_g32]!, errors[.q2_g64]!)
        XCTAssertLessThan(errors[.q2_g64]!, errors[.q2_g128]!)
        XCTAssertLessThan(errors[.q3_g128]!, errors[.q2_g32]!)
        XCTAssertLessThan(errors[.q4_g128]!, errors[.q3_g64]!)
    }

    /// With an importance matrix the important columns' error falls.
    func testImportanceLowersTheWeightedError() {
        let count = 128 * 48
        let x = KQuantizeTests.gaussianRow(count, seed: 29)
        let importance = (0..<count).map { $0 % 7 == 0 ? Float(50) : Float(1) }
        for format in [BlockFormat.q2_g64, .q3_g64] {
            func weighted(_ back: [Float]) -> Double {
                var total = 0.0
                for i in 0..<count { let e = Double(back[i] - x[i]); total += Double(importance[i]) * e * e }
                return total
            }
            XCTAssertLessThan(weighted(roundTrip(format, x, importance: importance)), 0.9 * weighted(roundTrip(format, x, importance: nil)), format.name)
        }
    }

    func roundTrip(_ format: BlockFormat, _ x: [Float], importance: [Float]?) -> [Float] {
        var bytes = [UInt8](repeating: 0, count: format.rowBytes(x.count))
        var back = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xs in
            bytes.withUnsafeMutableBytes { out in
                if let importance {
                    importance.withUnsafeBufferPointer { format.quantizeRow(xs.baseAddress!, count: x.count, into: out.baseAddress!, importance: $0.baseAddress!) }
                } else {
                    format.quantizeRow(xs.baseAddress!, count: x.count, into: out.baseAddress!, importance: nil)
                }
            }
        }
        bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { format.dequantizeRow(b.baseAddress!, count: x.count, into: $0.baseAddress!) } }
        return back
    }
}

/// Learned grids: each block's gradient is (Σ g·q, Σ g) with q the codes the forward pass read, and
/// a stored grid reads back as the F16 values the file keeps.
final class GroupGridGradientTests: XCTestCase {
    func testGridGradientIsTheCodesDotTheGradient() {
        for format in [BlockFormat.q2_g32, .q3_g64, .q4_g128] {
            let count = 2 * format.elementsPerBlock
            var g = SplitMix64(seed: 5)
            func uniform() -> Float { Float(g.next() % 1_000_000) / 500_000 - 1 }
            let x = (0..<count).map { _ in uniform() }, gradient = (0..<count).map { _ in uniform() }
            var blocks = [UInt8](repeating: 0, count: 2 * format.bytesPerBlock)
            var snapped = [Float](repeating: 0, count: count), out = [Float](repeating: 0, count: 4)
            blocks.withUnsafeMutableBytes { b in
                format.quantizeRow(x, count: count, into: b.baseAddress!, importance: nil)
                format.snapToGroupGrid(x, count: count, grid: b.baseAddress!, snapped: &snapped, codes: nil)
                format.groupGridGradient(gradient, snapped: snapped, count: count, grid: b.baseAddress!, into: &out)
                for block in 0..<2 {
                    let (d, m) = format.groupGrid(b.baseAddress!, block: block)
                    var expectedScale: Float = 0, expectedMinimum: Float = 0
                    for c in 0..<format.elementsPerBlock {
                        let i = block * format.elementsPerBlock + c
                        let q = ((snapped[i] - m) / d).rounded()
                        XCTAssertEqual(snapped[i], d * q + m, accuracy: 1e-5)
                        expectedScale += gradient[i] * q; expectedMinimum += gradient[i]
                    }
                    XCTAssertEqual(out[2 * block], expectedScale, accuracy: 1e-4, format.name)
                    XCTAssertEqual(out[2 * block + 1], expectedMinimum, accuracy: 1e-4, format.name)
                }
                let stored = format.setGroupGrid(b.baseAddress!, block: 1, scale: 0.123456, minimum: -0.5)
                XCTAssertEqual(stored.scale, Float(Float16(0.123456)))
                XCTAssertEqual(stored.minimum, -0.5)
                XCTAssertTrue(format.groupGrid(b.baseAddress!, block: 1) == stored)
            }
        }
    }
}
