#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

/// Q3_K in the eight-row interleaved layout (see `InterleavedLayout`), per super-block of 256
/// columns: the 8 rows' f16 d (16 bytes); their signed 6-bit scales as int8, one per 16 columns
/// (group-major: byte 8·group + r, 128 bytes, as Q6_K); then per 32-column sub-block the codes'
/// low 2 bits in two vectors of 32 bytes (vector h, byte 4r+i, bits 2j..2j+1 = row r's code
/// 4(4h+j)+i) and their high bits in one (byte 4r+i, bit k = row r's code 4k+i). A code u is 0...7
/// and a weight d·sc·(u − 4). 912 bytes per super-block and group, 3.6% more than the file's 8 × 110:
/// the scales unpacked to bytes.
extension InterleavedLayout {
    static let superBlockBytesK3 = 16 + 128 + 8 * 96

    /// Code u (0...7, weight ∝ u − 4) of column c of a GGML Q3_K super-block.
    static func codeK3(_ block: UnsafeRawPointer, _ c: Int) -> UInt8 {
        let half = c / 128, plane = (c % 128) / 32, l = c % 32
        let low = (block.load(fromByteOffset: 32 + 32 * half + l, as: UInt8.self) >> UInt8(2 * plane)) & 3
        let high = (block.load(fromByteOffset: l, as: UInt8.self) >> UInt8(c / 32)) & 1
        return low | high << 2
    }

    func repackK3(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        for group in 0..<(rows / 8) {
            for s in 0..<(blocks / 8) {
                let dst = out + group * groupBytes + s * blockBytes
                for r in 0..<8 {
                    let block = source + (group * 8 + r) * rowBytes + s * 110
                    dst.storeBytes(of: block.loadUnaligned(fromByteOffset: 108, as: UInt16.self), toByteOffset: 2 * r, as: UInt16.self)
                    for scaleGroup in 0..<16 {
                        dst.storeBytes(of: Int8(BlockFormat.scaleQ3K(scaleGroup, block + 96)), toByteOffset: 16 + 8 * scaleGroup + r, as: Int8.self)
                    }
                    for g in 0..<8 {
                        let codes = dst + 144 + 96 * g
                        for i in 0..<4 {
                            var high: UInt8 = 0
                            for k in 0..<8 { high |= (Self.codeK3(block, 32 * g + 4 * k + i) >> 2) << UInt8(k) }
                            codes.storeBytes(of: high, toByteOffset: 64 + 4 * r + i, as: UInt8.self)
                            for h in 0..<2 {
                                var low: UInt8 = 0
                                for j in 0..<4 { low |= (Self.codeK3(block, 32 * g + 4 * (4 * h + j) + i) & 3) << UInt8(2 * j) }
                                codes.storeBytes(of: low, toByteOffset: 32 * h + 4 * r + i, as: UInt8.self)
                            }
                        }
                    }
                }
            }
        }
    }

    func dequantizeRowK3(_ group: UnsafeRawPointer, _ r: Int, into out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let header = group + (b / 8) * blockBytes, codes = header + 144 + 96 * (b % 8)
            let d = loadHalf(header, 2 * r)
            for c in 0..<32 {
                let scale = Float(header.load(fromByteOffset: 16 + 8 * (2 * (b % 8) + c / 16) + r, as: Int8.self))
                let k = c / 4, i = c % 4
                let low = (codes.load(fromByteOffset: 32 * (k / 4) + 4 * r + i, as: UInt8.self) >> UInt8(2 * (k % 4))) & 3
                let high = (codes.load(fromByteOffset: 64 + 4 * r + i, as: UInt8.self) >> UInt8(k)) & 1
                out[b * 32 + c] = d * scale * Float(Int(low | high << 2) - 4)
            }
        }
    }
}

#if arch(x86_64)
/// The 32 codes (0...7) of step k of a Q3_K sub-block: two bits from `plane` (the vector of steps
/// 4(k/4)...), the third from `high`.
@inline(__always)
func interleavedCodesK3(_ plane: __m256i, _ k: Int, high: __m256i) -> __m256i {
    let low = _mm256_and_si256(_mm256_srli_epi16(plane, Int32(2 * (k % 4))), _mm256_set1_epi8(3))
    let moved = k >= 2 ? _mm256_srli_epi16(high, Int32(k - 2)) : _mm256_slli_epi16(high, Int32(2 - k))
    return _mm256_or_si256(low, _mm256_and_si256(moved, _mm256_set1_epi8(4)))
}

/// Eight rows × one token; each half's four steps summed in 16 bits (≤ 4·2·7·127), then widened.
@inline(__always)
func interleavedDotK3x1(_ group: UnsafeRawPointer, _ a: Q8Row, blocks: Int, prefetchGroupBytes: Int = 0) -> __m256 {
    var acc = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchShare(group, b, ahead: prefetchGroupBytes, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let header = group + (b / 8) * InterleavedLayout.superBlockBytesK3, codes = header + 144 + 96 * (b % 8)
        let d = loadHalves8(header), high = loadBytes32(codes + 64)
        for h in 0..<2 {
            let plane = loadBytes32(codes + 32 * h)
            var p = _mm256_setzero_si256()
            for j in 0..<4 {
                let k = 4 * h + j
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(interleavedCodesK3(plane, k, high: high), stepActivations(a, b, k)))
            }
            acc = accumulateCenteredHalf(acc, _mm256_madd_epi16(p, ones), scale: scalesK6(header, d, 2 * (b % 8) + h), offsetShift: 2, a, b, h)
        }
    }
    return acc
}

@inline(__always)
func interleavedDotK3x4(_ group: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                        blocks: Int) -> (__m256, __m256, __m256, __m256) {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        let header = group + (b / 8) * InterleavedLayout.superBlockBytesK3, codes = header + 144 + 96 * (b % 8)
        let d = loadHalves8(header), high = loadBytes32(codes + 64)
        for h in 0..<2 {
            let plane = loadBytes32(codes + 32 * h)
            var p0 = _mm256_setzero_si256(), p1 = _mm256_setzero_si256(), p2 = _mm256_setzero_si256(), p3 = _mm256_setzero_si256()
            for j in 0..<4 {
                let k = 4 * h + j
                let w = interleavedCodesK3(plane, k, high: high)
                p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(w, stepActivations(a0, b, k)))
                p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(w, stepActivations(a1, b, k)))
                p2 = _mm256_add_epi16(p2, _mm256_maddubs_epi16(w, stepActivations(a2, b, k)))
                p3 = _mm256_add_epi16(p3, _mm256_maddubs_epi16(w, stepActivations(a3, b, k)))
            }
            let scale = scalesK6(header, d, 2 * (b % 8) + h)
            acc0 = accumulateCenteredHalf(acc0, _mm256_madd_epi16(p0, ones), scale: scale, offsetShift: 2, a0, b, h)
            acc1 = accumulateCenteredHalf(acc1, _mm256_madd_epi16(p1, ones), scale: scale, offsetShift: 2, a1, b, h)
            acc2 = accumulateCenteredHalf(acc2, _mm256_madd_epi16(p2, ones), scale: scale, offsetShift: 2, a2, b, h)
            acc3 = accumulateCenteredHalf(acc3, _mm256_madd_epi16(p3, ones), scale: scale, offsetShift: 2, a3, b, h)
        }
    }
    return (acc0, acc1, acc2, acc3)
}
#endif
