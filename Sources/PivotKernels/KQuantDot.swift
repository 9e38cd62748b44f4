#if arch(x86_64)
import _Builtin_intrinsics.intel

/// AVX2 int8-activation kernels for the formats of a typical Q4_K_M file: Q4_K and Q6_K super-blocks
/// and the block-32 Q5_0 / Q5_1 that llama.cpp falls back to for rows not a multiple of 256. Each row
/// accumulates group by group in one chain, in the same order in the one-row and four-row forms,
/// so a token's result is bit-identical alone or in a batch. Other formats use `DecodedGroupDot`.

/// Byte i of the result is 0x10 where bit i of `bits` is set, else 0 (Q5's fifth bits).
@inline(__always)
func fifthBits(_ bits: UInt32) -> __m256i {
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(Int32(bitPattern: bits)),
                                     _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303))
    let select = _mm256_set1_epi64x(Int64(bitPattern: 0x8040_2010_0804_0201))
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The 32 signed weights (q − 16) of a Q5_0 block: low nibbles are weights 0-15, high 16-31.
@inline(__always)
func q5_0Quants(_ block: UnsafeRawPointer) -> __m256i {
    let bits = block.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian
    return _mm256_sub_epi8(_mm256_or_si256(unpackNibbles(block + 6), fifthBits(bits)), _mm256_set1_epi8(16))
}

@inline(__always)
func signedProduct(_ w: __m256i, _ a: UnsafePointer<Int8>) -> __m256 {
    multiplySum(_mm256_sign_epi8(w, w), _mm256_sign_epi8(loadBytes32(UnsafeRawPointer(a)), w))
}

@inline(__always)
func dotQ5_0x1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    var acc = _mm256_setzero_ps()
    for b in 0..<blocks {
        let block = w + b * 22
        acc = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(block, 0) * a.scales[b]), signedProduct(q5_0Quants(block), a.quants + b * 32), acc)
    }
    return horizontalSum(acc)
}

@inline(__always)
func dotQ5_0x4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row, blocks: Int) -> SIMD4<Float> {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    for b in 0..<blocks {
        let block = w + b * 22
        let d = loadHalf(block, 0), q = q5_0Quants(block), offset = b * 32
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a0.scales[b]), signedProduct(q, a0.quants + offset), acc0)
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * a1.scales[b]), signedProduct(q, a1.quants + offset), acc1)
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d * a2.scales[b]), signedProduct(q, a2.quants + offset), acc2)
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(d * a3.scales[b]), signedProduct(q, a3.quants + offset), acc3)
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3))
}

/// The 32 unsigned codes (0...31) of a Q5_1 block (w = d·q + m; Q5_K_M's fallback on 576-wide rows).
@inline(__always)
func q5_1Quants(_ block: UnsafeRawPointer) -> __m256i {
    let bits = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
    return _mm256_or_si256(unpackNibbles(block + 8), fifthBits(bits))
}

@inline(__always)
func dotQ5_1x1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    var acc = _mm256_setzero_ps()
    var minimum: Float = 0
    for b in 0..<blocks {
        let block = w + b * 24
        let product = multiplySum(q5_1Quants(block), loadBytes32(UnsafeRawPointer(a.quants + b * 32)))
        acc = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(block, 0) * a.scales[b]), product, acc)
        minimum += loadHalf(block, 2) * a.sums[b]
    }
    return horizontalSum(acc) + minimum
}

@inline(__always)
func dotQ5_1x4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row, blocks: Int) -> SIMD4<Float> {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    var minimum = SIMD4<Float>()
    for b in 0..<blocks {
        let block = w + b * 24
        let d = loadHalf(block, 0), m = loadHalf(block, 2), q = q5_1Quants(block), offset = b * 32
        @inline(__always) func product(_ a: Q8Row) -> __m256 { multiplySum(q, loadBytes32(UnsafeRawPointer(a.quants + offset))) }
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a0.scales[b]), product(a0), acc0)
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * a1.scales[b]), product(a1), acc1)
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d * a2.scales[b]), product(a2), acc2)
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(d * a3.scales[b]), product(a3), acc3)
        minimum += SIMD4(m * a0.sums[b], m * a1.sums[b], m * a2.sums[b], m * a3.sums[b])
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3)) + minimum
}

/// Q4_K: 8 groups of 32 per super-block; group g is the low (even g) or high (odd g) nibbles of
/// qs[32·(g/2) ..< +32], with 6-bit scale and min: w = d·sc·q − dmin·m.
@inline(__always)
func dotQ4_Kx1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    var acc = _mm256_setzero_ps()
    var minimum: Float = 0
    let mask = _mm256_set1_epi8(0x0F)
    for s in 0..<(blocks / 8) {
        let block = w + s * 144
        let d = loadHalf(block, 0), dmin = loadHalf(block, 2)
        for pair in 0..<4 {
            let bytes = loadBytes32(block + 16 + pair * 32)
            for nibble in 0..<2 {
                let g = pair * 2 + nibble, b = s * 8 + g
                let (sc, m) = BlockFormat.scaleMinK4(g, block + 4)
                let q = nibble == 0 ? _mm256_and_si256(bytes, mask) : _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * Float(sc) * a.scales[b]), multiplySum(q, loadBytes32(a.quants + b * 32)), acc)
                minimum += dmin * Float(m) * a.sums[b]
            }
        }
    }
    return horizontalSum(acc) - minimum
}

