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
/// `KernelISA.active` names (AVX-512: 4 rows × 4 tokens per tile, `halfMatMulAVX512`). Four tokens
/// share each pass over a weight row, so prefill reads the weights once per four tokens. Every token
/// is summed in the same order whatever the batch (two chains over alternate 8-wide steps, then the
/// tail), so a row's result is bit-identical alone or in a batch.
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

/// `halfMatMul`'s loops; `vector: false` widens the halves with the portable conversion.
@inline(__always)
func halfMatMulRows(_ kind: HalfKind, _ weights: UnsafeRawPointer, _ n: Int, _ outputs: Range<Int>,
                    _ x: UnsafePointer<Float>, _ xStride: Int, _ tokens: Int,
                    _ out: UnsafeMutablePointer<Float>, _ outStride: Int, vector: Bool) {
    let pairEnd = n / 16 * 16, vectorEnd = n / 8 * 8
    for o in outputs {
        let row = weights + o * n * 2
        var t = 0
        while t + 4 <= tokens {
            let x0 = x + t * xStride, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride
            var e0 = SIMD8<Float>(), e1 = SIMD8<Float>(), e2 = SIMD8<Float>(), e3 = SIMD8<Float>()
            var o0 = SIMD8<Float>(), o1 = SIMD8<Float>(), o2 = SIMD8<Float>(), o3 = SIMD8<Float>()
            var i = 0
            while i < pairEnd {
                let w = loadHalf8(row, i, kind, vector: vector), v = loadHalf8(row, i + 8, kind, vector: vector)
                e0 = e0.addingProduct(w, load8(x0 + i)); o0 = o0.addingProduct(v, load8(x0 + i + 8))
                e1 = e1.addingProduct(w, load8(x1 + i)); o1 = o1.addingProduct(v, load8(x1 + i + 8))
                e2 = e2.addingProduct(w, load8(x2 + i)); o2 = o2.addingProduct(v, load8(x2 + i + 8))
                e3 = e3.addingProduct(w, load8(x3 + i)); o3 = o3.addingProduct(v, load8(x3 + i + 8))
                i += 16
            }
            if i < vectorEnd {
                let w = loadHalf8(row, i, kind, vector: vector)
                e0 = e0.addingProduct(w, load8(x0 + i)); e1 = e1.addingProduct(w, load8(x1 + i))
                e2 = e2.addingProduct(w, load8(x2 + i)); e3 = e3.addingProduct(w, load8(x3 + i))
                i += 8
            }
            var s = SIMD4(horizontalAdd(e0 + o0), horizontalAdd(e1 + o1), horizontalAdd(e2 + o2), horizontalAdd(e3 + o3))
            while i < n {
                let w = halfToFloat(row, i, kind)
                s += SIMD4(w * x0[i], w * x1[i], w * x2[i], w * x3[i])
                i += 1
            }
            out[t * outStride + o] = s[0]; out[(t + 1) * outStride + o] = s[1]
            out[(t + 2) * outStride + o] = s[2]; out[(t + 3) * outStride + o] = s[3]
            t += 4
        }
        while t < tokens {
            let xt = x + t * xStride
            var e = SIMD8<Float>(), odd = SIMD8<Float>()
            var i = 0
            while i < pairEnd {
                e = e.addingProduct(loadHalf8(row, i, kind, vector: vector), load8(xt + i))
                odd = odd.addingProduct(loadHalf8(row, i + 8, kind, vector: vector), load8(xt + i + 8))
                i += 16
            }
            if i < vectorEnd { e = e.addingProduct(loadHalf8(row, i, kind, vector: vector), load8(xt + i)); i += 8 }
            var s = horizontalAdd(e + odd)
            while i < n { s += halfToFloat(row, i, kind) * xt[i]; i += 1 }
            out[t * outStride + o] = s
            t += 1
        }
    }
}
