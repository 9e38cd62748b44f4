#if arch(x86_64)
import _Builtin_intrinsics.intel

/// Interleaved block-32 and K-quant weights (PivotKernels' `InterleavedLayout`) against Q8
/// activations with AVX-512 VNNI: two groups of 8 rows side by side in one 512-bit register, so
/// one `vpdpbusd` multiplies 4 codes of each of 16 rows by 4 broadcast activation bytes and adds
/// them straight into the rows' int32 sums (the AVX2 kernel needs `vpmaddubsw`, a 16-bit add and a
/// `vpmaddwd` for the same on 8 rows).
///
/// The integer sums per block are exact on both paths, and the float tail below is the AVX2
/// kernel's operation for operation per lane, so every output is bit-identical to the AVX2 path's.

@inline(__always) func load256(_ p: UnsafeRawPointer) -> __m256i { _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self)) }

/// 32 bytes of the first group in the low half, 32 of the second in the high half.
@inline(__always) func loadPair(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> __m512i {
    _mm512_mask_broadcast_i64x4(_mm512_castsi256_si512(load256(p0)), 0xF0, load256(p1))
}

/// 8 f16 values of each group as 16 floats.
@inline(__always) func loadHalves16(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_m128i(_mm_loadu_si128(p1.assumingMemoryBound(to: __m128i.self)),
                                     _mm_loadu_si128(p0.assumingMemoryBound(to: __m128i.self))))
}

/// 8 bytes of each group, as 16 int32 lanes (unsigned or signed bytes).
@inline(__always) func loadBytes16(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> __m128i {
    _mm_unpacklo_epi64(_mm_loadl_epi64(p0.assumingMemoryBound(to: __m128i.self)), _mm_loadl_epi64(p1.assumingMemoryBound(to: __m128i.self)))
}

/// Four activation bytes of step k of block b, repeated in every 32-bit lane.
@inline(__always) func stepActivations(_ a: VNNIRow, _ b: Int, _ k: Int) -> __m512i {
    _mm512_set1_epi32(UnsafeRawPointer(a.quants).loadUnaligned(fromByteOffset: b * 32 + 4 * k, as: Int32.self))
}

/// acc += d·(s·Σq·a) + m·(s·Σa): the AVX2 kernel's `accumulateBlock`, lane for lane.
@inline(__always)
func accumulateBlock(_ acc: __m512, _ sums: __m512i, d: __m512, m: __m512, _ a: VNNIRow, _ b: Int) -> __m512 {
    let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_set1_ps(a.scales[b]))
    return _mm512_fmadd_ps(m, _mm512_set1_ps(a.sums[b]), _mm512_fmadd_ps(d, scaled, acc))
}

/// Moves bit k of every byte of the fifth-bit vector to bit 4 (0x10), other bits cleared.
@inline(__always) func fifthBit(_ bits: __m512i, _ k: Int) -> __m512i {
    let moved = k <= 4 ? _mm512_slli_epi16(bits, UInt32(4 - k)) : _mm512_srli_epi16(bits, UInt32(k - 4))
    return _mm512_and_si512(moved, _mm512_set1_epi8(0x10))
}

/// How the tiles see a format (constant after inlining): PivotKernels' `InterleavedKind`.
struct PairKind {
    /// Nibbles (+ fifth bits) with a scale and minimum per 32 columns, 2-bit planes (+ third bits)
    /// with a scale and minimum per group (group-wise types), or a format with its own kernel.
    enum Codes { case nibbles, planes, twoBit, threeBit, sixBit, eightBit }
    var codes = Codes.nibbles
    /// `hasHighBit`: a bit above the nibble (fifth) or the 2-bit plane (third), in its own vector.
    var hasMin = false, hasHighBit = false, offset: Float = 0, kQuant = false
    /// Group-wise types: 2^runShift blocks of 32 share one header (d, m) of `blockBytes`.
    var grouped = false, runShift = 0
    var blockBytes: Int

    var highBitsOffset: Int { codes == .planes ? 64 : 128 }
    var runBytes: Int { codes == .planes ? (hasHighBit ? 96 : 64) : 128 }

