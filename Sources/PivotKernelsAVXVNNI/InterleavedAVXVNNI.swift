#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512

/// The interleaved tiles (PivotKernels' `InterleavedLayout`) for CPUs with AVX-VNNI but no AVX-512
/// (Alder Lake and later client cores): the AVX2 kernels' eight rows per 256-bit register, with
/// `vpmaddubsw` + 16-bit adds + `vpmaddwd` replaced by one VEX `vpdpbusd` per step. The integer sums
/// are the same and the float tails are the AVX2 kernels' own, so results are bit-identical to AVX2.

@inline(__always) func load32(_ p: UnsafeRawPointer) -> __m256i { _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self)) }
@inline(__always) func halves8(_ p: UnsafeRawPointer) -> __m256 { _mm256_cvtph_ps(_mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))) }
@inline(__always) func eightBytes(_ p: UnsafeRawPointer) -> __m128i { _mm_loadl_epi64(p.assumingMemoryBound(to: __m128i.self)) }

@inline(__always) func step(_ a: VNNIRow, _ b: Int, _ k: Int) -> __m256i {
    _mm256_set1_epi32(UnsafeRawPointer(a.quants).loadUnaligned(fromByteOffset: b * 32 + 4 * k, as: Int32.self))
}

/// What a tile needs to know of a format (constant after inlining): PivotKernels' `InterleavedKind`.
struct GroupKind {
    /// `planes`: 2-bit planes (+ third bits) with a scale and minimum per group (group-wise types).
    enum Codes { case nibbles, planes, sixBit, eightBit, threeBit, twoBit }
    var codes: Codes
    /// `hasHighBit`: a bit above the nibble (fifth) or the 2-bit plane (third), in its own vector.
    var hasMin: Bool, hasHighBit: Bool, offset: Float, kQuant: Bool
    /// Group-wise types: 2^runShift blocks of 32 share one header (d, m) of `blockBytes`.
    var grouped = false, runShift = 0
    var blockBytes: Int

    var highBitsOffset: Int { codes == .planes ? 64 : 128 }
    var runBytes: Int { codes == .planes ? (hasHighBit ? 96 : 64) : 128 }

    /// (d, m, codes) of 32-column block b of a group: the AVX2 kernel's `InterleavedKind.block`.
    @inline(__always) func block(_ group: UnsafeRawPointer, _ b: Int) -> (__m256, __m256, UnsafeRawPointer) {
        if grouped {
            let header = group + (b >> runShift) * blockBytes
            return (halves8(header), halves8(header + 16), header + 32 + runBytes * (b & ((1 << runShift) - 1)))
        }
        if kQuant {
            let header = group + (b / 8) * blockBytes, sub = b % 8
            let d = _mm256_mul_ps(halves8(header), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eightBytes(header + 32 + 8 * sub))))
            let m = _mm256_mul_ps(halves8(header + 16), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eightBytes(header + 96 + 8 * sub))))
            return (d, _mm256_sub_ps(_mm256_setzero_ps(), m), header + 160 + (hasHighBit ? 160 : 128) * sub)
        }
        let block = group + b * blockBytes
        let d = halves8(block)
        let m = hasMin ? halves8(block + 16) : _mm256_mul_ps(d, _mm256_set1_ps(offset))
        return (d, m, block + (hasMin ? 32 : 16))
    }
}

/// The 2-bit plane codes of step k (plane = the vector of steps 4(k/4)...), with bit k of `high`
/// as the third bit when there is one.
@inline(__always) func planeCodes(_ plane: __m256i, _ k: Int, high: __m256i?) -> __m256i {
    let low = _mm256_and_si256(_mm256_srli_epi16(plane, Int32(2 * (k % 4))), _mm256_set1_epi8(3))
    guard let high else { return low }
    let moved = k >= 2 ? _mm256_srli_epi16(high, Int32(k - 2)) : _mm256_slli_epi16(high, Int32(2 - k))
    return _mm256_or_si256(low, _mm256_and_si256(moved, _mm256_set1_epi8(4)))
}

/// Up to four tokens' int32 sums and float accumulators, one register each.
struct Lanes4 { var v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i }
struct Floats4 { var v0: __m256, v1: __m256, v2: __m256, v3: __m256 }

