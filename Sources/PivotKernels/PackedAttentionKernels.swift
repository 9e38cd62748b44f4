#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// The inner loops of attention on KIVI codes, specialized at compile time on the code width's
/// widening (`OctetReader`) and on how many query heads share a pass (`HeadChunk`, up to four), so
/// every accumulator and the shift/mask constants stay in registers.

protocol OctetReader {
    var bits: Int { get }
    func read(_ p: UnsafeRawPointer) -> SIMD8<Float>
}

/// 2-, 3- and 4-bit octets: one 32-bit broadcast, a per-lane shift, a mask.
struct NarrowOctets: OctetReader {
    let bits: Int
    #if arch(x86_64)
    let shifts: __m256i, mask: __m256i
    init(_ format: PackedCodeFormat) {
        bits = format.bits
        shifts = unsafeBitCast(format.shifts, to: __m256i.self); mask = unsafeBitCast(format.mask, to: __m256i.self)
    }
    @inline(__always) func read(_ p: UnsafeRawPointer) -> SIMD8<Float> {
        let word = _mm256_set1_epi32(Int32(bitPattern: p.loadUnaligned(as: UInt32.self)))
        return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(word, shifts), mask))
    }
    #else
    let format: PackedCodeFormat
    init(_ format: PackedCodeFormat) { bits = format.bits; self.format = format }
    @inline(__always) func read(_ p: UnsafeRawPointer) -> SIMD8<Float> { format.unpack(p) }
    #endif
}

/// 8-bit octets: eight bytes widened.
struct ByteOctets: OctetReader {
    var bits: Int { 8 }
    @inline(__always) func read(_ p: UnsafeRawPointer) -> SIMD8<Float> {
        #if arch(x86_64)
        let raw = _mm_cvtsi64_si128(Int64(bitPattern: p.loadUnaligned(as: UInt64.self)))
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(raw))
        #else
        return PackedCodeFormat(bits: 8).unpack(p)
        #endif
    }
}

protocol HeadChunk { static var count: Int { get } }
enum OneHead: HeadChunk { static var count: Int { 1 } }
enum TwoHeads: HeadChunk { static var count: Int { 2 } }
enum ThreeHeads: HeadChunk { static var count: Int { 3 } }
enum FourHeads: HeadChunk { static var count: Int { 4 } }

// MARK: Keys

/// Scores of whole coded key groups for up to four heads: score = Σ_c (q_c·scale_c)·code_c + q·minimum,
/// eight tokens per vector, two octets per pass.
func codedKeyScores(_ head: PackedHead, format: PackedCodeFormat, queries: UnsafePointer<Float>, heads: Int,
                    groups: Range<Int>, scale: Float, scratch: AttentionScratch, scores: UnsafeMutablePointer<Float>) {
    switch (heads, format.bits == 8) {
    case (1, false): keyGroups(OneHead.self, NarrowOctets(format), head, queries, groups, scale, scratch, scores)
    case (2, false): keyGroups(TwoHeads.self, NarrowOctets(format), head, queries, groups, scale, scratch, scores)
    case (3, false): keyGroups(ThreeHeads.self, NarrowOctets(format), head, queries, groups, scale, scratch, scores)
    case (_, false): keyGroups(FourHeads.self, NarrowOctets(format), head, queries, groups, scale, scratch, scores)
    case (1, true): keyGroups(OneHead.self, ByteOctets(), head, queries, groups, scale, scratch, scores)
    case (2, true): keyGroups(TwoHeads.self, ByteOctets(), head, queries, groups, scale, scratch, scores)
    case (3, true): keyGroups(ThreeHeads.self, ByteOctets(), head, queries, groups, scale, scratch, scores)
    case (_, true): keyGroups(FourHeads.self, ByteOctets(), head, queries, groups, scale, scratch, scores)
    }
}