    /// (d, m) of 32-column block b for the 16 rows, and where each group's codes start.
    @inline(__always)
    func block(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ b: Int) -> (__m512, __m512, UnsafeRawPointer, UnsafeRawPointer) {
        if grouped {
            let h0 = g0 + (b >> runShift) * blockBytes, h1 = g1 + (b >> runShift) * blockBytes
            let codes = 32 + runBytes * (b & ((1 << runShift) - 1))
            return (loadHalves16(h0, h1), loadHalves16(h0 + 16, h1 + 16), h0 + codes, h1 + codes)
        }
        if kQuant {
            let h0 = g0 + (b / 8) * blockBytes, h1 = g1 + (b / 8) * blockBytes, sub = b % 8
            let d = _mm512_mul_ps(loadHalves16(h0, h1), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(loadBytes16(h0 + 32 + 8 * sub, h1 + 32 + 8 * sub))))
            let m = _mm512_mul_ps(loadHalves16(h0 + 16, h1 + 16), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(loadBytes16(h0 + 96 + 8 * sub, h1 + 96 + 8 * sub))))
            let codes = 160 + (hasHighBit ? 160 : 128) * sub
            return (d, _mm512_sub_ps(_mm512_setzero_ps(), m), h0 + codes, h1 + codes)
        }
        let p0 = g0 + b * blockBytes, p1 = g1 + b * blockBytes
        let d = loadHalves16(p0, p1)
        let m = hasMin ? loadHalves16(p0 + 16, p1 + 16) : _mm512_mul_ps(d, _mm512_set1_ps(offset))
        let codes = hasMin ? 32 : 16
        return (d, m, p0 + codes, p1 + codes)
    }
}

/// The 2-bit plane codes of step k (plane = the vector of steps 4(k/4)...), with bit k of `high`
/// as the third bit when there is one.
@inline(__always) func planeCodes(_ plane: __m512i, _ k: Int, high: __m512i?) -> __m512i {
    let low = _mm512_and_si512(_mm512_srli_epi16(plane, UInt32(2 * (k % 4))), _mm512_set1_epi8(3))
    guard let high else { return low }
    let moved = k >= 2 ? _mm512_srli_epi16(high, UInt32(k - 2)) : _mm512_slli_epi16(high, UInt32(2 - k))
    return _mm512_or_si512(low, _mm512_and_si512(moved, _mm512_set1_epi8(4)))
}

/// `prefetchShare` of the next pair for both groups of a pair (`prefetchGroupBytes` > 0 in the
/// kernels below: decode, one token).
@inline(__always)
func prefetchPair(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ b: Int, groupBytes: Int, blocks: Int) {
    prefetchShare(g0, b, ahead: 2 * groupBytes, groupBytes: groupBytes, blocks: blocks)
    prefetchShare(g1, b, ahead: 2 * groupBytes, groupBytes: groupBytes, blocks: blocks)
}

/// 16 rows × `count` tokens (1 or 4; rows beyond `count` are ignored).
@inline(__always)
func pairDot(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ a0: VNNIRow, _ a1: VNNIRow, _ a2: VNNIRow, _ a3: VNNIRow,
             count: Int, blocks: Int, kind: PairKind, prefetchGroupBytes: Int = 0) -> (__m512, __m512, __m512, __m512) {
    var acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps()
    let low = _mm512_set1_epi8(0x0F)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchPair(g0, g1, b, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let (d, m, c0, c1) = kind.block(g0, g1, b)
        let high = kind.hasHighBit ? loadPair(c0 + kind.highBitsOffset, c1 + kind.highBitsOffset) : _mm512_setzero_si512()
        var s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512(), s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512()
        @inline(__always) func add(_ w: __m512i, _ k: Int) {
            s0 = _mm512_dpbusd_epi32(s0, w, stepActivations(a0, b, k))
            if count > 1 {
                s1 = _mm512_dpbusd_epi32(s1, w, stepActivations(a1, b, k))
                s2 = _mm512_dpbusd_epi32(s2, w, stepActivations(a2, b, k))
                s3 = _mm512_dpbusd_epi32(s3, w, stepActivations(a3, b, k))
            }
        }
        if kind.codes == .planes {
            for h in 0..<2 {
                let plane = loadPair(c0 + 32 * h, c1 + 32 * h)
                for j in 0..<4 { add(planeCodes(plane, 4 * h + j, high: kind.hasHighBit ? high : nil), 4 * h + j) }
            }
        } else {
            for j in 0..<4 {
                let raw = loadPair(c0 + 32 * j, c1 + 32 * j)
                for half in 0..<2 {
                    let k = j + 4 * half
                    var w = _mm512_and_si512(half == 0 ? raw : _mm512_srli_epi16(raw, 4), low)
                    if kind.hasHighBit { w = _mm512_or_si512(w, fifthBit(high, k)) }
                    add(w, k)
                }
            }
        }
        acc0 = accumulateBlock(acc0, s0, d: d, m: m, a0, b)
        if count > 1 {
            acc1 = accumulateBlock(acc1, s1, d: d, m: m, a1, b)
            acc2 = accumulateBlock(acc2, s2, d: d, m: m, a2, b)
            acc3 = accumulateBlock(acc3, s3, d: d, m: m, a3, b)
        }
    }
    return (acc0, acc1, acc2, acc3)
}

