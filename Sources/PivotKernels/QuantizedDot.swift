#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Integer dot products of GGML weight blocks with Q8 activations.
///
/// `dot1` handles one activation row, `dot4` four rows sharing each unpacked weight block
/// (the prefill GEMM tile). The AVX2 paths use `vpmaddubsw`/`vpmaddwd` like ggml; the portable
/// path is a plain loop, and the tests compare both with dequantize-then-float-dot.
public struct Q8Row {
    public let quants: UnsafePointer<Int8>
    public let scales: UnsafePointer<Float>
    public let sums: UnsafePointer<Float>
    public let halfSums: UnsafePointer<Int32>

    @inline(__always) public init(_ act: Q8Activations, row: Int) {
        quants = UnsafePointer(act.quants + row * act.columns)
        scales = UnsafePointer(act.scales + row * act.blocksPerRow)
        sums = UnsafePointer(act.scaledSums + row * act.blocksPerRow)
        halfSums = UnsafePointer(act.halfSums + row * 2 * act.blocksPerRow)
    }
}

#if arch(x86_64)
@inline(__always) func horizontalSum(_ v: __m256) -> Float {
    horizontalAdd(v)
}

@inline(__always) func loadBytes32(_ p: UnsafeRawPointer) -> __m256i {
    _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self))
}

/// 16 packed bytes → 32 unsigned nibbles, low halves first (the GGML order).
@inline(__always) func unpackNibbles(_ p: UnsafeRawPointer) -> __m256i {
    let packed = _mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))
    let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed)
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Σ u·s over 32 byte pairs, as 8 float partial sums (u unsigned ≤ 128, s signed).
@inline(__always) func multiplySum(_ u: __m256i, _ s: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}
#endif

// MARK: - One activation row

/// Dot product of one Q4_0/Q4_1 weight row with one Q8 row. `hasMin` selects Q4_1.
@inline(__always)
func dotNibbles1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int, hasMin: Bool, vector: Bool = true) -> Float {
    let stride = hasMin ? 20 : 18
    let qOffset = hasMin ? 4 : 2
    var minimumTerm: Float = 0
    #if arch(x86_64)
    if vector {
        // One chain, block after block: the order of the 4-row tiles below, so a token's result is
        // bit-identical alone (decode) or in a batch (prefill, draft verification).
        var acc = _mm256_setzero_ps()
        for b in 0..<blocks {
            let block = w + b * stride
            let d = loadHalf(block, 0)
            let m = hasMin ? loadHalf(block, 2) : -8 * d
            let product = multiplySum(unpackNibbles(block + qOffset), loadBytes32(a.quants + b * 32))
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.scales[b]), product, acc)
            minimumTerm += m * a.sums[b]
        }
        return horizontalSum(acc) + minimumTerm
    }
    #endif
    var total: Float = 0
    for b in 0..<blocks {
        let block = w + b * stride
        let d = loadHalf(block, 0)
        let m = hasMin ? loadHalf(block, 2) : -8 * d
        var isum: Int32 = 0
        for j in 0..<16 {
            let byte = block.load(fromByteOffset: qOffset + j, as: UInt8.self)
            isum += Int32(byte & 0x0F) * Int32(a.quants[b * 32 + j])
            isum += Int32(byte >> 4) * Int32(a.quants[b * 32 + j + 16])
        }
        total += d * a.scales[b] * Float(isum)
        minimumTerm += m * a.sums[b]
    }
    return total + minimumTerm
}

