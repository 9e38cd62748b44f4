#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
import PivotKernelsAVXVNNI
#endif

/// Products of interleaved block-32 weights (`InterleavedLayout`) with Q8 activations: eight output
/// rows per vector, up to four tokens per pass over the weights. Every token is summed in the same
/// order whether it runs alone (decode) or in a batch (prefill, draft verification), so results are
/// bit-identical either way.

#if arch(x86_64)
/// Moves bit `k` of every byte of the fifth-bit vector to bit 4 (0x10), other bits cleared.
@inline(__always)
func fifthBit(_ bits: __m256i, _ k: Int) -> __m256i {
    let moved: __m256i
    switch k {
    case 0: moved = _mm256_slli_epi16(bits, 4)
    case 1: moved = _mm256_slli_epi16(bits, 3)
    case 2: moved = _mm256_slli_epi16(bits, 2)
    case 3: moved = _mm256_slli_epi16(bits, 1)
    case 4: moved = bits
    case 5: moved = _mm256_srli_epi16(bits, 1)
    case 6: moved = _mm256_srli_epi16(bits, 2)
    default: moved = _mm256_srli_epi16(bits, 3)
    }
    return _mm256_and_si256(moved, _mm256_set1_epi8(0x10))
}

/// Codes of step k (columns 4k..4k+3 of each of the 8 rows) as 32 unsigned bytes: nibbles (+ a
/// fifth bit) or 2-bit planes (+ a third bit), `high` holding the block's extra bits.
@inline(__always)
func interleavedCodes(_ codes: UnsafeRawPointer, _ k: Int, high: __m256i, kind: InterleavedKind) -> __m256i {
    if kind.codes == .planes {
        let plane = loadBytes32(codes + 32 * (k / 4))
        return kind.hasHighBit ? interleavedCodesK3(plane, k, high: high) : interleavedCodesK2(plane, k % 4)
    }
    let bytes = loadBytes32(codes + 32 * (k % 4))
    let shifted = k < 4 ? bytes : _mm256_srli_epi16(bytes, 4)
    let low = _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    return kind.hasHighBit ? _mm256_or_si256(low, fifthBit(high, k)) : low
}

/// Four activation bytes of step k of block b, repeated in every 32-bit lane.
@inline(__always)
func stepActivations(_ a: Q8Row, _ b: Int, _ k: Int) -> __m256i {
    _mm256_set1_epi32(UnsafeRawPointer(a.quants).loadUnaligned(fromByteOffset: b * 32 + 4 * k, as: Int32.self))
}

/// acc += d·(s·Σq·a) + m·(s·Σa) for one token and block: the float tail, shared by both tile widths.
@inline(__always)
func accumulateBlock(_ acc: __m256, _ sums: __m256i, d: __m256, m: __m256, _ a: Q8Row, _ b: Int) -> __m256 {
    let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a.scales[b]))
    return _mm256_fmadd_ps(m, _mm256_set1_ps(a.sums[b]), _mm256_fmadd_ps(d, scaled, acc))
}

@inline(__always)
func loadHalves8(_ p: UnsafeRawPointer) -> __m256 { _mm256_cvtph_ps(_mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))) }

/// Eight unsigned bytes as eight floats.
@inline(__always)
func loadBytesAsFloats8(_ p: UnsafeRawPointer) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.assumingMemoryBound(to: __m128i.self))))
}

/// How the tile kernels see a format: where block b's codes are and its eight rows' d and m.
struct InterleavedKind {
    /// How codes are stored: nibbles (+ fifth bits) with a scale and minimum per 32 columns (the
    /// block-32 formats, Q4_K, Q5_K, the 4-bit group-wise types), 2-bit planes (+ third bits) with
    /// a scale and minimum per group (the 2- and 3-bit group-wise types), or one of the formats
    /// with kernels of their own.
    enum Codes { case nibbles, planes, twoBit, threeBit, sixBit, eightBit }
    var codes = Codes.nibbles
    /// `hasHighBit`: a bit above the nibble (fifth) or the 2-bit plane (third), in its own vector.
    var hasMin = false, hasHighBit = false, offset: Float = 0, kQuant = false
    /// Group-wise types: 2^runShift blocks of 32 share one header (d, m) of `blockBytes`.
    var grouped = false, runShift = 0
    var blockBytes: Int

    /// The layout of a group-wise type (`InterleavedGroupwise.swift`).
    static func groupwise(_ format: BlockFormat, blockBytes: Int) -> InterleavedKind {
        .init(codes: format.groupBits == 4 ? .nibbles : .planes, hasMin: true, hasHighBit: format.groupBits == 3,
              grouped: true, runShift: format.runsPerGroup.trailingZeroBitCount, blockBytes: blockBytes)
    }

