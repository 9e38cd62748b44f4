#if arch(x86_64)
import _Builtin_intrinsics.intel

/// F16/BF16 weights × float activations on 512-bit registers: tiles of 4 weight rows × 4 tokens,
/// 16 columns per step (16 FMAs per 4 widened weight vectors and 4 activation loads), where the
/// AVX2 kernel runs 1 row × 4 tokens on 8 columns. Every (row, token) is summed in the same order
/// whatever tile it falls in — one chain over 16-column steps, a fixed reduction, then the columns
/// past the last multiple of 16 in order — so a token's result is bit-identical alone or in a batch.

/// How 16-bit weights widen to floats. A type, not a flag: each kind gets its own specialized loop
/// (a flag left a branch inside the hot loop).
protocol HalfWidening {
    /// 16 halves at `p` as floats.
    static func widen16(_ p: UnsafeRawPointer) -> __m512
    /// The half at index i (the tail past the last 16 columns).
    static func value(_ p: UnsafeRawPointer, _ i: Int) -> Float
}

/// IEEE halves: `vcvtph2ps`.
enum F16Widening: HalfWidening {
    @inline(__always) static func widen16(_ p: UnsafeRawPointer) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self)))
    }
    @inline(__always) static func value(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    }
}

/// bfloat16: the top half of a float, widened by a 16-bit shift.
enum BF16Widening: HalfWidening {
    @inline(__always) static func widen16(_ p: UnsafeRawPointer) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self))), 16))
    }
    @inline(__always) static func value(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
    }
}

@inline(__always) func load16(_ p: UnsafePointer<Float>) -> __m512 { _mm512_loadu_ps(p) }

/// Result of one (row, token): the reduced chain plus the tail columns.
@inline(__always)
func finish<W: HalfWidening>(_ acc: __m512, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, from: Int, to n: Int, _ w: W.Type) -> Float {
    var s = _mm512_reduce_add_ps(acc)
    var i = from
    while i < n { s += W.value(row, i) * x[i]; i += 1 }
    return s
}

/// Rows o..<o+4 × tokens t..<t+4.
@inline(__always)
func halfTile4x4<W: HalfWidening>(_ weights: UnsafeRawPointer, _ n: Int, _ o: Int, _ x: UnsafePointer<Float>, _ xStride: Int, _ t: Int,
                 _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ w: W.Type) {
    let w0 = weights + o * n * 2, w1 = w0 + n * 2, w2 = w1 + n * 2, w3 = w2 + n * 2
    let x0 = x + t * xStride, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride
    var a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00
    var a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00
    let end = n / 16 * 16
    var i = 0
    while i < end {
        let v0 = load16(x0 + i), v1 = load16(x1 + i), v2 = load16(x2 + i), v3 = load16(x3 + i)
        let r0 = W.widen16(w0 + 2 * i)
        a00 = _mm512_fmadd_ps(r0, v0, a00); a01 = _mm512_fmadd_ps(r0, v1, a01); a02 = _mm512_fmadd_ps(r0, v2, a02); a03 = _mm512_fmadd_ps(r0, v3, a03)
        let r1 = W.widen16(w1 + 2 * i)
        a10 = _mm512_fmadd_ps(r1, v0, a10); a11 = _mm512_fmadd_ps(r1, v1, a11); a12 = _mm512_fmadd_ps(r1, v2, a12); a13 = _mm512_fmadd_ps(r1, v3, a13)
        let r2 = W.widen16(w2 + 2 * i)
        a20 = _mm512_fmadd_ps(r2, v0, a20); a21 = _mm512_fmadd_ps(r2, v1, a21); a22 = _mm512_fmadd_ps(r2, v2, a22); a23 = _mm512_fmadd_ps(r2, v3, a23)
        let r3 = W.widen16(w3 + 2 * i)
        a30 = _mm512_fmadd_ps(r3, v0, a30); a31 = _mm512_fmadd_ps(r3, v1, a31); a32 = _mm512_fmadd_ps(r3, v2, a32); a33 = _mm512_fmadd_ps(r3, v3, a33)
        i += 16
    }
    @inline(__always) func store(_ row: UnsafeRawPointer, _ r: Int, _ c: (__m512, __m512, __m512, __m512)) {
        out[t * outStride + o + r] = finish(c.0, row, x0, from: end, to: n, w)
        out[(t + 1) * outStride + o + r] = finish(c.1, row, x1, from: end, to: n, w)
        out[(t + 2) * outStride + o + r] = finish(c.2, row, x2, from: end, to: n, w)
        out[(t + 3) * outStride + o + r] = finish(c.3, row, x3, from: end, to: n, w)
    }
    store(w0, 0, (a00, a01, a02, a03)); store(w1, 1, (a10, a11, a12, a13))
    store(w2, 2, (a20, a21, a22, a23)); store(w3, 3, (a30, a31, a32, a33))
}