@inline(__always)
func dotQ8_0x1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int, vector: Bool = true) -> Float {
    #if arch(x86_64)
    if vector {
        // One chain, in the order of the 4-row tile (see dotNibbles1).
        var acc = _mm256_setzero_ps()
        for b in 0..<blocks {
            let block = w + b * 34
            let wq = loadBytes32(block + 2)
            let product = multiplySum(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(loadBytes32(a.quants + b * 32), wq))
            acc = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(block, 0) * a.scales[b]), product, acc)
        }
        return horizontalSum(acc)
    }
    #endif
    var total: Float = 0
    for b in 0..<blocks {
        let block = w + b * 34
        var isum: Int32 = 0
        for j in 0..<32 { isum += Int32(block.load(fromByteOffset: 2 + j, as: Int8.self)) * Int32(a.quants[b * 32 + j]) }
        total += loadHalf(block, 0) * a.scales[b] * Float(isum)
    }
    return total
}

// MARK: - Four activation rows (GEMM tile)
//
// Each row is summed in the one-row kernels' order, so batched and single results are bit-identical.

@inline(__always)
func dotNibbles4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                 blocks: Int, hasMin: Bool) -> SIMD4<Float> {
    #if arch(x86_64)
    let stride = hasMin ? 20 : 18
    let qOffset = hasMin ? 4 : 2
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
    var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    var minimumTerm = SIMD4<Float>()
    for b in 0..<blocks {
        let block = w + b * stride
        let d = loadHalf(block, 0)
        let m = hasMin ? loadHalf(block, 2) : -8 * d
        let wq = unpackNibbles(block + qOffset)
        let offset = b * 32
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a0.scales[b]), multiplySum(wq, loadBytes32(a0.quants + offset)), acc0)
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * a1.scales[b]), multiplySum(wq, loadBytes32(a1.quants + offset)), acc1)
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d * a2.scales[b]), multiplySum(wq, loadBytes32(a2.quants + offset)), acc2)
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(d * a3.scales[b]), multiplySum(wq, loadBytes32(a3.quants + offset)), acc3)
        minimumTerm += m * SIMD4(a0.sums[b], a1.sums[b], a2.sums[b], a3.sums[b])
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3)) + minimumTerm
    #else
    return SIMD4(dotNibbles1(w, a0, blocks: blocks, hasMin: hasMin), dotNibbles1(w, a1, blocks: blocks, hasMin: hasMin),
                 dotNibbles1(w, a2, blocks: blocks, hasMin: hasMin), dotNibbles1(w, a3, blocks: blocks, hasMin: hasMin))
    #endif
}

@inline(__always)
func dotQ8_0x4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row, blocks: Int) -> SIMD4<Float> {
    #if arch(x86_64)
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
    var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    for b in 0..<blocks {
        let block = w + b * 34
        let d = loadHalf(block, 0)
        let wq = loadBytes32(block + 2)
        let wAbs = _mm256_sign_epi8(wq, wq)
        let offset = b * 32
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a0.scales[b]), multiplySum(wAbs, _mm256_sign_epi8(loadBytes32(a0.quants + offset), wq)), acc0)
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * a1.scales[b]), multiplySum(wAbs, _mm256_sign_epi8(loadBytes32(a1.quants + offset), wq)), acc1)
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d * a2.scales[b]), multiplySum(wAbs, _mm256_sign_epi8(loadBytes32(a2.quants + offset), wq)), acc2)
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(d * a3.scales[b]), multiplySum(wAbs, _mm256_sign_epi8(loadBytes32(a3.quants + offset), wq)), acc3)
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3))
    #else
    return SIMD4(dotQ8_0x1(w, a0, blocks: blocks), dotQ8_0x1(w, a1, blocks: blocks),
                 dotQ8_0x1(w, a2, blocks: blocks), dotQ8_0x1(w, a3, blocks: blocks))
    #endif
}

// MARK: - Public entry points