/// s_t += w·a_t (step k of block b) for the first `count` tokens.
@inline(__always) func multiplyAdd(_ s: inout Lanes4, _ w: __m256i, _ a: (VNNIRow, VNNIRow, VNNIRow, VNNIRow), _ b: Int, _ k: Int, count: Int) {
    s.v0 = _mm256_dpbusd_avx_epi32(s.v0, w, step(a.0, b, k))
    guard count > 1 else { return }
    s.v1 = _mm256_dpbusd_avx_epi32(s.v1, w, step(a.1, b, k))
    s.v2 = _mm256_dpbusd_avx_epi32(s.v2, w, step(a.2, b, k))
    s.v3 = _mm256_dpbusd_avx_epi32(s.v3, w, step(a.3, b, k))
}

/// Block-32, Q4_K/Q5_K and group-wise codes: nibbles (with fifth bits) or 2-bit planes (with third
/// bits); acc += d·(s·Σq·a) + m·(s·Σa).
@inline(__always)
func nibbleBlock(_ acc: inout Floats4, _ group: UnsafeRawPointer, _ b: Int, _ a: (VNNIRow, VNNIRow, VNNIRow, VNNIRow), count: Int, kind: GroupKind) {
    let (d, m, codes) = kind.block(group, b)
    let high = kind.hasHighBit ? load32(codes + kind.highBitsOffset) : _mm256_setzero_si256()
    let zero = _mm256_setzero_si256()
    var s = Lanes4(v0: zero, v1: zero, v2: zero, v3: zero)
    if kind.codes == .planes {
        for h in 0..<2 {
            let plane = load32(codes + 32 * h)
            for j in 0..<4 { multiplyAdd(&s, planeCodes(plane, 4 * h + j, high: kind.hasHighBit ? high : nil), a, b, 4 * h + j, count: count) }
        }
    } else {
        for j in 0..<4 {
            let raw = load32(codes + 32 * j)
            for half in 0..<2 {
                let k = j + 4 * half
                var w = _mm256_and_si256(half == 0 ? raw : _mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F))
                if kind.hasHighBit {
                    let moved = k <= 4 ? _mm256_slli_epi16(high, Int32(4 - k)) : _mm256_srli_epi16(high, Int32(k - 4))
                    w = _mm256_or_si256(w, _mm256_and_si256(moved, _mm256_set1_epi8(0x10)))
                }
                multiplyAdd(&s, w, a, b, k, count: count)
            }
        }
    }
    @inline(__always) func tail(_ acc: __m256, _ sums: __m256i, _ a: VNNIRow) -> __m256 {
        let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a.scales[b]))
        return _mm256_fmadd_ps(m, _mm256_set1_ps(a.sums[b]), _mm256_fmadd_ps(d, scaled, acc))
    }
    acc.v0 = tail(acc.v0, s.v0, a.0)
    guard count > 1 else { return }
    acc.v1 = tail(acc.v1, s.v1, a.1); acc.v2 = tail(acc.v2, s.v2, a.2); acc.v3 = tail(acc.v3, s.v3, a.3)
}

/// Q6_K (shift 5, codes nibble + two top bits) and Q3_K (shift 2, codes from bit planes): per
/// 16-column half, acc += d·sc · s·(Σu·a − 2^shift·Σa).
@inline(__always)
func scaledHalvesBlock(_ acc: inout Floats4, _ group: UnsafeRawPointer, _ b: Int, _ a: (VNNIRow, VNNIRow, VNNIRow, VNNIRow), count: Int, kind: GroupKind) {
    let sixBit = kind.codes == .sixBit
    let header = group + (b / 8) * kind.blockBytes, codes = header + 144 + (sixBit ? 192 : 96) * (b % 8)
    let d = halves8(header)
    let high = sixBit ? _mm256_setzero_si256() : load32(codes + 64)
    for h in 0..<2 {
        let zero = _mm256_setzero_si256()
        var s = Lanes4(v0: zero, v1: zero, v2: zero, v3: zero)
        let planeOrTop = load32(codes + (sixBit ? 128 : 0) + 32 * h)
        for j in 0..<4 {
            let k = 4 * h + j
            let w: __m256i
            if sixBit {
                let bytes = load32(codes + 32 * j)
                let low = _mm256_and_si256(k < 4 ? bytes : _mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0F))
                let moved: __m256i
                switch j {
                case 0: moved = _mm256_slli_epi16(planeOrTop, 4)
                case 1: moved = _mm256_slli_epi16(planeOrTop, 2)
                case 2: moved = planeOrTop
                default: moved = _mm256_srli_epi16(planeOrTop, 2)
                }
                w = _mm256_or_si256(low, _mm256_and_si256(moved, _mm256_set1_epi8(0x30)))
            } else {
                w = planeCodes(planeOrTop, k, high: high)
            }
            multiplyAdd(&s, w, a, b, k, count: count)
        }
        let scaleGroup = 2 * (b % 8) + h
        let scale = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eightBytes(header + 16 + 8 * scaleGroup))))
        let shift: Int32 = sixBit ? 5 : 2
        @inline(__always) func tail(_ acc: __m256, _ sums: __m256i, _ a: VNNIRow) -> __m256 {
            let centered = _mm256_sub_epi32(sums, _mm256_set1_epi32(a.halfSums[2 * b + h] << shift))
            return _mm256_fmadd_ps(scale, _mm256_mul_ps(_mm256_cvtepi32_ps(centered), _mm256_set1_ps(a.scales[b])), acc)
        }
        acc.v0 = tail(acc.v0, s.v0, a.0)
        if count > 1 { acc.v1 = tail(acc.v1, s.v1, a.1); acc.v2 = tail(acc.v2, s.v2, a.2); acc.v3 = tail(acc.v3, s.v3, a.3) }
    }
}