/// The 64 codes (0...63) of step k of a Q6_K sub-block for both groups: nibbles plus top bits.
@inline(__always) func codesK6(_ raw: __m512i, _ k: Int, top: __m512i) -> __m512i {
    let low = _mm512_and_si512(k < 4 ? raw : _mm512_srli_epi16(raw, 4), _mm512_set1_epi8(0x0F))
    let moved: __m512i
    switch k % 4 {
    case 0: moved = _mm512_slli_epi16(top, 4)
    case 1: moved = _mm512_slli_epi16(top, 2)
    case 2: moved = top
    default: moved = _mm512_srli_epi16(top, 2)
    }
    return _mm512_or_si512(low, _mm512_and_si512(moved, _mm512_set1_epi8(0x30)))
}

/// The 16 rows' d·sc for scale group `scaleGroup` of two Q6_K/Q3_K super-block headers.
@inline(__always)
func pairScalesK(_ h0: UnsafeRawPointer, _ h1: UnsafeRawPointer, _ d: __m512, _ scaleGroup: Int) -> __m512 {
    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(loadBytes16(h0 + 16 + 8 * scaleGroup, h1 + 16 + 8 * scaleGroup))))
}

/// acc += d·sc · s·(Σu·a − 2^offsetShift·Σa) for one token and one 16-column half: the AVX2
/// `accumulateCenteredHalf` (Q6_K shift 5, Q3_K shift 2).
@inline(__always)
func accumulateCenteredHalf(_ acc: __m512, _ sums: __m512i, scale: __m512, offsetShift: Int32, _ a: VNNIRow, _ b: Int, _ h: Int) -> __m512 {
    let centered = _mm512_sub_epi32(sums, _mm512_set1_epi32(a.halfSums[2 * b + h] << offsetShift))
    return _mm512_fmadd_ps(scale, _mm512_mul_ps(_mm512_cvtepi32_ps(centered), _mm512_set1_ps(a.scales[b])), acc)
}

/// Q6_K: 16 rows × `count` tokens, each half of 16 columns scaled on its own.
@inline(__always)
func pairDotK6(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ a0: VNNIRow, _ a1: VNNIRow, _ a2: VNNIRow, _ a3: VNNIRow,
               count: Int, blocks: Int, blockBytes: Int, prefetchGroupBytes: Int = 0) -> (__m512, __m512, __m512, __m512) {
    var acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps()
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchPair(g0, g1, b, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let h0 = g0 + (b / 8) * blockBytes, h1 = g1 + (b / 8) * blockBytes
        let c0 = h0 + 144 + 192 * (b % 8), c1 = h1 + 144 + 192 * (b % 8)
        let d = loadHalves16(h0, h1)
        for h in 0..<2 {
            let top = loadPair(c0 + 128 + 32 * h, c1 + 128 + 32 * h)
            var s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512(), s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512()
            for j in 0..<4 {
                let k = 4 * h + j
                let w = codesK6(loadPair(c0 + 32 * j, c1 + 32 * j), k, top: top)
                s0 = _mm512_dpbusd_epi32(s0, w, stepActivations(a0, b, k))
                if count > 1 {
                    s1 = _mm512_dpbusd_epi32(s1, w, stepActivations(a1, b, k))
                    s2 = _mm512_dpbusd_epi32(s2, w, stepActivations(a2, b, k))
                    s3 = _mm512_dpbusd_epi32(s3, w, stepActivations(a3, b, k))
                }
            }
            let scale = pairScalesK(h0, h1, d, 2 * (b % 8) + h)
            acc0 = accumulateCenteredHalf(acc0, s0, scale: scale, offsetShift: 5, a0, b, h)
            if count > 1 {
                acc1 = accumulateCenteredHalf(acc1, s1, scale: scale, offsetShift: 5, a1, b, h)
                acc2 = accumulateCenteredHalf(acc2, s2, scale: scale, offsetShift: 5, a2, b, h)
                acc3 = accumulateCenteredHalf(acc3, s3, scale: scale, offsetShift: 5, a3, b, h)
            }
        }
    }
    return (acc0, acc1, acc2, acc3)
}