/// Dot product of one weight row in `format` with row `row` of `act`.
public func quantizedDot(_ format: BlockFormat, weights: UnsafeRawPointer, act: Q8Activations, row: Int) -> Float {
    let a = Q8Row(act, row: row)
    if KernelISA.active == .portable { return portableDot(format, weights, a, blocks: act.blocksPerRow) }
    switch format {
    case .q4_0: return dotNibbles1(weights, a, blocks: act.blocksPerRow, hasMin: false)
    case .q4_1: return dotNibbles1(weights, a, blocks: act.blocksPerRow, hasMin: true)
    case .q8_0: return dotQ8_0x1(weights, a, blocks: act.blocksPerRow)
    #if arch(x86_64)
    case .q5_0: return dotQ5_0x1(weights, a, blocks: act.blocksPerRow)
    case .q5_1: return dotQ5_1x1(weights, a, blocks: act.blocksPerRow)
    case .q4_K: return dotQ4_Kx1(weights, a, blocks: act.blocksPerRow)
    case .q6_K: return dotQ6_Kx1(weights, a, blocks: act.blocksPerRow)
    case .q3_K: return dotQ3_Kx1(weights, a, blocks: act.blocksPerRow)
    case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
        return groupwiseDot(format, weights, a, blocks: act.blocksPerRow)
    #endif
    default: return dotDecoded1(format, weights, a, blocks: act.blocksPerRow)
    }
}

/// `out[t * outStride + o] = W[o] · act[t]` for `o` in `outputs` and every activation row.
/// W is row-major with `rowBytes` per output; callers split `outputs` across threads.
public func quantizedMatMul(_ format: BlockFormat, weights: UnsafeRawPointer, rowBytes: Int, outputs: Range<Int>,
                            act: Q8Activations, out: UnsafeMutablePointer<Float>, outStride: Int) {
    if KernelISA.active == .portable {
        matMulTiles(weights, rowBytes, outputs, act, out, outStride) { portableDot(format, $0, $1, blocks: $2) }
            quad: { w, a0, a1, a2, a3, blocks in
                SIMD4(portableDot(format, w, a0, blocks: blocks), portableDot(format, w, a1, blocks: blocks),
                      portableDot(format, w, a2, blocks: blocks), portableDot(format, w, a3, blocks: blocks))
            }
        return
    }
    switch format {
    case .q4_0: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotNibbles1($0, $1, blocks: $2, hasMin: false) }
        quad: { dotNibbles4($0, $1, $2, $3, $4, blocks: $5, hasMin: false) }
    case .q4_1: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotNibbles1($0, $1, blocks: $2, hasMin: true) }
        quad: { dotNibbles4($0, $1, $2, $3, $4, blocks: $5, hasMin: true) }
    case .q8_0: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotQ8_0x1($0, $1, blocks: $2) }
        quad: { dotQ8_0x4($0, $1, $2, $3, $4, blocks: $5) }
    #if arch(x86_64)
    case .q5_0: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotQ5_0x1($0, $1, blocks: $2) }
        quad: { dotQ5_0x4($0, $1, $2, $3, $4, blocks: $5) }
    case .q5_1: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotQ5_1x1($0, $1, blocks: $2) }
        quad: { dotQ5_1x4($0, $1, $2, $3, $4, blocks: $5) }
    case .q4_K: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotQ4_Kx1($0, $1, blocks: $2) }
        quad: { dotQ4_Kx4($0, $1, $2, $3, $4, blocks: $5) }
    case .q6_K: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotQ6_Kx1($0, $1, blocks: $2) }
        quad: { dotQ6_Kx4($0, $1, $2, $3, $4, blocks: $5) }
    case .q3_K: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotQ3_Kx1($0, $1, blocks: $2) }
        quad: { dotDecoded4(.q3_K, $0, $1, $2, $3, $4, blocks: $5) }
    case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
        groupwiseMatMul(format, weights, rowBytes, outputs, act, out, outStride)
    #endif
    default: matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotDecoded1(format, $0, $1, blocks: $2) }
        quad: { dotDecoded4(format, $0, $1, $2, $3, $4, blocks: $5) }
    }
}

