#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

/// Q6_K in the eight-row interleaved layout (see `InterleavedLayout`), per super-block of 256
/// columns: the 8 rows' f16 d (16 bytes); their int8 scales, one per 16 columns (group-major:
/// byte 8·group + r, 128 bytes); then for each 32-column sub-block the low 4 bits of the codes as
/// in the block-32 layout (128 bytes) and their top 2 bits in two vectors of 32 bytes: vector h,
/// byte 4r+i, bits 2j..2j+1 = top bits of row r's code 4(4h+j)+i. A weight is d·sc·(q − 32).
/// Same size as the file (8 × 210 bytes).
extension InterleavedLayout {
    static let superBlockBytesK6 = 16 + 128 + 8 * 192

    /// Code (0...63) of column c of a GGML Q6_K super-block.
    static func codeK6(_ block: UnsafeRawPointer, _ c: Int) -> UInt8 {
        let n = c / 128, k = (c % 128) / 32, l = c % 32
        let low = block.load(fromByteOffset: 64 * n + l + (k % 2) * 32, as: UInt8.self)
        let high = block.load(fromByteOffset: 128 + 32 * n + l, as: UInt8.self)
        return (k < 2 ? low & 0x0F : low >> 4) | ((high >> UInt8(2 * k)) & 3) << 4
    }

    func repackK6(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        for group in 0..<(rows / 8) {
            for s in 0..<(blocks / 8) {
                let dst = out + group * groupBytes + s * blockBytes
                for r in 0..<8 {
                    let block = source + (group * 8 + r) * rowBytes + s * 210
                    dst.storeBytes(of: block.loadUnaligned(fromByteOffset: 208, as: UInt16.self), toByteOffset: 2 * r, as: UInt16.self)
                    for scaleGroup in 0..<16 {
                        dst.storeBytes(of: block.load(fromByteOffset: 192 + scaleGroup, as: UInt8.self), toByteOffset: 16 + 8 * scaleGroup + r, as: UInt8.self)
                    }
                    for g in 0..<8 {
                        let codes = dst + 144 + 192 * g
                        func code(_ c: Int) -> UInt8 { Self.codeK6(block, 32 * g + c) }
                        for i in 0..<4 {
                            for j in 0..<4 {
                                codes.storeBytes(of: (code(4 * j + i) & 0x0F) | (code(16 + 4 * j + i) & 0x0F) << 4,
                                                 toByteOffset: 32 * j + 4 * r + i, as: UInt8.self)
                            }
                            for h in 0..<2 {
                                var top: UInt8 = 0
                                for j in 0..<4 { top |= (code(4 * (4 * h + j) + i) >> 4) << UInt8(2 * j) }
                                codes.storeBytes(of: top, toByteOffset: 128 + 32 * h + 4 * r + i, as: UInt8.self)
                            }
                        }
                    }
                }
            }
        }
    }

    func dequantizeRowK6(_ group: UnsafeRawPointer, _ r: Int, into out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let header = group + (b / 8) * blockBytes, codes = header + 144 + 192 * (b % 8)
            let d = loadHalf(header, 2 * r)
            for c in 0..<32 {
                let scale = Float(header.load(fromByteOffset: 16 + 8 * (2 * (b % 8) + c / 16) + r, as: Int8.self))
                let k = c / 4, i = c % 4
                let byte = codes.load(fromByteOffset: 32 * (k % 4) + 4 * r + i, as: UInt8.self)
                let top = codes.load(fromByteOffset: 128 + 32 * (k / 4) + 4 * r + i, as: UInt8.self)
                let q = Int((k < 4 ? byte & 0x0F : byte >> 4) | ((top >> UInt8(2 * (k % 4))) & 3) << 4)
                out[b * 32 + c] = d * scale * Float(q - 32)
            }
        }
    }
}

#if arch(x86_64)
/// The 32 codes of step k (0..<8) of a Q6_K sub-block: low nibbles or high, with their top bits.
@inline(__always)
func interleavedCodesK6(_ codes: UnsafeRawPointer, _ k: Int, top: __m256i) -> __m256i {
    let bytes = loadBytes32(codes + 32 * (k % 4))
    let low = _mm256_and_si256(k < 4 ? bytes : _mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0F))
    let moved: __m256i
    switch k % 4 {
    case 0: moved = _mm256_slli_epi16(top, 4)
    case 1: moved = _mm256_slli_epi16(top, 2)
    case 2: moved = top
    default: moved = _mm256_srli_epi16(top, 2)
    }
    return _mm256_or_si256(low, _mm256_and_si256(moved, _mm256_set1_epi8(0x30)))
}