/// Q8_0: 16 rows × `count` tokens. `vpdpbusd` wants unsigned weights, so the codes go in as q + 128
/// (one xor, shared by the tokens) and each token's sum starts at −128·Σa: the same integers Σq·a as
/// the AVX2 kernel's sign trick, then its float tail.
@inline(__always)
func pairDotQ8(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ a0: VNNIRow, _ a1: VNNIRow, _ a2: VNNIRow, _ a3: VNNIRow,
               count: Int, blocks: Int, blockBytes: Int, prefetchGroupBytes: Int = 0) -> (__m512, __m512, __m512, __m512) {
    var acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps()
    let flip = _mm512_set1_epi8(-128)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchPair(g0, g1, b, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let p0 = g0 + b * blockBytes, p1 = g1 + b * blockBytes
        @inline(__always) func start(_ a: VNNIRow) -> __m512i { _mm512_set1_epi32(-128 &* (a.halfSums[2 * b] &+ a.halfSums[2 * b + 1])) }
        var s0 = start(a0), s1 = s0, s2 = s0, s3 = s0
        if count > 1 { s1 = start(a1); s2 = start(a2); s3 = start(a3) }
        for k in 0..<8 {
            let u = _mm512_xor_si512(loadPair(p0 + 16 + 32 * k, p1 + 16 + 32 * k), flip)
            s0 = _mm512_dpbusd_epi32(s0, u, stepActivations(a0, b, k))
            if count > 1 {
                s1 = _mm512_dpbusd_epi32(s1, u, stepActivations(a1, b, k))
                s2 = _mm512_dpbusd_epi32(s2, u, stepActivations(a2, b, k))
                s3 = _mm512_dpbusd_epi32(s3, u, stepActivations(a3, b, k))
            }
        }
        let d = loadHalves16(p0, p1)
        acc0 = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(s0), _mm512_set1_ps(a0.scales[b])), acc0)
        if count > 1 {
            acc1 = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(s1), _mm512_set1_ps(a1.scales[b])), acc1)
            acc2 = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(s2), _mm512_set1_ps(a2.scales[b])), acc2)
            acc3 = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(s3), _mm512_set1_ps(a3.scales[b])), acc3)
        }
    }
    return (acc0, acc1, acc2, acc3)
}

/// Q3_K: 16 rows × `count` tokens; codes u = two plane bits + a high bit, weight d·sc·(u − 4).
@inline(__always)
func pairDotK3(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ a0: VNNIRow, _ a1: VNNIRow, _ a2: VNNIRow, _ a3: VNNIRow,
               count: Int, blocks: Int, blockBytes: Int, prefetchGroupBytes: Int = 0) -> (__m512, __m512, __m512, __m512) {
    var acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps()
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchPair(g0, g1, b, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let h0 = g0 + (b / 8) * blockBytes, h1 = g1 + (b / 8) * blockBytes
        let c0 = h0 + 144 + 96 * (b % 8), c1 = h1 + 144 + 96 * (b % 8)
        let d = loadHalves16(h0, h1), high = loadPair(c0 + 64, c1 + 64)
        for h in 0..<2 {
            let plane = loadPair(c0 + 32 * h, c1 + 32 * h)
            var s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512(), s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512()
            for j in 0..<4 {
                let k = 4 * h + j
                let w = planeCodes(plane, k, high: high)
                s0 = _mm512_dpbusd_epi32(s0, w, stepActivations(a0, b, k))
                if count > 1 {
                    s1 = _mm512_dpbusd_epi32(s1, w, stepActivations(a1, b, k))
                    s2 = _mm512_dpbusd_epi32(s2, w, stepActivations(a2, b, k))
                    s3 = _mm512_dpbusd_epi32(s3, w, stepActivations(a3, b, k))
                }
            }
            let scale = pairScalesK(h0, h1, d, 2 * (b % 8) + h)
            acc0 = accumulateCenteredHalf(acc0, s0, scale: scale, offsetShift: 2, a0, b, h)
            if count > 1 {
                acc1 = accumulateCenteredHalf(acc1, s1, scale: scale, offsetShift: 2, a1, b, h)
                acc2 = accumulateCenteredHalf(acc2, s2, scale: scale, offsetShift: 2, a2, b, h)
                acc3 = accumulateCenteredHalf(acc3, s3, scale: scale, offsetShift: 2, a3, b, h)
            }
        }
    }
    return (acc0, acc1, acc2, acc3)
}