/// The loops a CPU without AVX2 runs (and `PIVOT_ISA=portable` on any CPU).
@inline(__always)
func portableDot(_ format: BlockFormat, _ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    switch format {
    case .q4_0: return dotNibbles1(w, a, blocks: blocks, hasMin: false, vector: false)
    case .q4_1: return dotNibbles1(w, a, blocks: blocks, hasMin: true, vector: false)
    case .q8_0: return dotQ8_0x1(w, a, blocks: blocks, vector: false)
    default: return dotDecoded1(format, w, a, blocks: blocks, vector: false)
    }
}

/// Walks output rows in L2-sized strips, and within a strip four activation rows at a time.
@inline(__always)
func matMulTiles(_ weights: UnsafeRawPointer, _ rowBytes: Int, _ outputs: Range<Int>, _ act: Q8Activations,
                 _ out: UnsafeMutablePointer<Float>, _ outStride: Int,
                 single: (UnsafeRawPointer, Q8Row, Int) -> Float,
                 quad: (UnsafeRawPointer, Q8Row, Q8Row, Q8Row, Q8Row, Int) -> SIMD4<Float>) {
    let blocks = act.blocksPerRow
    let tokens = act.rows
    if tokens == 1 {
        let a = Q8Row(act, row: 0)
        for o in outputs { out[o] = single(weights + o * rowBytes, a, blocks) }
        return
    }
    let strip = max(1, (96 * 1024) / max(1, rowBytes))
    var stripStart = outputs.lowerBound
    while stripStart < outputs.upperBound {
        let stripEnd = min(outputs.upperBound, stripStart + strip)
        var t = 0
        while t + 4 <= tokens {
            let a0 = Q8Row(act, row: t), a1 = Q8Row(act, row: t + 1)
            let a2 = Q8Row(act, row: t + 2), a3 = Q8Row(act, row: t + 3)
            for o in stripStart..<stripEnd {
                let r = quad(weights + o * rowBytes, a0, a1, a2, a3, blocks)
                out[t * outStride + o] = r[0]
                out[(t + 1) * outStride + o] = r[1]
                out[(t + 2) * outStride + o] = r[2]
                out[(t + 3) * outStride + o] = r[3]
            }
            t += 4
        }
        while t < tokens {
            let a = Q8Row(act, row: t)
            for o in stripStart..<stripEnd { out[t * outStride + o] = single(weights + o * rowBytes, a, blocks) }
            t += 1
        }
        stripStart = stripEnd
    }
}

/// The exact path: each weight row dequantized to floats and dotted with float activations.
/// Slower than the int8 path; it reproduces a float reference implementation to ~1e-4.
public func quantizedMatMulFloat(_ format: BlockFormat, weights: UnsafeRawPointer, rowBytes: Int, outputs: Range<Int>,
                                 x: UnsafePointer<Float>, xStride: Int, columns: Int, tokens: Int,
                                 out: UnsafeMutablePointer<Float>, outStride: Int) {
    dequantizedMatMul(columns: columns, outputs: outputs, x: x, xStride: xStride, tokens: tokens, out: out, outStride: outStride) { o, row in
        format.dequantizeRow(weights + o * rowBytes, count: columns, into: row)
    }
}

/// `out[t * outStride + o] = W[o] · x[t]` with each row W[o] written out as floats by `dequantize(o, into:)`:
/// the exact path for any stored layout (GGML rows, interleaved groups).
@inline(__always)
func dequantizedMatMul(columns: Int, outputs: Range<Int>, x: UnsafePointer<Float>, xStride: Int, tokens: Int,
                       out: UnsafeMutablePointer<Float>, outStride: Int, dequantize: (Int, UnsafeMutablePointer<Float>) -> Void) {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: columns) { row in
        let w = row.baseAddress!
        for o in outputs {
            dequantize(o, w)
            for t in 0..<tokens { out[t * outStride + o] = dotF32(w, x + t * xStride, count: columns) }
        }
    }
}
