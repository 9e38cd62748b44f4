#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Int8-activation dot products for Q5_0, Q5_1, the K-quants and the group-wise extension types through one generic kernel:
/// each group of 32 weights (one activation block) is decoded to 32 small integers q with a scale
/// per half (16 weights) and an offset, so that weight = scale·q + offset; then one integer
/// multiply-add per group, as the Q4/Q8 kernels do. Signed q (Q3_K, Q5_0, Q6_K) go through the
/// sign trick; unsigned ones (Q2_K, Q4_K, Q5_K, Q5_1) straight in.
struct DecodedGroup {
    var quants = SIMD32<Int8>()
    var scale0: Float = 0, scale1: Float = 0
    /// Offset per weight for each half (Q2_K's minimum is per 16 weights, the others' per 32).
    var offset0: Float = 0, offset1: Float = 0
    var signed = false
}

extension BlockFormat {
    /// Decodes group `g` (the g-th run of 32 weights) of a row: its scales and offsets, then its codes.
    @inline(__always)
    func decodeGroup(_ row: UnsafeRawPointer, _ g: Int, into out: inout DecodedGroup, vector: Bool = true) {
        groupScales(row, g, into: &out)
        #if arch(x86_64)
        if vector && self != .q6_K { out.quants = unsafeBitCast(groupCodesAVX2(row, g), to: SIMD32<Int8>.self); return }
        #endif
        groupCodes(row, g, into: &out.quants)
    }

    /// The scale per half, offset per half and signedness of group `g`.
    @inline(__always)
    func groupScales(_ row: UnsafeRawPointer, _ g: Int, into out: inout DecodedGroup) {
        @inline(__always) func byte(_ p: UnsafeRawPointer, _ i: Int) -> Int { Int(p.load(fromByteOffset: i, as: UInt8.self)) }
        switch self {
        case .q5_0, .q5_1:
            let block = row + g * bytesPerBlock
            let hasMin = self == .q5_1
            out.scale0 = loadHalf(block, 0); out.scale1 = out.scale0
            out.offset0 = hasMin ? loadHalf(block, 2) : 0; out.offset1 = out.offset0
            out.signed = !hasMin
        case .q4_K, .q5_K:
            let block = row + (g / 8) * bytesPerBlock
            let (sc, m) = Self.scaleMinK4(g % 8, block + 4)
            out.scale0 = loadHalf(block, 0) * Float(sc); out.scale1 = out.scale0
            out.offset0 = -loadHalf(block, 2) * Float(m); out.offset1 = out.offset0
            out.signed = false
        case .q2_K, .q3_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let half = sub / 4, plane = sub % 4
            if self == .q3_K {
                let d = loadHalf(block, 108)
                out.scale0 = d * Float(Self.scaleQ3K(half * 8 + plane * 2, block + 96))
                out.scale1 = d * Float(Self.scaleQ3K(half * 8 + plane * 2 + 1, block + 96))
                out.offset0 = 0; out.offset1 = 0
            } else {
                let d = loadHalf(block, 80), dmin = loadHalf(block, 82)
                let s0 = byte(block, half * 8 + plane * 2), s1 = byte(block, half * 8 + plane * 2 + 1)
                out.scale0 = d * Float(s0 & 0x0F); out.scale1 = d * Float(s1 & 0x0F)
                out.offset0 = -dmin * Float(s0 >> 4); out.offset1 = -dmin * Float(s1 >> 4)
            }
            out.signed = self == .q3_K
        case .q6_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let half = sub / 4, k = sub % 4
            let d = loadHalf(block, 208)
            out.scale0 = d * Float(block.load(fromByteOffset: 192 + half * 8 + 2 * k, as: Int8.self))
            out.scale1 = d * Float(block.load(fromByteOffset: 192 + half * 8 + 1 + 2 * k, as: Int8.self))
            out.offset0 = 0; out.offset1 = 0
            out.signed = true
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
            groupwiseScales(row, g, into: &out)
        default:
            fatalError("\(name) has its own kernel")
        }
    }