/// Q2_K: 16 rows × `count` tokens; weight d·sc·q − dmin·m per 16 columns.
@inline(__always)
func pairDotK2(_ g0: UnsafeRawPointer, _ g1: UnsafeRawPointer, _ a0: VNNIRow, _ a1: VNNIRow, _ a2: VNNIRow, _ a3: VNNIRow,
               count: Int, blocks: Int, blockBytes: Int, prefetchGroupBytes: Int = 0) -> (__m512, __m512, __m512, __m512) {
    var acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps()
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchPair(g0, g1, b, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let h0 = g0 + (b / 8) * blockBytes, h1 = g1 + (b / 8) * blockBytes
        let c0 = h0 + 160 + 64 * (b % 8), c1 = h1 + 160 + 64 * (b % 8)
        for h in 0..<2 {
            let plane = loadPair(c0 + 32 * h, c1 + 32 * h)
            var s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512(), s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512()
            for j in 0..<4 {
                let k = 4 * h + j
                let w = planeCodes(plane, k, high: nil)
                s0 = _mm512_dpbusd_epi32(s0, w, stepActivations(a0, b, k))
                if count > 1 {
                    s1 = _mm512_dpbusd_epi32(s1, w, stepActivations(a1, b, k))
                    s2 = _mm512_dpbusd_epi32(s2, w, stepActivations(a2, b, k))
                    s3 = _mm512_dpbusd_epi32(s3, w, stepActivations(a3, b, k))
                }
            }
            let scaleGroup = 2 * (b % 8) + h
            let bytes = _mm512_cvtepu8_epi32(loadBytes16(h0 + 32 + 8 * scaleGroup, h1 + 32 + 8 * scaleGroup))
            let scale = _mm512_mul_ps(loadHalves16(h0, h1), _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(0x0F))))
            let minimum = _mm512_mul_ps(loadHalves16(h0 + 16, h1 + 16), _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4)))
            @inline(__always) func accumulate(_ acc: __m512, _ sums: __m512i, _ a: VNNIRow) -> __m512 {
                let scaled = _mm512_fmadd_ps(scale, _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_set1_ps(a.scales[b])), acc)
                return _mm512_fnmadd_ps(minimum, _mm512_set1_ps(a.scales[b] * Float(a.halfSums[2 * b + h])), scaled)
            }
            acc0 = accumulate(acc0, s0, a0)
            if count > 1 { acc1 = accumulate(acc1, s1, a1); acc2 = accumulate(acc2, s2, a2); acc3 = accumulate(acc3, s3, a3) }
        }
    }
    return (acc0, acc1, acc2, acc3)
}

