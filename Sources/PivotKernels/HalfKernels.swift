#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

/// 16-bit weight storage kinds that stay 16-bit in memory and are widened inside the dot product.
public enum HalfKind: Sendable { case f16, bf16 }

/// 8 weights at `p` (index `i`) widened to floats: F16C for IEEE halves, a 16-bit shift for bfloat16.
@inline(__always)
func loadHalf8(_ p: UnsafeRawPointer, _ i: Int, _ kind: HalfKind, vector: Bool = true) -> SIMD8<Float> {
    #if arch(x86_64)
    if vector {
        let raw = _mm_loadu_si128((p + 2 * i).assumingMemoryBound(to: __m128i.self))
        switch kind {
        case .f16: return unsafeBitCast(_mm256_cvtph_ps(raw), to: SIMD8<Float>.self)
        case .bf16: return unsafeBitCast(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16), to: SIMD8<Float>.self)
        }
    }
    #endif
    var v = SIMD8<Float>()
    for j in 0..<8 {
        let bits = p.loadUnaligned(fromByteOffset: 2 * (i + j), as: UInt16.self)
        v[j] = kind == .f16 ? Float(Float16(bitPattern: bits)) : bfloat16ToFloat(bits)
    }
    return v
}

@inline(__always)
func halfToFloat(_ p: UnsafeRawPointer, _ i: Int, _ kind: HalfKind) -> Float {
    let bits = p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
    return kind == .f16 ? Float(Float16(bitPattern: bits)) : bfloat16ToFloat(bits)
}

/// out[t·outStride + o] = W[o] · x[t] for o in `outputs`, W row-major 16-bit [out][in], on the path
/// `KernelISA.active` names (AVX-512: 4 rows × 4 tokens per tile, `halfMatMulAVX512`; AVX2 and
/// portable: 2 rows × 4 tokens, `halfMatMulRows`). Every token is summed in the same order whatever
/// the batch, so a row's result is bit-identical alone or in a batch.
public func halfMatMul(_ kind: HalfKind, weights: UnsafeRawPointer, inFeatures n: Int, outputs: Range<Int>,
                       x: UnsafePointer<Float>, xStride: Int, tokens: Int,
                       out: UnsafeMutablePointer<Float>, outStride: Int) {
    switch KernelISA.active {
    case .portable: halfMatMulRows(kind, weights, n, outputs, x, xStride, tokens, out, outStride, vector: false)
    case .avx2, .avxVNNI: halfMatMulRows(kind, weights, n, outputs, x, xStride, tokens, out, outStride, vector: true)
    case .avx512:
        #if arch(x86_64)
        halfMatMulAVX512(bf16: kind == .bf16, weights: weights, inFeatures: n, outputs: outputs, x: x, xStride: xStride,
                         tokens: tokens, out: out, outStride: outStride)
        #else
        halfMatMulRows(kind, weights, n, outputs, x, xStride, tokens, out, outStride, vector: false)
        #endif
    }
}