    /// Offset of the extra-bit vector from a block's codes.
    var highBitsOffset: Int { codes == .planes ? 64 : 128 }
    /// Bytes of one block's codes in a group-wise header.
    var runBytes: Int { codes == .planes ? (hasHighBit ? 96 : 64) : 128 }

    @inline(__always)
    func dot4(_ group: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row, blocks: Int) -> (__m256, __m256, __m256, __m256) {
        switch codes {
        case .nibbles, .planes: return interleavedDot4(group, a0, a1, a2, a3, blocks: blocks, kind: self)
        case .twoBit: return interleavedDotK2x4(group, a0, a1, a2, a3, blocks: blocks)
        case .threeBit: return interleavedDotK3x4(group, a0, a1, a2, a3, blocks: blocks)
        case .sixBit: return interleavedDotK6x4(group, a0, a1, a2, a3, blocks: blocks)
        case .eightBit: return interleavedDotQ8x4(group, a0, a1, a2, a3, blocks: blocks)
        }
    }

    /// `prefetchGroupBytes` > 0 (decode): each block also requests its share of the next group.
    @inline(__always)
    func dot1(_ group: UnsafeRawPointer, _ a: Q8Row, blocks: Int, prefetchGroupBytes: Int = 0) -> __m256 {
        switch codes {
        case .nibbles, .planes: return interleavedDot1(group, a, blocks: blocks, kind: self, prefetchGroupBytes: prefetchGroupBytes)
        case .twoBit: return interleavedDotK2x1(group, a, blocks: blocks, prefetchGroupBytes: prefetchGroupBytes)
        case .threeBit: return interleavedDotK3x1(group, a, blocks: blocks, prefetchGroupBytes: prefetchGroupBytes)
        case .sixBit: return interleavedDotK6x1(group, a, blocks: blocks, prefetchGroupBytes: prefetchGroupBytes)
        case .eightBit: return interleavedDotQ8x1(group, a, blocks: blocks, prefetchGroupBytes: prefetchGroupBytes)
        }
    }

    /// (d, m, codes) of 32-column block b of the group at `group`.
    @inline(__always)
    func block(_ group: UnsafeRawPointer, _ b: Int) -> (__m256, __m256, UnsafeRawPointer) {
        if grouped {
            let header = group + (b >> runShift) * blockBytes
            return (loadHalves8(header), loadHalves8(header + 16), header + 32 + runBytes * (b & ((1 << runShift) - 1)))
        }
        if kQuant {
            let header = group + (b / 8) * blockBytes, sub = b % 8
            let d = _mm256_mul_ps(loadHalves8(header), loadBytesAsFloats8(header + 32 + 8 * sub))
            let m = _mm256_mul_ps(loadHalves8(header + 16), loadBytesAsFloats8(header + 96 + 8 * sub))
            return (d, _mm256_sub_ps(_mm256_setzero_ps(), m), header + 160 + (hasHighBit ? 160 : 128) * sub)
        }
        let block = group + b * blockBytes
        let d = loadHalves8(block)
        let m = hasMin ? loadHalves8(block + 16) : _mm256_mul_ps(d, _mm256_set1_ps(offset))
        return (d, m, block + (hasMin ? 32 : 16))
    }
}

/// Eight rows × one token. Steps 0–3 and 4–7 are summed in 16 bits (≤ 4·2·31·127, no overflow),
/// then widened; the four-token form below does exactly the same per token.
@inline(__always)
func interleavedDot1(_ group: UnsafeRawPointer, _ a: Q8Row, blocks: Int, kind: InterleavedKind, prefetchGroupBytes: Int = 0) -> __m256 {
    var acc = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchShare(group, b, ahead: prefetchGroupBytes, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let (d, m, codes) = kind.block(group, b)
        let high = kind.hasHighBit ? loadBytes32(codes + kind.highBitsOffset) : _mm256_setzero_si256()
        var total = _mm256_setzero_si256()
        for half in 0..<2 {
            var partial = _mm256_setzero_si256()
            for j in 0..<4 {
                let k = half * 4 + j
                let w = interleavedCodes(codes, k, high: high, kind: kind)
                partial = _mm256_add_epi16(partial, _mm256_maddubs_epi16(w, stepActivations(a, b, k)))
            }
            total = _mm256_add_epi32(total, _mm256_madd_epi16(partial, ones))
        }
        acc = accumulateBlock(acc, total, d: d, m: m, a, b)
    }
    return acc
}

