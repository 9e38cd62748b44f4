#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

/// Q2_K in the eight-row interleaved layout (see `InterleavedLayout`), per super-block of 256
/// columns: the 8 rows' f16 d and dmin (16 + 16 bytes); their scale bytes as in the file (low nibble
/// scale, high nibble minimum), one per 16 columns, group-major (byte 8·group + r, 128 bytes); then
/// per 32-column sub-block the 2-bit codes in two vectors of 32 bytes (vector h, byte 4r+i, bits
/// 2j..2j+1 = row r's code 4(4h+j)+i). A weight is d·sc·q − dmin·m. Same size as the file (8 × 84):
/// the mixed-precision (LLM-MQ) files keep ffn_down in Q2_K, and this is what lets them decode as
/// fast as uniform files of their size.
extension InterleavedLayout {
    static let superBlockBytesK2 = 32 + 128 + 8 * 64

    /// Code (0...3) of column c of a GGML Q2_K super-block.
    static func codeK2(_ block: UnsafeRawPointer, _ c: Int) -> UInt8 {
        let half = c / 128, plane = (c % 128) / 32, l = c % 32
        return (block.load(fromByteOffset: 16 + 32 * half + l, as: UInt8.self) >> UInt8(2 * plane)) & 3
    }

    func repackK2(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        for group in 0..<(rows / 8) {
            for s in 0..<(blocks / 8) {
                let dst = out + group * groupBytes + s * blockBytes
                for r in 0..<8 {
                    let block = source + (group * 8 + r) * rowBytes + s * 84
                    dst.storeBytes(of: block.loadUnaligned(fromByteOffset: 80, as: UInt16.self), toByteOffset: 2 * r, as: UInt16.self)
                    dst.storeBytes(of: block.loadUnaligned(fromByteOffset: 82, as: UInt16.self), toByteOffset: 16 + 2 * r, as: UInt16.self)
                    for scaleGroup in 0..<16 {
                        dst.storeBytes(of: block.load(fromByteOffset: scaleGroup, as: UInt8.self), toByteOffset: 32 + 8 * scaleGroup + r, as: UInt8.self)
                    }
                    for g in 0..<8 {
                        let codes = dst + 160 + 64 * g
                        for i in 0..<4 {
                            for h in 0..<2 {
                                var packed: UInt8 = 0
                                for j in 0..<4 { packed |= Self.codeK2(block, 32 * g + 4 * (4 * h + j) + i) << UInt8(2 * j) }
                                codes.storeBytes(of: packed, toByteOffset: 32 * h + 4 * r + i, as: UInt8.self)
                            }
                        }
                    }
                }
            }
        }
    }

    func dequantizeRowK2(_ group: UnsafeRawPointer, _ r: Int, into out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let header = group + (b / 8) * blockBytes, codes = header + 160 + 64 * (b % 8)
            let d = loadHalf(header, 2 * r), dmin = loadHalf(header, 16 + 2 * r)
            for c in 0..<32 {
                let scale = header.load(fromByteOffset: 32 + 8 * (2 * (b % 8) + c / 16) + r, as: UInt8.self)
                let k = c / 4, i = c % 4
                let q = (codes.load(fromByteOffset: 32 * (k / 4) + 4 * r + i, as: UInt8.self) >> UInt8(2 * (k % 4))) & 3
                out[b * 32 + c] = d * Float(scale & 0x0F) * Float(q) - dmin * Float(scale >> 4)
            }
        }
    }
}

#if arch(x86_64)
/// The 8 rows' (d·sc, dmin·m) for scale group `scaleGroup` of a Q2_K super-block header.
@inline(__always)
func scalesK2(_ header: UnsafeRawPointer, _ scaleGroup: Int) -> (__m256, __m256) {
    let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((header + 32 + 8 * scaleGroup).assumingMemoryBound(to: __m128i.self)))
    let scale = _mm256_cvtepi32_ps(_mm256_and_si256(bytes, _mm256_set1_epi32(0x0F)))
    let minimum = _mm256_cvtepi32_ps(_mm256_srli_epi32(bytes, 4))
    return (_mm256_mul_ps(loadHalves8(header), scale), _mm256_mul_ps(loadHalves8(header + 16), minimum))
}