    /// The 32 codes of group `g`, element by element (the portable path, and Q6_K's).
    @inline(__always)
    func groupCodes(_ row: UnsafeRawPointer, _ g: Int, into quants: inout SIMD32<Int8>) {
        @inline(__always) func byte(_ p: UnsafeRawPointer, _ i: Int) -> Int { Int(p.load(fromByteOffset: i, as: UInt8.self)) }
        switch self {
        case .q5_0, .q5_1:
            let block = row + g * bytesPerBlock
            let hasMin = self == .q5_1
            let qhOffset = hasMin ? 4 : 2
            let qh = block.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self).littleEndian
            for j in 0..<16 {
                let b = byte(block, qhOffset + 4 + j)
                let low = (b & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
                let high = (b >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                quants[j] = Int8(hasMin ? low : low - 16)
                quants[j + 16] = Int8(hasMin ? high : high - 16)
            }
        case .q4_K, .q5_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let five = self == .q5_K
            let qs = (five ? 48 : 16) + (sub / 2) * 32, shift = 4 * (sub % 2)
            for l in 0..<32 {
                var q = (byte(block, qs + l) >> shift) & 0x0F
                if five { q |= ((byte(block, 16 + l) >> sub) & 1) << 4 }
                quants[l] = Int8(q)
            }
        case .q2_K, .q3_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let three = self == .q3_K
            let qs = (three ? 32 : 16) + (sub / 4) * 32
            for l in 0..<32 {
                let low = (byte(block, qs + l) >> (2 * (sub % 4))) & 3
                quants[l] = Int8(three ? low - (((byte(block, l) >> sub) & 1) == 1 ? 0 : 4) : low)
            }
        case .q6_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let half = sub / 4, k = sub % 4
            for l in 0..<32 {
                let low = (byte(block, half * 64 + l + 32 * (k & 1)) >> (4 * (k >> 1))) & 0x0F
                let high = (byte(block, 128 + half * 32 + l) >> (2 * k)) & 3
                quants[l] = Int8((low | high << 4) - 32)
            }
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
            groupwiseCodes(row, g, into: &quants)
        default:
            fatalError("\(name) has its own kernel")
        }
    }

    #if arch(x86_64)
    /// `groupCodes` by vector shifts and masks (the same integers).
    @inline(__always)
    func groupCodesAVX2(_ row: UnsafeRawPointer, _ g: Int) -> __m256i {
        let one = _mm256_set1_epi8(1)
        switch self {
        case .q5_0, .q5_1:
            let block = row + g * bytesPerBlock
            let qhOffset = self == .q5_1 ? 4 : 2
            let bits = block.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self).littleEndian
            let q = _mm256_or_si256(unpackNibbles(block + qhOffset + 4), fifthBits(bits))
            return self == .q5_1 ? q : _mm256_sub_epi8(q, _mm256_set1_epi8(16))
        case .q4_K, .q5_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let packed = loadBytes32(block + (self == .q5_K ? 48 : 16) + (sub / 2) * 32)
            let q = _mm256_and_si256(sub % 2 == 0 ? packed : _mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0F))
            guard self == .q5_K else { return q }
            let high = _mm256_and_si256(_mm256_srl_epi16(loadBytes32(block + 16), _mm_cvtsi32_si128(Int32(sub))), one)
            return _mm256_or_si256(q, _mm256_slli_epi16(high, 4))
        case .q2_K, .q3_K:
            let block = row + (g / 8) * bytesPerBlock, sub = g % 8
            let packed = loadBytes32(block + (self == .q3_K ? 32 : 16) + (sub / 4) * 32)
            let q = _mm256_and_si256(_mm256_srl_epi16(packed, _mm_cvtsi32_si128(Int32(2 * (sub % 4)))), _mm256_set1_epi8(3))
            guard self == .q3_K else { return q }
            // q − 4 where the high bit is clear: low + 4·bit − 4.
            let bit = _mm256_and_si256(_mm256_srl_epi16(loadBytes32(block), _mm_cvtsi32_si128(Int32(sub))), one)
            return _mm256_sub_epi8(_mm256_or_si256(q, _mm256_slli_epi16(bit, 2)), _mm256_set1_epi8(4))
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
            return groupwiseCodesAVX2(row, g)
        default:
            fatalError("\(name) has its own kernel")
        }
    }
    #endif
}