/// `halfMatMul`'s loops on 8-wide vectors: tiles of 2 rows × 4 tokens (8 chains, each widened
/// weight vector used by 4 tokens and each activation load by 2 rows), 4 rows × 1 token for the
/// last tokens (decode), and 1 × 1 for what is left. Every (row, token) is one chain over 8-column steps, a fixed reduction,
/// then the tail, whatever tile it falls in. `vector: false` widens with the portable conversion.
@inline(__always)
func halfMatMulRows(_ kind: HalfKind, _ weights: UnsafeRawPointer, _ n: Int, _ outputs: Range<Int>,
                    _ x: UnsafePointer<Float>, _ xStride: Int, _ tokens: Int,
                    _ out: UnsafeMutablePointer<Float>, _ outStride: Int, vector: Bool) {
    let end = n / 8 * 8, rowBytes = 2 * n
    @inline(__always) func finish(_ acc: SIMD8<Float>, _ row: UnsafeRawPointer, _ xt: UnsafePointer<Float>) -> Float {
        var s = horizontalAdd(acc)
        var i = end
        while i < n { s += halfToFloat(row, i, kind) * xt[i]; i += 1 }
        return s
    }
    @inline(__always) func single(_ row: UnsafeRawPointer, _ xt: UnsafePointer<Float>) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i < end { acc = acc.addingProduct(loadHalf8(row, i, kind, vector: vector), load8(xt + i)); i += 8 }
        return finish(acc, row, xt)
    }
    var t = 0
    while t + 4 <= tokens {
        let x0 = x + t * xStride, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride
        var o = outputs.lowerBound
        while o + 2 <= outputs.upperBound {
            let r0 = weights + o * rowBytes, r1 = r0 + rowBytes
            var a00 = SIMD8<Float>(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00
            var i = 0
            while i < end {
                let w0 = loadHalf8(r0, i, kind, vector: vector), w1 = loadHalf8(r1, i, kind, vector: vector)
                let v0 = load8(x0 + i), v1 = load8(x1 + i), v2 = load8(x2 + i), v3 = load8(x3 + i)
                a00 = a00.addingProduct(w0, v0); a10 = a10.addingProduct(w1, v0)
                a01 = a01.addingProduct(w0, v1); a11 = a11.addingProduct(w1, v1)
                a02 = a02.addingProduct(w0, v2); a12 = a12.addingProduct(w1, v2)
                a03 = a03.addingProduct(w0, v3); a13 = a13.addingProduct(w1, v3)
                i += 8
            }
            out[t * outStride + o] = finish(a00, r0, x0); out[t * outStride + o + 1] = finish(a10, r1, x0)
            out[(t + 1) * outStride + o] = finish(a01, r0, x1); out[(t + 1) * outStride + o + 1] = finish(a11, r1, x1)
            out[(t + 2) * outStride + o] = finish(a02, r0, x2); out[(t + 2) * outStride + o + 1] = finish(a12, r1, x2)
            out[(t + 3) * outStride + o] = finish(a03, r0, x3); out[(t + 3) * outStride + o + 1] = finish(a13, r1, x3)
            o += 2
        }
        if o < outputs.upperBound {
            let r0 = weights + o * rowBytes
            out[t * outStride + o] = single(r0, x0); out[(t + 1) * outStride + o] = single(r0, x1)
            out[(t + 2) * outStride + o] = single(r0, x2); out[(t + 3) * outStride + o] = single(r0, x3)
        }
        t += 4
    }
    while t < tokens {
        // Four rows at once: four independent chains (one chain alone waits on the FMA latency).
        let xt = x + t * xStride
        var o = outputs.lowerBound
        while o + 4 <= outputs.upperBound {
            let r0 = weights + o * rowBytes, r1 = r0 + rowBytes, r2 = r1 + rowBytes, r3 = r2 + rowBytes
            var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0
            let next = r0 + 4 * rowBytes
            var i = 0
            while i < end {
                if vector && tokens == 1 && i & 31 == 0 {
                    // Decode streams each row once: request the next four rows' lines meanwhile.
                    prefetch(next + 2 * i); prefetch(next + rowBytes + 2 * i)
                    prefetch(next + 2 * rowBytes + 2 * i); prefetch(next + 3 * rowBytes + 2 * i)
                }
                let v = load8(xt + i)
                a0 = a0.addingProduct(loadHalf8(r0, i, kind, vector: vector), v)
                a1 = a1.addingProduct(loadHalf8(r1, i, kind, vector: vector), v)
                a2 = a2.addingProduct(loadHalf8(r2, i, kind, vector: vector), v)
                a3 = a3.addingProduct(loadHalf8(r3, i, kind, vector: vector), v)
                i += 8
            }
            out[t * outStride + o] = finish(a0, r0, xt); out[t * outStride + o + 1] = finish(a1, r1, xt)
            out[t * outStride + o + 2] = finish(a2, r2, xt); out[t * outStride + o + 3] = finish(a3, r3, xt)
            o += 4
        }
        while o < outputs.upperBound { out[t * outStride + o] = single(weights + o * rowBytes, xt); o += 1 }
        t += 1
    }
}