/// acc += d·sc · s·Σq·a − dmin·m · s·Σa for one token and one 16-column half.
@inline(__always)
func accumulateHalfK2(_ acc: __m256, _ sums: __m256i, scale: __m256, minimum: __m256, _ a: Q8Row, _ b: Int, _ h: Int) -> __m256 {
    let scaled = _mm256_fmadd_ps(scale, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a.scales[b])), acc)
    return _mm256_fnmadd_ps(minimum, _mm256_set1_ps(a.scales[b] * Float(a.halfSums[2 * b + h])), scaled)
}

@inline(__always)
func interleavedCodesK2(_ plane: __m256i, _ j: Int) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16(plane, Int32(2 * j)), _mm256_set1_epi8(3))
}

/// Eight rows × one token; each half's four steps summed in 16 bits (≤ 4·2·3·127), then widened.
@inline(__always)
func interleavedDotK2x1(_ group: UnsafeRawPointer, _ a: Q8Row, blocks: Int, prefetchGroupBytes: Int = 0) -> __m256 {
    var acc = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchShare(group, b, ahead: prefetchGroupBytes, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let header = group + (b / 8) * InterleavedLayout.superBlockBytesK2, codes = header + 160 + 64 * (b % 8)
        for h in 0..<2 {
            let plane = loadBytes32(codes + 32 * h)
            var p = _mm256_setzero_si256()
            for j in 0..<4 { p = _mm256_add_epi16(p, _mm256_maddubs_epi16(interleavedCodesK2(plane, j), stepActivations(a, b, 4 * h + j))) }
            let (scale, minimum) = scalesK2(header, 2 * (b % 8) + h)
            acc = accumulateHalfK2(acc, _mm256_madd_epi16(p, ones), scale: scale, minimum: minimum, a, b, h)
        }
    }
    return acc
}

@inline(__always)
func interleavedDotK2x4(_ group: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                        blocks: Int) -> (__m256, __m256, __m256, __m256) {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        let header = group + (b / 8) * InterleavedLayout.superBlockBytesK2, codes = header + 160 + 64 * (b % 8)
        for h in 0..<2 {
            let plane = loadBytes32(codes + 32 * h)
            var p0 = _mm256_setzero_si256(), p1 = _mm256_setzero_si256(), p2 = _mm256_setzero_si256(), p3 = _mm256_setzero_si256()
            for j in 0..<4 {
                let k = 4 * h + j, w = interleavedCodesK2(plane, j)
                p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(w, stepActivations(a0, b, k)))
                p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(w, stepActivations(a1, b, k)))
                p2 = _mm256_add_epi16(p2, _mm256_maddubs_epi16(w, stepActivations(a2, b, k)))
                p3 = _mm256_add_epi16(p3, _mm256_maddubs_epi16(w, stepActivations(a3, b, k)))
            }
            let (scale, minimum) = scalesK2(header, 2 * (b % 8) + h)
            acc0 = accumulateHalfK2(acc0, _mm256_madd_epi16(p0, ones), scale: scale, minimum: minimum, a0, b, h)
            acc1 = accumulateHalfK2(acc1, _mm256_madd_epi16(p1, ones), scale: scale, minimum: minimum, a1, b, h)
            acc2 = accumulateHalfK2(acc2, _mm256_madd_epi16(p2, ones), scale: scale, minimum: minimum, a2, b, h)
            acc3 = accumulateHalfK2(acc3, _mm256_madd_epi16(p3, ones), scale: scale, minimum: minimum, a3, b, h)
        }
    }
    return (acc0, acc1, acc2, acc3)
}
#endif