/// Q2_K: per 16-column half, acc += d·sc · s·Σq·a − dmin·m · s·Σa.
@inline(__always)
func twoBitBlock(_ acc: inout Floats4, _ group: UnsafeRawPointer, _ b: Int, _ a: (VNNIRow, VNNIRow, VNNIRow, VNNIRow), count: Int, kind: GroupKind) {
    let header = group + (b / 8) * kind.blockBytes, codes = header + 160 + 64 * (b % 8)
    for h in 0..<2 {
        let zero = _mm256_setzero_si256()
        var s = Lanes4(v0: zero, v1: zero, v2: zero, v3: zero)
        let plane = load32(codes + 32 * h)
        for j in 0..<4 { multiplyAdd(&s, planeCodes(plane, 4 * h + j, high: nil), a, b, 4 * h + j, count: count) }
        let bytes = _mm256_cvtepu8_epi32(eightBytes(header + 32 + 8 * (2 * (b % 8) + h)))
        let scale = _mm256_mul_ps(halves8(header), _mm256_cvtepi32_ps(_mm256_and_si256(bytes, _mm256_set1_epi32(0x0F))))
        let minimum = _mm256_mul_ps(halves8(header + 16), _mm256_cvtepi32_ps(_mm256_srli_epi32(bytes, 4)))
        @inline(__always) func tail(_ acc: __m256, _ sums: __m256i, _ a: VNNIRow) -> __m256 {
            let scaled = _mm256_fmadd_ps(scale, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a.scales[b])), acc)
            return _mm256_fnmadd_ps(minimum, _mm256_set1_ps(a.scales[b] * Float(a.halfSums[2 * b + h])), scaled)
        }
        acc.v0 = tail(acc.v0, s.v0, a.0)
        if count > 1 { acc.v1 = tail(acc.v1, s.v1, a.1); acc.v2 = tail(acc.v2, s.v2, a.2); acc.v3 = tail(acc.v3, s.v3, a.3) }
    }
}

/// Q8_0: codes in as q + 128, each token's sum starting at −128·Σa; acc += d·(s·Σq·a).
@inline(__always)
func byteBlock(_ acc: inout Floats4, _ group: UnsafeRawPointer, _ b: Int, _ a: (VNNIRow, VNNIRow, VNNIRow, VNNIRow), count: Int, kind: GroupKind) {
    let block = group + b * kind.blockBytes
    @inline(__always) func start(_ a: VNNIRow) -> __m256i { _mm256_set1_epi32(-128 &* (a.halfSums[2 * b] &+ a.halfSums[2 * b + 1])) }
    let s0 = start(a.0)
    var s = count > 1 ? Lanes4(v0: s0, v1: start(a.1), v2: start(a.2), v3: start(a.3)) : Lanes4(v0: s0, v1: s0, v2: s0, v3: s0)
    for k in 0..<8 { multiplyAdd(&s, _mm256_xor_si256(load32(block + 16 + 32 * k), _mm256_set1_epi8(-128)), a, b, k, count: count) }
    let d = halves8(block)
    @inline(__always) func tail(_ acc: __m256, _ sums: __m256i, _ a: VNNIRow) -> __m256 {
        _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a.scales[b])), acc)
    }
    acc.v0 = tail(acc.v0, s.v0, a.0)
    if count > 1 { acc.v1 = tail(acc.v1, s.v1, a.1); acc.v2 = tail(acc.v2, s.v2, a.2); acc.v3 = tail(acc.v3, s.v3, a.3) }
}