/// Rows o..<o+4 × one token.
@inline(__always)
func halfTile4x1<W: HalfWidening>(_ weights: UnsafeRawPointer, _ n: Int, _ o: Int, _ xt: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ w: W.Type) {
    let w0 = weights + o * n * 2, w1 = w0 + n * 2, w2 = w1 + n * 2, w3 = w2 + n * 2
    var a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    let end = n / 16 * 16
    var i = 0
    while i < end {
        let v = load16(xt + i)
        a0 = _mm512_fmadd_ps(W.widen16(w0 + 2 * i), v, a0)
        a1 = _mm512_fmadd_ps(W.widen16(w1 + 2 * i), v, a1)
        a2 = _mm512_fmadd_ps(W.widen16(w2 + 2 * i), v, a2)
        a3 = _mm512_fmadd_ps(W.widen16(w3 + 2 * i), v, a3)
        i += 16
    }
    out[o] = finish(a0, w0, xt, from: end, to: n, w)
    out[o + 1] = finish(a1, w1, xt, from: end, to: n, w)
    out[o + 2] = finish(a2, w2, xt, from: end, to: n, w)
    out[o + 3] = finish(a3, w3, xt, from: end, to: n, w)
}

/// One row × one token.
@inline(__always)
func halfTile1x1<W: HalfWidening>(_ row: UnsafeRawPointer, _ n: Int, _ xt: UnsafePointer<Float>, _ w: W.Type) -> Float {
    var a = _mm512_setzero_ps()
    let end = n / 16 * 16
    var i = 0
    while i < end { a = _mm512_fmadd_ps(W.widen16(row + 2 * i), load16(xt + i), a); i += 16 }
    return finish(a, row, xt, from: end, to: n, w)
}

@inline(__always)
func halfTiles<W: HalfWidening>(_ weights: UnsafeRawPointer, _ n: Int, _ outputs: Range<Int>, _ x: UnsafePointer<Float>, _ xStride: Int, _ tokens: Int,
               _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ w: W.Type) {
    // Strips of rows whose weights stay in L2 while every 4-token tile passes over them.
    let strip = max(4, (192 * 1024) / (2 * max(1, n)) / 4 * 4)
    var stripStart = outputs.lowerBound
    while stripStart < outputs.upperBound {
        let stripEnd = min(outputs.upperBound, stripStart + strip)
        let quadEnd = stripStart + (stripEnd - stripStart) / 4 * 4
        var t = 0
        while t + 4 <= tokens {
            var o = stripStart
            while o < quadEnd { halfTile4x4(weights, n, o, x, xStride, t, out, outStride, w); o += 4 }
            while o < stripEnd {
                for u in t..<(t + 4) { out[u * outStride + o] = halfTile1x1(weights + o * n * 2, n, x + u * xStride, w) }
                o += 1
            }
            t += 4
        }
        while t < tokens {
            var o = stripStart
            while o < quadEnd { halfTile4x1(weights, n, o, x + t * xStride, out + t * outStride, w); o += 4 }
            while o < stripEnd { out[t * outStride + o] = halfTile1x1(weights + o * n * 2, n, x + t * xStride, w); o += 1 }
            t += 1
        }
        stripStart = stripEnd
    }
}

/// out[t·outStride + o] = W[o] · x[t] for o in `outputs`, W row-major 16-bit [out][in] (bfloat16
/// when `bf16`, else IEEE halves).
@inline(never)
public func halfMatMulAVX512(bf16: Bool, weights: UnsafeRawPointer, inFeatures n: Int, outputs: Range<Int>,
                             x: UnsafePointer<Float>, xStride: Int, tokens: Int, out: UnsafeMutablePointer<Float>, outStride: Int) {
    if bf16 {
        halfTiles(weights, n, outputs, x, xStride, tokens, out, outStride, BF16Widening.self)
    } else {
        halfTiles(weights, n, outputs, x, xStride, tokens, out, outStride, F16Widening.self)
    }
}
#endif