@inline(__always)
func interleavedDot4(_ group: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                     blocks: Int, kind: InterleavedKind) -> (__m256, __m256, __m256, __m256) {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        let (d, m, codes) = kind.block(group, b)
        let high = kind.hasHighBit ? loadBytes32(codes + kind.highBitsOffset) : _mm256_setzero_si256()
        var t0 = _mm256_setzero_si256(), t1 = _mm256_setzero_si256(), t2 = _mm256_setzero_si256(), t3 = _mm256_setzero_si256()
        for half in 0..<2 {
            var p0 = _mm256_setzero_si256(), p1 = _mm256_setzero_si256(), p2 = _mm256_setzero_si256(), p3 = _mm256_setzero_si256()
            for j in 0..<4 {
                let k = half * 4 + j
                let w = interleavedCodes(codes, k, high: high, kind: kind)
                p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(w, stepActivations(a0, b, k)))
                p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(w, stepActivations(a1, b, k)))
                p2 = _mm256_add_epi16(p2, _mm256_maddubs_epi16(w, stepActivations(a2, b, k)))
                p3 = _mm256_add_epi16(p3, _mm256_maddubs_epi16(w, stepActivations(a3, b, k)))
            }
            t0 = _mm256_add_epi32(t0, _mm256_madd_epi16(p0, ones))
            t1 = _mm256_add_epi32(t1, _mm256_madd_epi16(p1, ones))
            t2 = _mm256_add_epi32(t2, _mm256_madd_epi16(p2, ones))
            t3 = _mm256_add_epi32(t3, _mm256_madd_epi16(p3, ones))
        }
        acc0 = accumulateBlock(acc0, t0, d: d, m: m, a0, b)
        acc1 = accumulateBlock(acc1, t1, d: d, m: m, a1, b)
        acc2 = accumulateBlock(acc2, t2, d: d, m: m, a2, b)
        acc3 = accumulateBlock(acc3, t3, d: d, m: m, a3, b)
    }
    return (acc0, acc1, acc2, acc3)
}

@inline(__always)
func storeLanes(_ v: __m256, _ p: UnsafeMutablePointer<Float>) { _mm256_storeu_ps(p, v) }

/// The tile walk for one format (its flags constant after inlining).
@inline(__always)
func interleavedTiles(_ weights: UnsafeRawPointer, _ layout: InterleavedLayout, _ groups: Range<Int>, _ act: Q8Activations,
                      _ out: UnsafeMutablePointer<Float>, _ outStride: Int, kind: InterleavedKind) {
    let blocks = layout.blocks, groupBytes = layout.groupBytes, tokens = act.rows
    // Strips of groups whose weights stay in L2 while every 4-token tile passes over them.
    let strip = max(1, (128 * 1024) / groupBytes)
    var stripStart = groups.lowerBound
    while stripStart < groups.upperBound {
        let stripEnd = min(groups.upperBound, stripStart + strip)
        var t = 0
        while t + 4 <= tokens {
            let a0 = Q8Row(act, row: t), a1 = Q8Row(act, row: t + 1), a2 = Q8Row(act, row: t + 2), a3 = Q8Row(act, row: t + 3)
            for g in stripStart..<stripEnd {
                let r = kind.dot4(weights + g * groupBytes, a0, a1, a2, a3, blocks: blocks)
                storeLanes(r.0, out + t * outStride + 8 * g)
                storeLanes(r.1, out + (t + 1) * outStride + 8 * g)
                storeLanes(r.2, out + (t + 2) * outStride + 8 * g)
                storeLanes(r.3, out + (t + 3) * outStride + 8 * g)
            }
            t += 4
        }
        while t < tokens {
            let a = Q8Row(act, row: t)
            for g in stripStart..<stripEnd {
                // One token streams each group once: the next group's lines are requested block by block.
                storeLanes(kind.dot1(weights + g * groupBytes, a, blocks: blocks, prefetchGroupBytes: tokens == 1 ? groupBytes : 0),
                           out + t * outStride + 8 * g)
            }
            t += 1
        }
        stripStart = stripEnd
    }
}
#endif

/// `out[t * outStride + o] = W[o] · act[t]` for the rows of groups `groups` (8 rows each) of an
/// interleaved matrix, for every activation row, on the path `KernelISA.active` names.
public func interleavedMatMul(_ layout: InterleavedLayout, weights: UnsafeRawPointer, groups: Range<Int>,
                              act: Q8Activations, out: UnsafeMutablePointer<Float>, outStride: Int) {
    guard !groups.isEmpty else { return }
    #if arch(x86_64)
    switch KernelISA.active {
    case .avx512:
        // Pairs of groups on 512-bit registers; an odd last group on the AVX2 tiles (same results).
        let pairedEnd = groups.lowerBound + groups.count / 2 * 2
        interleavedMatMulVNNI(layout.vnniFormat, weights: weights, groups: groups.lowerBound..<pairedEnd,
                              act: act.vnni, out: out, outStride: outStride)
        if pairedEnd < groups.upperBound { interleavedMatMulAVX2(layout, weights, pairedEnd..<groups.upperBound, act, out, outStride) }
    case .avxVNNI:
        interleavedMatMulAVXVNNI(layout.vnniFormat, weights: weights, groups: groups, act: act.vnni, out: out, outStride: outStride)
    case .avx2: interleavedMatMulAVX2(layout, weights, groups, act, out, outStride)
    case .portable: interleavedMatMulPortable(layout, weights, groups, act, out, outStride)
    }
    #else
    interleavedMatMulPortable(layout, weights, groups, act, out, outStride)
    #endif
}