@inline(__always)
func groupDot(_ group: UnsafeRawPointer, _ a: (VNNIRow, VNNIRow, VNNIRow, VNNIRow), count: Int, blocks: Int, kind: GroupKind,
              prefetchGroupBytes: Int = 0) -> Floats4 {
    let zero = _mm256_setzero_ps()
    var acc = Floats4(v0: zero, v1: zero, v2: zero, v3: zero)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchShare(group, b, ahead: prefetchGroupBytes, groupBytes: prefetchGroupBytes, blocks: blocks) }
        switch kind.codes {
        case .nibbles, .planes: nibbleBlock(&acc, group, b, a, count: count, kind: kind)
        case .sixBit, .threeBit: scaledHalvesBlock(&acc, group, b, a, count: count, kind: kind)
        case .eightBit: byteBlock(&acc, group, b, a, count: count, kind: kind)
        case .twoBit: twoBitBlock(&acc, group, b, a, count: count, kind: kind)
        }
    }
    return acc
}

@inline(__always)
func groupTiles(_ weights: UnsafeRawPointer, _ format: VNNIInterleavedFormat, _ groups: Range<Int>, _ act: VNNIActivations,
                _ out: UnsafeMutablePointer<Float>, _ outStride: Int, kind: GroupKind) {
    let blocks = format.blocks, groupBytes = format.groupBytes, tokens = act.rows
    let strip = max(1, (128 * 1024) / groupBytes)
    var stripStart = groups.lowerBound
    while stripStart < groups.upperBound {
        let stripEnd = min(groups.upperBound, stripStart + strip)
        var t = 0
        while t + 4 <= tokens {
            let a = (act.row(t), act.row(t + 1), act.row(t + 2), act.row(t + 3))
            for g in stripStart..<stripEnd {
                let r = groupDot(weights + g * groupBytes, a, count: 4, blocks: blocks, kind: kind)
                _mm256_storeu_ps(out + t * outStride + 8 * g, r.v0)
                _mm256_storeu_ps(out + (t + 1) * outStride + 8 * g, r.v1)
                _mm256_storeu_ps(out + (t + 2) * outStride + 8 * g, r.v2)
                _mm256_storeu_ps(out + (t + 3) * outStride + 8 * g, r.v3)
            }
            t += 4
        }
        while t < tokens {
            let row = act.row(t)
            for g in stripStart..<stripEnd {
                // One token streams each group once: the next group's lines are requested block by block.
                _mm256_storeu_ps(out + t * outStride + 8 * g, groupDot(weights + g * groupBytes, (row, row, row, row), count: 1, blocks: blocks, kind: kind,
                                                                       prefetchGroupBytes: tokens == 1 ? groupBytes : 0).v0)
            }
            t += 1
        }
        stripStart = stripEnd
    }
}

/// `out[t * outStride + o] = W[o] · act[t]` for the rows of `groups` (8 rows each) of an
/// interleaved matrix, for every activation row.
@inline(never)
public func interleavedMatMulAVXVNNI(_ format: VNNIInterleavedFormat, weights: UnsafeRawPointer, groups: Range<Int>,
                                     act: VNNIActivations, out: UnsafeMutablePointer<Float>, outStride: Int) {
    guard !groups.isEmpty else { return }
    let bytes = format.blockBytes
    func kind(_ codes: GroupKind.Codes, min: Bool = false, fifth: Bool = false, offset: Float = 0, k: Bool = false) -> GroupKind {
        GroupKind(codes: codes, hasMin: min, hasHighBit: fifth, offset: offset, kQuant: k, blockBytes: bytes)
    }
    switch format.family {
    case .q4_0: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.nibbles, offset: -8))
    case .q4_1: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.nibbles, min: true))
    case .q5_0: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.nibbles, fifth: true, offset: -16))
    case .q5_1: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.nibbles, min: true, fifth: true))
    case .q4_K: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.nibbles, min: true, k: true))
    case .q5_K: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.nibbles, min: true, fifth: true, k: true))
    case .q6_K: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.sixBit, k: true))
    case .q3_K: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.threeBit, k: true))
    case .q2_K: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.twoBit, k: true))
    case .q8_0: groupTiles(weights, format, groups, act, out, outStride, kind: kind(.eightBit))
    case .groupwise(let bits, let runs):
        let grouped = GroupKind(codes: bits == 4 ? .nibbles : .planes, hasMin: true, hasHighBit: bits == 3, offset: 0, kQuant: false,
                                grouped: true, runShift: runs.trailingZeroBitCount, blockBytes: bytes)
        groupTiles(weights, format, groups, act, out, outStride, kind: grouped)
    }
}
#endif
