import XCTest
import PivotKernels

/// Each fast kernel against a plain reference loop (dequantize, then a float dot).
final class QuantizedDotTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()

    /// Byte offsets of each format's f16 scales (and minimums) inside a block, from ggml's structs.
    static func halfOffsets(_ format: BlockFormat) -> [Int] {
        switch format {
        case .q4_0, .q8_0, .q5_0: return [0]
        case .q4_1, .q5_1, .q4_K, .q5_K: return [0, 2]
        case .q2_K: return [80, 82]
        case .q3_K: return [108]
        case .q6_K: return [208]
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128: return [0, 2]
        }
    }

    /// Random blocks of `format` for `rows` × `columns` weights: random bits, with the f16 scales set
    /// to sane values (Q4_1/Q5_1 minimums negative, K-quant super-block scales small).
    func randomBlocks(_ format: BlockFormat, rows: Int, columns: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix64(seed: seed)
        var bytes = (0..<(rows * format.rowBytes(columns))).map { _ in UInt8.random(in: 0...255, using: &g) }
        for b in 0..<(rows * columns / format.elementsPerBlock) {
            let base = b * format.bytesPerBlock
            for (i, offset) in Self.halfOffsets(format).enumerated() {
                let value = i == 0 ? Float.random(in: 0.001...0.05, using: &g)
                    : (format == .q4_1 || format == .q5_1 || format.isExtension ? Float.random(in: -0.3...0.1, using: &g) : Float.random(in: 0.001...0.02, using: &g))
                let scaled = format.isKQuant && i == 0 ? value / 8 : value
                withUnsafeBytes(of: Float16(scaled).bitPattern.littleEndian) { bytes[base + offset] = $0[0]; bytes[base + offset + 1] = $0[1] }
            }
        }
        return bytes
    }

    func referenceDot(_ format: BlockFormat, row: UnsafeRawPointer, x: [Float]) -> Float {
        var w = [Float](repeating: 0, count: x.count)
        w.withUnsafeMutableBufferPointer { format.dequantizeRow(row, count: x.count, into: $0.baseAddress!) }
        var total: Double = 0
        for i in 0..<x.count { total += Double(w[i]) * Double(x[i]) }
        return Float(total)
    }

    /// A row of a batch gets the very bits it gets alone, so batched draft verification and
    /// prefill agree exactly with one-token decoding (odd block counts exercise the tail block).
    func testBatchedRowsAreBitIdenticalToSingleRows() {
        KernelISA.forEachSupported { isa in
            for format in BlockFormat.allCases {
                for columns in format.isKQuant ? [256, 768] : format.elementsPerBlock == 32 ? [256, 288] : [256, 384] {
                    let rows = 21, tokens = 7
                    let weights = randomBlocks(format, rows: rows, columns: columns, seed: 3)
                    var g = SplitMix64(seed: 5)
                    let x = (0..<(tokens * columns)).map { _ in Float.random(in: -3...3, using: &g) }
                    func run(_ first: Int, _ count: Int) -> [Float] {
                        let act = Q8Activations(capacityRows: count, maxColumns: columns)
                        x.withUnsafeBufferPointer { act.quantize($0.baseAddress! + first * columns, rows: count, columns: columns, stride: columns) }
                        var out = [Float](repeating: 0, count: count * rows)
                        weights.withUnsafeBytes { w in
                            out.withUnsafeMutableBufferPointer { o in
                                quantizedMatMul(format, weights: w.baseAddress!, rowBytes: format.rowBytes(columns), outputs: 0..<rows,
                                                act: act, out: o.baseAddress!, outStride: rows)
                            }
                        }
                        return out
                    }
                    let batched = run(0, tokens)
                    for t in 0..<tokens {
                        XCTAssertEqual(Array(batched[(t * rows)..<((t + 1) * rows)]).map(\.bitPattern), run(t, 1).map(\.bitPattern),
                                       "\(isa) \(format), \(columns) columns, token \(t)")
                    }
                }
            }
        }
    }

    func testMatMulMatchesReferenceForEveryFormatAndBatch() {
        KernelISA.forEachSupported { isa in
            let columns = 256, rows = 37
            for format in BlockFormat.allCases {
                let weights = randomBlocks(format, rows: rows, columns: columns, seed: 7)
                for tokens in [1, 3, 4, 9] {
                    var g = SplitMix64(seed: UInt64(tokens))
                    let x = (0..<(tokens * columns)).map { _ in Float.random(in: -2...2, using: &g) }
                    let act = Q8Activations(capacityRows: tokens, maxColumns: columns)
                    x.withUnsafeBufferPointer { act.quantize($0.baseAddress!, rows: tokens, columns: columns, stride: columns) }
                    var out = [Float](repeating: 0, count: tokens * rows)
                    weights.withUnsafeBytes { w in
                        out.withUnsafeMutableBufferPointer { o in
                            quantizedMatMul(format, weights: w.baseAddress!, rowBytes: format.rowBytes(columns), outputs: 0..<rows,
                                            act: act, out: o.baseAddress!, outStride: rows)
                        }
                        for t in 0..<tokens {
                            // The kernel must equal an exact dot with the dequantized int8 activations.
                            let restored = (0..<columns).map { Float(act.quants[t * columns + $0]) * act.scales[t * columns / 32 + $0 / 32] }
                            for r in 0..<rows {
                                let expected = referenceDot(format, row: w.baseAddress! + r * format.rowBytes(columns), x: restored)
                                XCTAssertEqual(out[t * rows + r], expected, accuracy: 1e-4 + abs(expected) * 1e-5,
                                               "\(isa) \(format) token \(t) row \(r)")
                            }
                        }
                    }
                }
            }
        }
    }

    func testActivationQuantizationRoundTrips() {
        let x: [Float] = (0..<64).map { Float($0 - 20) * 0.37 }
        let act = Q8Activations(capacityRows: 1, maxColumns: 64)
        x.withUnsafeBufferPointer { act.quantize($0.baseAddress!, rows: 1, columns: 64, stride: 64) }
        XCTAssertEqual(act.scales[0], 20 * 0.37 / 127, accuracy: 1e-6)
        for b in 0..<2 {
            var sum: Float = 0
            for j in 0..<32 {
                let restored = Float(act.quants[b * 32 + j]) * act.scales[b]
                XCTAssertEqual(restored, x[b * 32 + j], accuracy: act.scales[b] / 2 + 1e-6)
                sum += Float(act.quants[b * 32 + j])
            }
            XCTAssertEqual(act.scaledSums[b], sum * act.scales[b], accuracy: 1e-4)
        }
    }

    func testQ4_1DequantizeLayout() {
        // d = 0.5, m = -1, first byte 0x21: element 0 = low nibble 1, element 16 = high nibble 2.
        var block = [UInt8](repeating: 0, count: 20)
        withUnsafeBytes(of: Float16(0.5).bitPattern) { block[0] = $0[0]; block[1] = $0[1] }
        withUnsafeBytes(of: Float16(-1).bitPattern) { block[2] = $0[0]; block[3] = $0[1] }
        block[4] = 0x21
        var out = [Float](repeating: 0, count: 32)
        block.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { BlockFormat.q4_1.dequantizeRow(b.baseAddress!, count: 32, into: $0.baseAddress!) } }
        XCTAssertEqual(out[0], -0.5)
        XCTAssertEqual(out[16], 0.0)
        XCTAssertEqual(out[1], -1.0)
    }
}