@inline(__always)
func dotQ4_Kx4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row, blocks: Int) -> SIMD4<Float> {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    var minimum = SIMD4<Float>()
    let mask = _mm256_set1_epi8(0x0F)
    for s in 0..<(blocks / 8) {
        let block = w + s * 144
        let d = loadHalf(block, 0), dmin = loadHalf(block, 2)
        for pair in 0..<4 {
            let bytes = loadBytes32(block + 16 + pair * 32)
            for nibble in 0..<2 {
                let g = pair * 2 + nibble, b = s * 8 + g, offset = b * 32
                let (sc, m) = BlockFormat.scaleMinK4(g, block + 4)
                let q = nibble == 0 ? _mm256_and_si256(bytes, mask) : _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask)
                let ds = d * Float(sc), dm = dmin * Float(m)
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(ds * a0.scales[b]), multiplySum(q, loadBytes32(a0.quants + offset)), acc0)
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(ds * a1.scales[b]), multiplySum(q, loadBytes32(a1.quants + offset)), acc1)
                acc2 = _mm256_fmadd_ps(_mm256_set1_ps(ds * a2.scales[b]), multiplySum(q, loadBytes32(a2.quants + offset)), acc2)
                acc3 = _mm256_fmadd_ps(_mm256_set1_ps(ds * a3.scales[b]), multiplySum(q, loadBytes32(a3.quants + offset)), acc3)
                minimum += SIMD4(dm * a0.sums[b], dm * a1.sums[b], dm * a2.sums[b], dm * a3.sums[b])
            }
        }
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3)) - minimum
}

/// The 32 signed weights (q − 32) of Q6_K group k (0..<4) of the 128-weight half at `half`.
@inline(__always)
func q6_KQuants(_ block: UnsafeRawPointer, half: Int, k: Int) -> __m256i {
    let low = loadBytes32(block + half * 64 + 32 * (k & 1))
    let nibbles = _mm256_and_si256(k >> 1 == 0 ? low : _mm256_srli_epi16(low, 4), _mm256_set1_epi8(0x0F))
    let high = _mm256_and_si256(_mm256_srli_epi16(loadBytes32(block + 128 + half * 32), Int32(2 * k)), _mm256_set1_epi8(3))
    return _mm256_sub_epi8(_mm256_or_si256(nibbles, _mm256_slli_epi16(high, 4)), _mm256_set1_epi8(32))
}

/// Scales of the two 16-weight halves of a group, as one vector over the product's 8 lanes.
@inline(__always)
func halfScales(_ s0: Float, _ s1: Float) -> __m256 { _mm256_setr_ps(s0, s0, s0, s0, s1, s1, s1, s1) }

@inline(__always)
func dotQ6_Kx1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    var acc = _mm256_setzero_ps()
    for s in 0..<(blocks / 8) {
        let block = w + s * 210
        let d = loadHalf(block, 208)
        for half in 0..<2 {
            for k in 0..<4 {
                let b = s * 8 + half * 4 + k
                let scale = block + 192 + half * 8 + 2 * k
                let ds = d * a.scales[b]
                let s0 = ds * Float(scale.load(as: Int8.self)), s1 = ds * Float(scale.load(fromByteOffset: 1, as: Int8.self))
                acc = _mm256_fmadd_ps(halfScales(s0, s1), signedProduct(q6_KQuants(block, half: half, k: k), a.quants + b * 32), acc)
            }
        }
    }
    return horizontalSum(acc)
}

@inline(__always)
func dotQ6_Kx4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row, blocks: Int) -> SIMD4<Float> {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    for s in 0..<(blocks / 8) {
        let block = w + s * 210
        let d = loadHalf(block, 208)
        for half in 0..<2 {
            for k in 0..<4 {
                let b = s * 8 + half * 4 + k, offset = b * 32
                let scale = block + 192 + half * 8 + 2 * k
                let sc0 = Float(scale.load(as: Int8.self)), sc1 = Float(scale.load(fromByteOffset: 1, as: Int8.self))
                let q = q6_KQuants(block, half: half, k: k)
                @inline(__always) func scales(_ r: Q8Row) -> __m256 { let ds = d * r.scales[b]; return halfScales(ds * sc0, ds * sc1) }
                acc0 = _mm256_fmadd_ps(scales(a0), signedProduct(q, a0.quants + offset), acc0)
                acc1 = _mm256_fmadd_ps(scales(a1), signedProduct(q, a1.quants + offset), acc1)
                acc2 = _mm256_fmadd_ps(scales(a2), signedProduct(q, a2.quants + offset), acc2)
                acc3 = _mm256_fmadd_ps(scales(a3), signedProduct(q, a3.quants + offset), acc3)
            }
        }
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3))
}
#endif