@inline(__always)
func keyGroups<H: HeadChunk, R: OctetReader>(_: H.Type, _ reader: R, _ head: PackedHead, _ queries: UnsafePointer<Float>,
                                             _ groups: Range<Int>, _ scale: Float, _ scratch: AttentionScratch,
                                             _ scores: UnsafeMutablePointer<Float>) {
    let n = H.count, d = head.headDim, g = head.group, octets = g / 8, channelBytes = head.keyChannelBytes
    let stride = scratch.scoreStride, scaled = scratch.scaledQuery, offsets = scratch.offsets
    for m in groups {
        // q·scale per channel and q·minimum, per head, for this group.
        let scales = UnsafeRawPointer(head.keyScales + m * d), minimums = UnsafeRawPointer(head.keyMinimums + m * d)
        for h in 0..<n {
            let q = queries + h * d
            var offset = SIMD8<Float>()
            var c = 0
            while c + 8 <= d {
                let qv = load8(q + c) * scale
                store8(qv * loadHalf8(scales, c, .f16), scaled + h * d + c)
                offset = offset.addingProduct(qv, loadHalf8(minimums, c, .f16))
                c += 8
            }
            var total = horizontalAdd(offset)
            while c < d {
                scaled[h * d + c] = q[c] * scale * halfToFloat(scales, c, .f16)
                total += q[c] * scale * halfToFloat(minimums, c, .f16)
                c += 1
            }
            offsets[h] = total
        }
        let codes = head.keyCodes + m * head.keyGroupBytes
        let row = scores + head.pivots + m * g
        var o = 0
        while o < octets {
            let two = o + 1 < octets, second = two ? reader.bits : 0
            var a0 = SIMD8<Float>(repeating: offsets[0]), b0 = a0
            var a1 = SIMD8<Float>(repeating: n > 1 ? offsets[1] : 0), b1 = a1
            var a2 = SIMD8<Float>(repeating: n > 2 ? offsets[2] : 0), b2 = a2
            var a3 = SIMD8<Float>(repeating: n > 3 ? offsets[3] : 0), b3 = a3
            var p = codes + o * reader.bits
            for c in 0..<d {
                let u = reader.read(p), v = reader.read(p + second)
                let q0 = SIMD8<Float>(repeating: scaled[c])
                a0 = a0.addingProduct(q0, u); b0 = b0.addingProduct(q0, v)
                if n > 1 { let q1 = SIMD8<Float>(repeating: scaled[d + c]); a1 = a1.addingProduct(q1, u); b1 = b1.addingProduct(q1, v) }
                if n > 2 { let q2 = SIMD8<Float>(repeating: scaled[2 * d + c]); a2 = a2.addingProduct(q2, u); b2 = b2.addingProduct(q2, v) }
                if n > 3 { let q3 = SIMD8<Float>(repeating: scaled[3 * d + c]); a3 = a3.addingProduct(q3, u); b3 = b3.addingProduct(q3, v) }
                p += channelBytes
            }
            let at = row + o * 8
            store8(a0, at); if two { store8(b0, at + 8) }
            if n > 1 { store8(a1, at + stride); if two { store8(b1, at + stride + 8) } }
            if n > 2 { store8(a2, at + 2 * stride); if two { store8(b2, at + 2 * stride + 8) } }
            if n > 3 { store8(a3, at + 3 * stride); if two { store8(b3, at + 3 * stride + 8) } }
            o += 2
        }
    }
}

// MARK: Values

/// out_h += Σ_j p_h[j]·(scale_j·code_j + minimum_j) over coded values of `positions`, up to four heads:
/// the weights p·scale per token and channel group go to a small table, the p·minimum terms to one
/// sum per group, and the codes are widened once for all heads.
func codedValues(_ head: PackedHead, format: PackedCodeFormat, heads: Int, positions: Range<Int>,
                 scores: UnsafePointer<Float>, scoreStride: Int, scratch: AttentionScratch, out: UnsafeMutablePointer<Float>) {
    switch (heads, format.bits == 8) {
    case (1, false): valueTiles(OneHead.self, NarrowOctets(format), head, positions, scores, scoreStride, scratch, out)
    case (2, false): valueTiles(TwoHeads.self, NarrowOctets(format), head, positions, scores, scoreStride, scratch, out)
    case (3, false): valueTiles(ThreeHeads.self, NarrowOctets(format), head, positions, scores, scoreStride, scratch, out)
    case (_, false): valueTiles(FourHeads.self, NarrowOctets(format), head, positions, scores, scoreStride, scratch, out)
    case (1, true): valueTiles(OneHead.self, ByteOctets(), head, positions, scores, scoreStride, scratch, out)
    case (2, true): valueTiles(TwoHeads.self, ByteOctets(), head, positions, scores, scoreStride, scratch, out)
    case (3, true): valueTiles(ThreeHeads.self, ByteOctets(), head, positions, scores, scoreStride, scratch, out)
    case (_, true): valueTiles(FourHeads.self, ByteOctets(), head, positions, scores, scoreStride, scratch, out)
    }
}