/// Every block format's dequantizer against what llama.cpp's own `gguf` Python package gives for the
/// same bytes (fixture written by scripts/make_dequantize_fixture.py).
final class GGMLLayoutTests: XCTestCase {
    func testDequantizersMatchTheGGUFPackage() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/ggml-dequantize.json")
        let fixture = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: url))
        let ggmlFormats = BlockFormat.allCases.filter { !$0.isExtension }
        XCTAssertTrue(Set(ggmlFormats.map(\.name)).isSubset(of: Set(fixture.keys)))
        for format in ggmlFormats {
            let entry = try XCTUnwrap(fixture[format.name])
            let bytes = entry.byteArray
            let count = entry.values.count
            XCTAssertEqual(bytes.count, format.rowBytes(count))
            var out = [Float](repeating: .nan, count: count)
            bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { format.dequantizeRow(b.baseAddress!, count: count, into: $0.baseAddress!) } }
            var worst: Float = 0
            for i in 0..<count { worst = max(worst, abs(out[i] - entry.values[i]) / max(1, abs(entry.values[i]))) }
            XCTAssertLessThanOrEqual(worst, 1e-6, "\(format.name): largest relative difference")
        }
    }

    /// ggml's reference round-to-nearest quantizers, byte for byte (zeros, outliers, ties included).
    func testBlockQuantizersMatchTheGGUFPackageByteForByte() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/ggml-dequantize.json")
        let fixture = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: url))
        for format in BlockFormat.allCases where !format.isKQuant && !format.isExtension {
            let entry = try XCTUnwrap(fixture["quantize " + format.name])
            let expected = entry.byteArray
            var got = [UInt8](repeating: 0, count: format.rowBytes(entry.values.count))
            entry.values.withUnsafeBufferPointer { x in
                got.withUnsafeMutableBytes { format.quantizeRow(x.baseAddress!, count: entry.values.count, into: $0.baseAddress!) }
            }
            XCTAssertEqual(got.count, expected.count)
            let differing = zip(got, expected).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(format.name): \(differing) bytes differ")
        }
    }

    /// quantize → dequantize stays within half a quantization step (plus the f16 rounding of the scale);
    /// Q4_0/Q5_0's grid is [−8d, 7d] (resp. [−16d, 15d]) with the largest magnitude at −8d, so values
    /// of the other sign beyond 7d clip: up to one whole step there.
    func testRoundTripErrorWithinHalfAStep() {
        var g = SplitMix64(seed: 23)
        let x = (0..<(32 * 64)).map { _ in Float.random(in: -3...3, using: &g) * (Float.random(in: 0...1, using: &g) < 0.02 ? 10 : 1) }
        for format in BlockFormat.allCases where !format.isKQuant && !format.isExtension {
            var bytes = [UInt8](repeating: 0, count: format.rowBytes(x.count))
            var back = [Float](repeating: 0, count: x.count)
            x.withUnsafeBufferPointer { xs in bytes.withUnsafeMutableBytes { format.quantizeRow(xs.baseAddress!, count: x.count, into: $0.baseAddress!) } }
            bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { format.dequantizeRow(b.baseAddress!, count: x.count, into: $0.baseAddress!) } }
            let levels: Float = [.q8_0: 254, .q4_0: 16, .q5_0: 32, .q4_1: 15, .q5_1: 31][format]!
            for b in 0..<(x.count / 32) {
                let block = x[(b * 32)..<((b + 1) * 32)]
                let range = format == .q4_1 || format == .q5_1 ? block.max()! - block.min()! : 2 * block.map(abs).max()!
                let step = range / levels
                let allowed = format == .q4_0 || format == .q5_0 ? step : step * 0.5
                for j in block.indices {
                    XCTAssertLessThanOrEqual(abs(back[j] - x[j]), allowed * 1.01 + abs(x[j]) * 2e-3 + 1e-6, "\(format.name) block \(b)")
                }
            }
        }
    }

    struct Entry: Decodable {
        let bytes: String
        let values: [Float]
        var byteArray: [UInt8] {
            var out: [UInt8] = [], hex = bytes[...]
            while !hex.isEmpty { out.append(UInt8(hex.prefix(2), radix: 16)!); hex = hex.dropFirst(2) }
            return out
        }
    }
}