#if arch(x86_64)
func interleavedMatMulAVX2(_ layout: InterleavedLayout, _ weights: UnsafeRawPointer, _ groups: Range<Int>,
                           _ act: Q8Activations, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    let bytes = layout.blockBytes
    func tiles(_ kind: InterleavedKind) { interleavedTiles(weights, layout, groups, act, out, outStride, kind: kind) }
    switch layout.format {
    case .q4_0: tiles(.init(offset: -8, blockBytes: bytes))
    case .q4_1: tiles(.init(hasMin: true, blockBytes: bytes))
    case .q5_0: tiles(.init(hasHighBit: true, offset: -16, blockBytes: bytes))
    case .q4_K: tiles(.init(hasMin: true, kQuant: true, blockBytes: bytes))
    case .q5_K: tiles(.init(hasMin: true, hasHighBit: true, kQuant: true, blockBytes: bytes))
    case .q2_K: tiles(.init(codes: .twoBit, blockBytes: bytes))
    case .q3_K: tiles(.init(codes: .threeBit, blockBytes: bytes))
    case .q6_K: tiles(.init(codes: .sixBit, blockBytes: bytes))
    case .q8_0: tiles(.init(codes: .eightBit, blockBytes: bytes))
    case .q5_1: tiles(.init(hasMin: true, hasHighBit: true, blockBytes: bytes))
    case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128: tiles(.groupwise(layout.format, blockBytes: bytes))
    default: preconditionFailure("\(layout.format.name) has no interleaved layout")
    }
}

extension InterleavedLayout {
    /// This layout as the AVX-512 module sees it.
    var vnniFormat: VNNIInterleavedFormat {
        let family: VNNIInterleavedFormat.Family
        switch format {
        case .q4_0: family = .q4_0
        case .q4_1: family = .q4_1
        case .q5_0: family = .q5_0
        case .q5_1: family = .q5_1
        case .q4_K: family = .q4_K
        case .q5_K: family = .q5_K
        case .q8_0: family = .q8_0
        case .q3_K: family = .q3_K
        case .q2_K: family = .q2_K
        case .q6_K: family = .q6_K
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
            family = .groupwise(bits: format.groupBits!, runs: format.runsPerGroup)
        default: preconditionFailure("\(format.name) has no interleaved layout")
        }
        return VNNIInterleavedFormat(family: family, blockBytes: blockBytes, groupBytes: groupBytes, blocks: blocks)
    }
}

extension Q8Activations {
    /// These activations as the AVX-512 module sees them.
    var vnni: VNNIActivations {
        VNNIActivations(quants: quants, scales: scales, sums: scaledSums, halfSums: halfSums, rows: rows, blocks: blocksPerRow)
    }
}
#endif

/// Portable path: dequantized weights against the int8 activations, row by row.
func interleavedMatMulPortable(_ layout: InterleavedLayout, _ weights: UnsafeRawPointer, _ groups: Range<Int>,
                               _ act: Q8Activations, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    let columns = layout.blocks * 32
    withUnsafeTemporaryAllocation(of: Float.self, capacity: columns) { row in
        let w = row.baseAddress!
        for g in groups {
            for r in 0..<8 {
                layout.dequantizeRow(weights, row: 8 * g + r, into: w)
                for t in 0..<act.rows {
                    var total: Float = 0
                    for c in 0..<columns { total += w[c] * Float(act.quants[t * act.columns + c]) * act.scales[t * layout.blocks + c / 32] }
                    out[t * outStride + 8 * g + r] = total
                }
            }
        }
    }
}

/// The exact path for interleaved weights: each row dequantized, dotted with float activations.
public func interleavedMatMulFloat(_ layout: InterleavedLayout, weights: UnsafeRawPointer, outputs: Range<Int>,
                                   x: UnsafePointer<Float>, xStride: Int, tokens: Int,
                                   out: UnsafeMutablePointer<Float>, outStride: Int) {
    dequantizedMatMul(columns: layout.blocks * 32, outputs: outputs, x: x, xStride: xStride, tokens: tokens, out: out, outStride: outStride) { o, row in
        layout.dequantizeRow(weights, row: o, into: row)
    }
}