@inline(__always)
func valueTiles<H: HeadChunk, R: OctetReader>(_: H.Type, _ reader: R, _ head: PackedHead, _ positions: Range<Int>,
                                              _ scores: UnsafePointer<Float>, _ scoreStride: Int, _ scratch: AttentionScratch,
                                              _ out: UnsafeMutablePointer<Float>) {
    let n = H.count, d = head.headDim, groupsPerRow = d / head.group, perToken = n * groupsPerRow
    let octets = d / 8, weights = scratch.weights, minimumSums = scratch.offsets
    minimumSums.update(repeating: 0, count: perToken)
    var j = positions.lowerBound
    while j < positions.upperBound {
        let rows = min(AttentionScratch.tileTokens, positions.upperBound - j)
        for t in 0..<rows {
            let index = j + t - head.pivots
            let scales = head.valueScales + index * groupsPerRow, minimums = head.valueMinimums + index * groupsPerRow
            for h in 0..<n {
                let p = scores[h * scoreStride + j + t]
                for g in 0..<groupsPerRow {
                    weights[t * perToken + h * groupsPerRow + g] = p * Float(Float16(bitPattern: scales[g]))
                    minimumSums[h * groupsPerRow + g] += p * Float(Float16(bitPattern: minimums[g]))
                }
            }
        }
        let codes = head.valueCodes + (j - head.pivots) * head.valueRowBytes
        var o = 0
        while o < octets {
            let two = o + 1 < octets, second = two ? reader.bits : 0
            let g0 = o * 8 / head.group, g1 = two ? (o + 1) * 8 / head.group : g0
            let at = out + o * 8
            var a0 = load8(at), b0 = two ? load8(at + 8) : SIMD8<Float>()
            var a1 = n > 1 ? load8(at + d) : SIMD8<Float>(), b1 = n > 1 && two ? load8(at + d + 8) : SIMD8<Float>()
            var a2 = n > 2 ? load8(at + 2 * d) : SIMD8<Float>(), b2 = n > 2 && two ? load8(at + 2 * d + 8) : SIMD8<Float>()
            var a3 = n > 3 ? load8(at + 3 * d) : SIMD8<Float>(), b3 = n > 3 && two ? load8(at + 3 * d + 8) : SIMD8<Float>()
            var p = codes + o * reader.bits
            var w = UnsafePointer(weights)
            for _ in 0..<rows {
                let u = reader.read(p), v = reader.read(p + second)
                a0 = a0.addingProduct(SIMD8(repeating: w[g0]), u); b0 = b0.addingProduct(SIMD8(repeating: w[g1]), v)
                if n > 1 {
                    a1 = a1.addingProduct(SIMD8(repeating: w[groupsPerRow + g0]), u); b1 = b1.addingProduct(SIMD8(repeating: w[groupsPerRow + g1]), v)
                }
                if n > 2 {
                    a2 = a2.addingProduct(SIMD8(repeating: w[2 * groupsPerRow + g0]), u); b2 = b2.addingProduct(SIMD8(repeating: w[2 * groupsPerRow + g1]), v)
                }
                if n > 3 {
                    a3 = a3.addingProduct(SIMD8(repeating: w[3 * groupsPerRow + g0]), u); b3 = b3.addingProduct(SIMD8(repeating: w[3 * groupsPerRow + g1]), v)
                }
                p += head.valueRowBytes
                w += perToken
            }
            store8(a0, at); if two { store8(b0, at + 8) }
            if n > 1 { store8(a1, at + d); if two { store8(b1, at + d + 8) } }
            if n > 2 { store8(a2, at + 2 * d); if two { store8(b2, at + 2 * d + 8) } }
            if n > 3 { store8(a3, at + 3 * d); if two { store8(b3, at + 3 * d + 8) } }
            o += 2
        }
        j += rows
    }
    for h in 0..<n {
        for c in 0..<d { out[h * d + c] += minimumSums[h * groupsPerRow + c / head.group] }
    }
}
