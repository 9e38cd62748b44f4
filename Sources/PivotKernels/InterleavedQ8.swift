#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

/// Q8_0 in the eight-row interleaved layout (see `InterleavedLayout`), per block of 32 columns: the
/// 8 rows' f16 d (16 bytes), then 8 vectors of 32 signed codes, vector k byte 4r+i = row r's code
/// 4k+i. A weight is d·q. Same size as the file (8 × 34 bytes).
///
/// Unlike the 4-bit formats, two steps cannot share a 16-bit sum on AVX2 (|q| ≤ 128: one
/// `vpmaddubsw` pair is already up to 32512), so each step is widened on its own; the AVX-512 VNNI
/// kernel adds straight into int32 and gets the same integers.
extension InterleavedLayout {
    static let blockBytesQ8 = 16 + 8 * 32

    func repackQ8(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        for group in 0..<(rows / 8) {
            for b in 0..<blocks {
                let dst = out + group * groupBytes + b * blockBytes
                for r in 0..<8 {
                    let block = source + (group * 8 + r) * rowBytes + b * 34
                    dst.storeBytes(of: block.loadUnaligned(as: UInt16.self), toByteOffset: 2 * r, as: UInt16.self)
                    for c in 0..<32 {
                        dst.storeBytes(of: block.load(fromByteOffset: 2 + c, as: UInt8.self), toByteOffset: 16 + 32 * (c / 4) + 4 * r + c % 4, as: UInt8.self)
                    }
                }
            }
        }
    }

    func dequantizeRowQ8(_ group: UnsafeRawPointer, _ r: Int, into out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = group + b * blockBytes
            let d = loadHalf(block, 2 * r)
            for c in 0..<32 { out[b * 32 + c] = d * Float(block.load(fromByteOffset: 16 + 32 * (c / 4) + 4 * r + c % 4, as: Int8.self)) }
        }
    }
}

#if arch(x86_64)
/// acc += d · s·Σq·a for one token and block (the tail the VNNI kernel repeats lane for lane).
@inline(__always)
func accumulateBlockQ8(_ acc: __m256, _ sums: __m256i, d: __m256, _ a: Q8Row, _ b: Int) -> __m256 {
    _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a.scales[b])), acc)
}

/// Σ q·a of one step for one token: |q| against a with q's signs, pairs widened to int32.
@inline(__always)
func stepProductQ8(_ magnitude: __m256i, _ w: __m256i, _ a: Q8Row, _ b: Int, _ k: Int) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(stepActivations(a, b, k), w)), _mm256_set1_epi16(1))
}

/// Eight rows × one token.
@inline(__always)
func interleavedDotQ8x1(_ group: UnsafeRawPointer, _ a: Q8Row, blocks: Int, prefetchGroupBytes: Int = 0) -> __m256 {
    var acc = _mm256_setzero_ps()
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchShare(group, b, ahead: prefetchGroupBytes, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let block = group + b * InterleavedLayout.blockBytesQ8
        var sums = _mm256_setzero_si256()
        for k in 0..<8 {
            let w = loadBytes32(block + 16 + 32 * k)
            sums = _mm256_add_epi32(sums, stepProductQ8(_mm256_sign_epi8(w, w), w, a, b, k))
        }
        acc = accumulateBlockQ8(acc, sums, d: loadHalves8(block), a, b)
    }
    return acc
}

@inline(__always)
func interleavedDotQ8x4(_ group: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                        blocks: Int) -> (__m256, __m256, __m256, __m256) {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    for b in 0..<blocks {
        let block = group + b * InterleavedLayout.blockBytesQ8
        var s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256(), s2 = _mm256_setzero_si256(), s3 = _mm256_setzero_si256()
        for k in 0..<8 {
            let w = loadBytes32(block + 16 + 32 * k), magnitude = _mm256_sign_epi8(w, w)
            s0 = _mm256_add_epi32(s0, stepProductQ8(magnitude, w, a0, b, k))
            s1 = _mm256_add_epi32(s1, stepProductQ8(magnitude, w, a1, b, k))
            s2 = _mm256_add_epi32(s2, stepProductQ8(magnitude, w, a2, b, k))
            s3 = _mm256_add_epi32(s3, stepProductQ8(magnitude, w, a3, b, k))
        }
        let d = loadHalves8(block)
        acc0 = accumulateBlockQ8(acc0, s0, d: d, a0, b)
        acc1 = accumulateBlockQ8(acc1, s1, d: d, a1, b)
        acc2 = accumulateBlockQ8(acc2, s2, d: d, a2, b)
        acc3 = accumulateBlockQ8(acc3, s3, d: d, a3, b)
    }
    return (acc0, acc1, acc2, acc3)
}
#endif
