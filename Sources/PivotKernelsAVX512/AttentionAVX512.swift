#if arch(x86_64)
import _Builtin_intrinsics.intel

/// PivotKernels' attention loops for head dimension 64 on 512-bit registers, bit for bit: a 16-lane
/// chain over columns 16c..16c+15 is lane for lane the AVX2 code's two 8-lane chains (columns
/// 16c..16c+7 and 16c+8..16c+15), so the same FMAs run in the same order on half the instructions.

@inline(__always) func zmm(_ p: UnsafePointer<Float>) -> __m512 { _mm512_loadu_ps(p) }

/// `scoreRows64`: scores[h·scoreStride + r] = q_h·rows[r]·scale, rows read in whole fours
/// (`count` a multiple of 4; PivotKernels handles the last 1–3 rows).
@inline(never)
public func scoreRows64AVX512(_ queries: UnsafePointer<Float>, heads: Int, rows: UnsafePointer<Float>, count: Int, scale: Float,
                              scores: UnsafeMutablePointer<Float>, scoreStride: Int) {
    for h in 0..<heads {
        let q = queries + h * 64
        let q0 = zmm(q), q1 = zmm(q + 16), q2 = zmm(q + 32), q3 = zmm(q + 48)
        /// The two chains (lanes 0–7 and 8–15), summed, folded to 4 lanes: v[i] + v[i+4].
        @inline(__always) func folded(_ k: UnsafePointer<Float>) -> __m128 {
            var c = _mm512_fmadd_ps(q0, zmm(k), _mm512_setzero_ps())
            c = _mm512_fmadd_ps(q1, zmm(k + 16), c)
            c = _mm512_fmadd_ps(q2, zmm(k + 32), c)
            c = _mm512_fmadd_ps(q3, zmm(k + 48), c)
            let lanes = unsafeBitCast(c, to: SIMD16<Float>.self)
            let v = lanes.lowHalf + lanes.highHalf
            return unsafeBitCast(v.lowHalf + v.highHalf, to: __m128.self)
        }
        let s = scores + h * scoreStride
        var r = 0
        while r < count {
            let k = rows + r * 64
            let sums = _mm_hadd_ps(_mm_hadd_ps(folded(k), folded(k + 64)), _mm_hadd_ps(folded(k + 128), folded(k + 192)))
            UnsafeMutableRawPointer(s + r).storeBytes(of: unsafeBitCast(sums, to: SIMD4<Float>.self) * scale, as: SIMD4<Float>.self)
            r += 4
        }
    }
}

/// `accumulateRows64`: o[0..<64] += Σ_r weights[r] · rows[r], the output in four registers.
@inline(never)
public func accumulateRows64AVX512(_ rows: UnsafePointer<Float>, weights: UnsafePointer<Float>, count: Int, into o: UnsafeMutablePointer<Float>) {
    var o0 = zmm(o), o1 = zmm(o + 16), o2 = zmm(o + 32), o3 = zmm(o + 48)
    for r in 0..<count {
        let w = _mm512_set1_ps(weights[r]), v = rows + r * 64
        o0 = _mm512_fmadd_ps(w, zmm(v), o0); o1 = _mm512_fmadd_ps(w, zmm(v + 16), o1)
        o2 = _mm512_fmadd_ps(w, zmm(v + 32), o2); o3 = _mm512_fmadd_ps(w, zmm(v + 48), o3)
    }
    _mm512_storeu_ps(o, o0); _mm512_storeu_ps(o + 16, o1); _mm512_storeu_ps(o + 32, o2); _mm512_storeu_ps(o + 48, o3)
}
#endif
