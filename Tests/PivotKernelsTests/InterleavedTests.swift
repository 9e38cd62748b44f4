import XCTest
import PivotKernels

/// The eight-row interleaved layout: repacking loses nothing, and its kernels equal an exact dot.
extension QuantizedDotTests {
    static let interleavedFormats: [BlockFormat] = [.q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_0] + BlockFormat.extensionFormats

    /// Columns for a test matrix: whole super-blocks for K-quants, an odd number of 128-column
    /// groups for the group-wise types, five blocks of 32 otherwise.
    static func testColumns(_ format: BlockFormat) -> Int { format.isKQuant ? 512 : format.isExtension ? 384 : 160 }

    /// `rows` GGML rows of `format` repacked; returns the layout and the packed bytes.
    func repacked(_ format: BlockFormat, _ source: [UInt8], rows: Int, columns: Int) -> (InterleavedLayout, [UInt8]) {
        let layout = InterleavedLayout(format: format, rows: rows, columns: columns)!
        var packed = [UInt8](repeating: 0, count: rows / 8 * layout.groupBytes)
        XCTAssertEqual(packed.count, format == .q4_K ? source.count / 144 * 148 : format == .q3_K ? source.count / 110 * 114
                       : format == .q5_K ? source.count / 176 * 180 : source.count,
                       "the file's size (Q4_K, Q3_K: scales unpacked to bytes)")
        source.withUnsafeBytes { s in
            packed.withUnsafeMutableBytes { layout.repack(s.baseAddress!, rowBytes: format.rowBytes(columns), rows: rows, into: $0.baseAddress!) }
        }
        return (layout, packed)
    }

    func testInterleavedRepackKeepsEveryWeight() {
        for format in Self.interleavedFormats {
            let rows = 16, columns = Self.testColumns(format)
            let source = randomBlocks(format, rows: rows, columns: columns, seed: 11)
            let (layout, packed) = repacked(format, source, rows: rows, columns: columns)
            for r in 0..<rows {
                var expected = [Float](repeating: 0, count: columns), actual = expected
                source.withUnsafeBytes { s in
                    expected.withUnsafeMutableBufferPointer { format.dequantizeRow(s.baseAddress! + r * format.rowBytes(columns), count: columns, into: $0.baseAddress!) }
                }
                packed.withUnsafeBytes { p in actual.withUnsafeMutableBufferPointer { layout.dequantizeRow(p.baseAddress!, row: r, into: $0.baseAddress!) } }
                XCTAssertEqual(actual, expected, "\(format) row \(r)")
            }
        }
        XCTAssertNil(InterleavedLayout(format: .q4_0, rows: 12, columns: 64), "rows must come in eights")
        XCTAssertNil(InterleavedLayout(format: .q2_g128, rows: 16, columns: 192), "group-wise rows are whole groups")
        XCTAssertNil(InterleavedLayout(format: .q4_K, rows: 16, columns: 288), "K-quant rows are whole super-blocks")
    }

    /// Against a float dot of the dequantized weights and int8 activations, for batches that use the
    /// four-token tile, the one-token tail and both, on every kernel path this CPU runs; each token's
    /// bits equal its result alone, and the VNNI paths' bits equal the AVX2 path's. Five groups
    /// in calls of 1, 3 and 1 (as threads split them) give the VNNI path both pairs and odd groups.
    func testInterleavedMatMulMatchesReferenceAndIsBatchInvariant() {
        for format in Self.interleavedFormats {
            let rows = 40, columns = Self.testColumns(format)
            let source = randomBlocks(format, rows: rows, columns: columns, seed: 13)
            let (layout, packed) = repacked(format, source, rows: rows, columns: columns)
            func run(_ x: [Float], tokens: Int, calls: [Range<Int>]) -> ([Float], Q8Activations) {
                let act = Q8Activations(capacityRows: tokens, maxColumns: columns)
                x.withUnsafeBufferPointer { act.quantize($0.baseAddress!, rows: tokens, columns: columns, stride: columns) }
                var out = [Float](repeating: .nan, count: tokens * rows)
                packed.withUnsafeBytes { p in
                    out.withUnsafeMutableBufferPointer {
                        for groups in calls {
                            interleavedMatMul(layout, weights: p.baseAddress!, groups: groups, act: act, out: $0.baseAddress!, outStride: rows)
                        }
                    }
                }
                return (out, act)
            }
            for tokens in [1, 4, 7] {
                var g = SplitMix64(seed: UInt64(100 + tokens))
                let x = (0..<(tokens * columns)).map { _ in Float.random(in: -2...2, using: &g) }
                var byPath: [KernelISA: [Float]] = [:]
                KernelISA.forEachSupported { isa in
                    let (out, act) = run(x, tokens: tokens, calls: [0..<1, 1..<4, 4..<5])
                    byPath[isa] = out
                    source.withUnsafeBytes { s in
                        for t in 0..<tokens {
                            let restored = (0..<columns).map { Float(act.quants[t * columns + $0]) * act.scales[t * columns / 32 + $0 / 32] }
                            for r in 0..<rows {
                                let expected = referenceDot(format, row: s.baseAddress! + r * format.rowBytes(columns), x: restored)
                                XCTAssertEqual(out[t * rows + r], expected, accuracy: 1e-4 + abs(expected) * 1e-5, "\(isa) \(format) token \(t) row \(r)")
                            }
                            let alone = run(Array(x[(t * columns)..<((t + 1) * columns)]), tokens: 1, calls: [0..<5]).0
                            XCTAssertEqual(Array(out[(t * rows)..<((t + 1) * rows)]).map(\.bitPattern), alone.map(\.bitPattern),
                                           "\(isa) \(format): token \(t) of \(tokens) differs from the same token alone")
                        }
                    }
                }
                for vnni in [KernelISA.avx512, .avxVNNI] {
                    if let fast = byPath[vnni], let avx2 = byPath[.avx2] {
                        XCTAssertEqual(fast.map(\.bitPattern), avx2.map(\.bitPattern), "\(format), \(tokens) tokens: \(vnni) and AVX2 differ")
                    }
                }
            }
        }
    }
}