/// The 8 rows' d·sc for scale group `scaleGroup` of a super-block header.
@inline(__always)
func scalesK6(_ header: UnsafeRawPointer, _ d: __m256, _ scaleGroup: Int) -> __m256 {
    let bytes = _mm_loadl_epi64((header + 16 + 8 * scaleGroup).assumingMemoryBound(to: __m128i.self))
    return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)))
}

/// acc += d·sc · s·(Σu·a − 2^offsetShift·Σa) for one token and one 16-column half (`sums` = Σu·a per
/// row): the codes u are stored unsigned, offset by 32 (Q6_K, shift 5) or 4 (Q3_K, shift 2).
@inline(__always)
func accumulateCenteredHalf(_ acc: __m256, _ sums: __m256i, scale: __m256, offsetShift: Int32, _ a: Q8Row, _ b: Int, _ h: Int) -> __m256 {
    let centered = _mm256_sub_epi32(sums, _mm256_set1_epi32(a.halfSums[2 * b + h] << offsetShift))
    return _mm256_fmadd_ps(scale, _mm256_mul_ps(_mm256_cvtepi32_ps(centered), _mm256_set1_ps(a.scales[b])), acc)
}

/// Eight rows × one token. Each half sums two steps in 16 bits (≤ 2·2·63·127), widens, twice.
@inline(__always)
func interleavedDotK6x1(_ group: UnsafeRawPointer, _ a: Q8Row, blocks: Int, prefetchGroupBytes: Int = 0) -> __m256 {
    var acc = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        if prefetchGroupBytes > 0 { prefetchShare(group, b, ahead: prefetchGroupBytes, groupBytes: prefetchGroupBytes, blocks: blocks) }
        let header = group + (b / 8) * InterleavedLayout.superBlockBytesK6, codes = header + 144 + 192 * (b % 8)
        let d = loadHalves8(header)
        for h in 0..<2 {
            let top = loadBytes32(codes + 128 + 32 * h)
            var sums = _mm256_setzero_si256()
            for pair in 0..<2 {
                let k = 4 * h + 2 * pair
                let p = _mm256_add_epi16(_mm256_maddubs_epi16(interleavedCodesK6(codes, k, top: top), stepActivations(a, b, k)),
                                         _mm256_maddubs_epi16(interleavedCodesK6(codes, k + 1, top: top), stepActivations(a, b, k + 1)))
                sums = _mm256_add_epi32(sums, _mm256_madd_epi16(p, ones))
            }
            acc = accumulateCenteredHalf(acc, sums, scale: scalesK6(header, d, 2 * (b % 8) + h), offsetShift: 5, a, b, h)
        }
    }
    return acc
}

@inline(__always)
func interleavedDotK6x4(_ group: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                        blocks: Int) -> (__m256, __m256, __m256, __m256) {
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    let ones = _mm256_set1_epi16(1)
    for b in 0..<blocks {
        let header = group + (b / 8) * InterleavedLayout.superBlockBytesK6, codes = header + 144 + 192 * (b % 8)
        let d = loadHalves8(header)
        for h in 0..<2 {
            let top = loadBytes32(codes + 128 + 32 * h)
            var s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256(), s2 = _mm256_setzero_si256(), s3 = _mm256_setzero_si256()
            for pair in 0..<2 {
                let k = 4 * h + 2 * pair
                let w0 = interleavedCodesK6(codes, k, top: top), w1 = interleavedCodesK6(codes, k + 1, top: top)
                @inline(__always) func pairSum(_ a: Q8Row) -> __m256i {
                    _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w0, stepActivations(a, b, k)),
                                                       _mm256_maddubs_epi16(w1, stepActivations(a, b, k + 1))), ones)
                }
                s0 = _mm256_add_epi32(s0, pairSum(a0))
                s1 = _mm256_add_epi32(s1, pairSum(a1))
                s2 = _mm256_add_epi32(s2, pairSum(a2))
                s3 = _mm256_add_epi32(s3, pairSum(a3))
            }
            let scale = scalesK6(header, d, 2 * (b % 8) + h)
            acc0 = accumulateCenteredHalf(acc0, s0, scale: scale, offsetShift: 5, a0, b, h)
            acc1 = accumulateCenteredHalf(acc1, s1, scale: scale, offsetShift: 5, a1, b, h)
            acc2 = accumulateCenteredHalf(acc2, s2, scale: scale, offsetShift: 5, a2, b, h)
            acc3 = accumulateCenteredHalf(acc3, s3, scale: scale, offsetShift: 5, a3, b, h)
        }
    }
    return (acc0, acc1, acc2, acc3)
}
#endif