/// Σ over the two halves of one activation block: quants·(scale per half), plus the offsets
/// against the block's quant sums. Returns (products, offset term) for one activation row.
@inline(__always)
func decodedGroupDot(_ group: inout DecodedGroup, _ a: Q8Row, _ b: Int, vector: Bool = true) -> (SIMD8<Float>, Float) {
    let y = a.quants + b * 32
    var offsets: Float = 0
    if group.offset0 != 0 || group.offset1 != 0 {
        if group.offset0 == group.offset1 {
            offsets = group.offset0 * a.sums[b]
        } else {
            // Q2_K's minimum per 16 weights: the activation sums per half, computed once at quantization.
            let low = a.halfSums[2 * b], high = a.halfSums[2 * b + 1]
            offsets = a.scales[b] * (group.offset0 * Float(low) + group.offset1 * Float(high))
        }
    }
    let s0 = group.scale0 * a.scales[b], s1 = group.scale1 * a.scales[b]
    let scales = SIMD8<Float>(s0, s0, s0, s0, s1, s1, s1, s1)
    #if arch(x86_64)
    if vector {
        let w = unsafeBitCast(group.quants, to: __m256i.self)
        let x = loadBytes32(UnsafeRawPointer(y))
        let p = group.signed ? multiplySum(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)) : multiplySum(w, x)
        return (scales * unsafeBitCast(p, to: SIMD8<Float>.self), offsets)
    }
    #endif
    var lanes = SIMD8<Float>()
    for lane in 0..<8 {
        var total: Int32 = 0
        for i in (lane * 4)..<(lane * 4 + 4) { total += Int32(group.quants[i]) * Int32(y[i]) }
        lanes[lane] = Float(total)
    }
    return (scales * lanes, offsets)
}

/// One weight row against one activation row (`vector: false`: the portable loops, on any CPU).
@inline(__always)
func dotDecoded1(_ format: BlockFormat, _ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int, vector: Bool = true) -> Float {
    var group = DecodedGroup()
    var acc = SIMD8<Float>(), offsets: Float = 0
    for b in 0..<blocks {
        format.decodeGroup(w, b, into: &group, vector: vector)
        let (p, o) = decodedGroupDot(&group, a, b, vector: vector)
        acc += p
        offsets += o
    }
    return horizontalAdd(acc) + offsets
}

#if arch(x86_64)
/// Q3_K against one activation row (decode): the generic kernel's arithmetic, operation for
/// operation (so results equal `dotDecoded4`'s per row), with the super-block's sixteen scales
/// decoded once instead of twice per group and the dispatch on the format hoisted out of the loop.
@inline(__always)
func dotQ3_Kx1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    var acc = SIMD8<Float>()
    var scales = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                  Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
    return withUnsafeMutableBytes(of: &scales) { raw in
        let scale = raw.baseAddress!.assumingMemoryBound(to: Float.self)
        for b in 0..<blocks {
            let sub = b % 8
            if sub == 0 {
                let block = w + (b / 8) * 110, d = loadHalf(block, 108)
                for i in 0..<16 { scale[i] = d * Float(BlockFormat.scaleQ3K(i, block + 96)) }
            }
            let first = (sub / 4) * 8 + (sub % 4) * 2
            let q = BlockFormat.q3_K.groupCodesAVX2(w, b)
            let s0 = scale[first] * a.scales[b], s1 = scale[first + 1] * a.scales[b]
            let p = multiplySum(_mm256_sign_epi8(q, q), _mm256_sign_epi8(loadBytes32(UnsafeRawPointer(a.quants + b * 32)), q))
            acc += SIMD8<Float>(s0, s0, s0, s0, s1, s1, s1, s1) * p
        }
        let offsets: Float = 0
        return horizontalAdd(acc) + offsets
    }
}
#endif

/// One weight row against four activation rows: each group is decoded once. Every row is summed
/// in the order of `dotDecoded1`, so batched and single results are bit-identical.
@inline(__always)
func dotDecoded4(_ format: BlockFormat, _ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                 blocks: Int) -> SIMD4<Float> {
    var group = DecodedGroup()
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
    var offsets = SIMD4<Float>()
    for b in 0..<blocks {
        format.decodeGroup(w, b, into: &group)
        let r0 = decodedGroupDot(&group, a0, b), r1 = decodedGroupDot(&group, a1, b)
        let r2 = decodedGroupDot(&group, a2, b), r3 = decodedGroupDot(&group, a3, b)
        acc0 += r0.0; acc1 += r1.0; acc2 += r2.0; acc3 += r3.0
        offsets += SIMD4(r0.1, r1.1, r2.1, r3.1)
    }
    return SIMD4(horizontalAdd(acc0), horizontalAdd(acc1), horizontalAdd(acc2), horizontalAdd(acc3)) + offsets
}
