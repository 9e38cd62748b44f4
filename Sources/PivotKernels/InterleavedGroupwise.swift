#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Pivot's group-wise types (Q2_G*, Q3_G*, Q4_G*; see `GroupFormats.swift`) in the eight-row
/// interleaved layout, so LLM-MQ files prefill on the same tiles as the GGML types. Per group of G
/// columns (one header for its G/32 runs of 32):
/// - the 8 rows' f16 scales d (16 bytes), then their f16 minimums m (16 bytes);
/// - per run, the codes: 4-bit as the block-32 nibble vectors (128 bytes); 2- and 3-bit as two
///   vectors of 2-bit planes (vector h, byte 4r+i, bits 2j..2j+1 = row r's code 4(4h+j)+i), and for
///   3-bit one vector of third bits (byte 4r+i, bit k = bit 2 of row r's code 4k+i), as Q3_K's.
/// A weight is d·q + m, as in the file. Same size as the file (8 × (4 + runs · 8, 12 or 16) bytes):
/// a group-wise row in the interleaved form reads no more bytes per token than in the file's.
extension InterleavedLayout {
    /// Bytes of one run's codes across the 8 rows.
    static func groupwiseRunBytes(_ format: BlockFormat) -> Int {
        switch format.groupBits {
        case 4: return 128
        case 3: return 96
        default: return 64
        }
    }

    /// Bytes of one group (G columns) across the 8 rows.
    static func groupwiseBlockBytes(_ format: BlockFormat) -> Int { 32 + format.runsPerGroup * groupwiseRunBytes(format) }

    func repackGroupwise(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        let runs = format.runsPerGroup, runBytes = Self.groupwiseRunBytes(format), bits = format.groupBits!
        for group in 0..<(rows / 8) {
            for s in 0..<(blocks / runs) {
                let dst = out + group * groupBytes + s * blockBytes
                for r in 0..<8 {
                    let block = source + (group * 8 + r) * rowBytes + s * format.bytesPerBlock
                    dst.storeBytes(of: block.loadUnaligned(as: UInt16.self), toByteOffset: 2 * r, as: UInt16.self)
                    dst.storeBytes(of: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self), toByteOffset: 16 + 2 * r, as: UInt16.self)
                    for run in 0..<runs {
                        let codes = dst + 32 + runBytes * run
                        var quants = SIMD32<Int8>()
                        #if arch(x86_64)
                        quants = unsafeBitCast(groupwiseRunCodes(block, run, bits: bits, runs: runs), to: SIMD32<Int8>.self)
                        #else
                        format.groupwiseCodes(block, run, into: &quants)
                        #endif
                        func code(_ c: Int) -> UInt8 { UInt8(quants[c]) }
                        for i in 0..<4 {
                            if bits == 4 {
                                for j in 0..<4 {
                                    codes.storeBytes(of: code(4 * j + i) | code(16 + 4 * j + i) << 4, toByteOffset: 32 * j + 4 * r + i, as: UInt8.self)
                                }
                                continue
                            }
                            for h in 0..<2 {
                                var low: UInt8 = 0
                                for j in 0..<4 { low |= (code(4 * (4 * h + j) + i) & 3) << UInt8(2 * j) }
                                codes.storeBytes(of: low, toByteOffset: 32 * h + 4 * r + i, as: UInt8.self)
                            }
                            if bits == 3 {
                                var high: UInt8 = 0
                                for k in 0..<8 { high |= (code(4 * k + i) >> 2) << UInt8(k) }
                                codes.storeBytes(of: high, toByteOffset: 64 + 4 * r + i, as: UInt8.self)
                            }
                        }
                    }
                }
            }
        }
    }

    func dequantizeRowGroupwise(_ group: UnsafeRawPointer, _ r: Int, into out: UnsafeMutablePointer<Float>) {
        let runs = format.runsPerGroup, runBytes = Self.groupwiseRunBytes(format), bits = format.groupBits!
        for b in 0..<blocks {
            let header = group + (b / runs) * blockBytes, codes = header + 32 + runBytes * (b % runs)
            let d = loadHalf(header, 2 * r), m = loadHalf(header, 16 + 2 * r)
            for c in 0..<32 {
                let q: UInt8
                if bits == 4 {
                    q = code(codes, r, c)
                } else {
                    let k = c / 4, i = c % 4
                    let low = (codes.load(fromByteOffset: 32 * (k / 4) + 4 * r + i, as: UInt8.self) >> UInt8(2 * (k % 4))) & 3
                    let high = bits == 3 ? (codes.load(fromByteOffset: 64 + 4 * r + i, as: UInt8.self) >> UInt8(k)) & 1 : 0
                    q = low | high << 2
                }
                out[b * 32 + c] = d * Float(q) + m
            }
        }
    }
}