/// The tile walk: strips of group pairs that stay in L2 while every 4-token tile passes over them.
@inline(__always)
func pairTiles(_ weights: UnsafeRawPointer, _ format: VNNIInterleavedFormat, _ groups: Range<Int>, _ act: VNNIActivations,
               _ out: UnsafeMutablePointer<Float>, _ outStride: Int, kind: PairKind) {
    let blocks = format.blocks, groupBytes = format.groupBytes, tokens = act.rows
    @inline(__always) func dot(_ g: Int, _ a0: VNNIRow, _ a1: VNNIRow, _ a2: VNNIRow, _ a3: VNNIRow, count: Int) -> (__m512, __m512, __m512, __m512) {
        let g0 = weights + g * groupBytes, g1 = g0 + groupBytes
        // One token streams each pair once: the next pair's lines are requested block by block.
        let prefetchGroupBytes = count == 1 && tokens == 1 ? groupBytes : 0, bb = kind.blockBytes
        switch kind.codes {
        case .nibbles, .planes:
            return pairDot(g0, g1, a0, a1, a2, a3, count: count, blocks: blocks, kind: kind, prefetchGroupBytes: prefetchGroupBytes)
        case .twoBit: return pairDotK2(g0, g1, a0, a1, a2, a3, count: count, blocks: blocks, blockBytes: bb, prefetchGroupBytes: prefetchGroupBytes)
        case .threeBit: return pairDotK3(g0, g1, a0, a1, a2, a3, count: count, blocks: blocks, blockBytes: bb, prefetchGroupBytes: prefetchGroupBytes)
        case .sixBit: return pairDotK6(g0, g1, a0, a1, a2, a3, count: count, blocks: blocks, blockBytes: bb, prefetchGroupBytes: prefetchGroupBytes)
        case .eightBit: return pairDotQ8(g0, g1, a0, a1, a2, a3, count: count, blocks: blocks, blockBytes: bb, prefetchGroupBytes: prefetchGroupBytes)
        }
    }
    let strip = max(2, (128 * 1024) / groupBytes / 2 * 2)
    var stripStart = groups.lowerBound
    while stripStart < groups.upperBound {
        let stripEnd = min(groups.upperBound, stripStart + strip)
        var t = 0
        while t + 4 <= tokens {
            let a0 = act.row(t), a1 = act.row(t + 1), a2 = act.row(t + 2), a3 = act.row(t + 3)
            var g = stripStart
            while g < stripEnd {
                let r = dot(g, a0, a1, a2, a3, count: 4)
                _mm512_storeu_ps(out + t * outStride + 8 * g, r.0)
                _mm512_storeu_ps(out + (t + 1) * outStride + 8 * g, r.1)
                _mm512_storeu_ps(out + (t + 2) * outStride + 8 * g, r.2)
                _mm512_storeu_ps(out + (t + 3) * outStride + 8 * g, r.3)
                g += 2
            }
            t += 4
        }
        while t < tokens {
            let a = act.row(t)
            var g = stripStart
            while g < stripEnd {
                _mm512_storeu_ps(out + t * outStride + 8 * g, dot(g, a, a, a, a, count: 1).0)
                g += 2
            }
            t += 1
        }
        stripStart = stripEnd
    }
}

/// `out[t * outStride + o] = W[o] · act[t]` for the rows of `groups` (an even number of groups of
/// 8 rows) of an interleaved matrix, for every activation row.
@inline(never)
public func interleavedMatMulVNNI(_ format: VNNIInterleavedFormat, weights: UnsafeRawPointer, groups: Range<Int>,
                                  act: VNNIActivations, out: UnsafeMutablePointer<Float>, outStride: Int) {
    precondition(groups.count % 2 == 0, "VNNI tiles take groups in pairs")
    guard !groups.isEmpty else { return }
    let bytes = format.blockBytes
    func tiles(_ kind: PairKind) { pairTiles(weights, format, groups, act, out, outStride, kind: kind) }
    switch format.family {
    case .q4_0: tiles(.init(offset: -8, blockBytes: bytes))
    case .q4_1: tiles(.init(hasMin: true, blockBytes: bytes))
    case .q5_0: tiles(.init(hasHighBit: true, offset: -16, blockBytes: bytes))
    case .q5_1: tiles(.init(hasMin: true, hasHighBit: true, blockBytes: bytes))
    case .q4_K: tiles(.init(hasMin: true, kQuant: true, blockBytes: bytes))
    case .q5_K: tiles(.init(hasMin: true, hasHighBit: true, kQuant: true, blockBytes: bytes))
    case .q2_K: tiles(.init(codes: .twoBit, blockBytes: bytes))
    case .q3_K: tiles(.init(codes: .threeBit, blockBytes: bytes))
    case .q6_K: tiles(.init(codes: .sixBit, blockBytes: bytes))
    case .q8_0: tiles(.init(codes: .eightBit, blockBytes: bytes))
    case .groupwise(let bits, let runs):
        tiles(.init(codes: bits == 4 ? .nibbles : .planes, hasMin: true, hasHighBit: bits == 3, grouped: true,
                    runShift: runs.trailingZeroBitCount, blockBytes: bytes))
    }
}
#endif
