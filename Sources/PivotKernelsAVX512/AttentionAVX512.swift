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

/// `accumulateRows64` for `heads` query heads sharing the rows (GQA):
/// o_h[0..<64] += Σ_r weights[h·weightStride + r] · rows[r], o_h at `out + h·64`. Each row is loaded
/// once for up to four heads, whose 4·n chains run side by side where one head's four chains waited
/// on FMA latency. Per lane the same FMAs in the same order as one head alone.
@inline(never)
public func accumulateRows64AVX512(_ rows: UnsafePointer<Float>, weights: UnsafePointer<Float>, weightStride: Int,
                                   heads: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
    var h = 0
    while h < heads {
        let w = weights + h * weightStride, o = out + h * 64
        switch heads - h {
        case 1: accumulateHeads(1, rows, w, weightStride, count, o); h += 1
        case 2: accumulateHeads(2, rows, w, weightStride, count, o); h += 2
        case 3: accumulateHeads(3, rows, w, weightStride, count, o); h += 3
        default: accumulateHeads(4, rows, w, weightStride, count, o); h += 4
        }
    }
}

/// `n` (1–4, a constant after inlining) heads' outputs in 4·n registers across all rows.
@inline(__always)
private func accumulateHeads(_ n: Int, _ rows: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ weightStride: Int,
                             _ count: Int, _ o: UnsafeMutablePointer<Float>) {
    @inline(__always) func load(_ head: Int, _ c: Int) -> __m512 { n > head ? zmm(o + head * 64 + c) : _mm512_setzero_ps() }
    var a0 = load(0, 0), a1 = load(0, 16), a2 = load(0, 32), a3 = load(0, 48)
    var b0 = load(1, 0), b1 = load(1, 16), b2 = load(1, 32), b3 = load(1, 48)
    var c0 = load(2, 0), c1 = load(2, 16), c2 = load(2, 32), c3 = load(2, 48)
    var d0 = load(3, 0), d1 = load(3, 16), d2 = load(3, 32), d3 = load(3, 48)
    for r in 0..<count {
        let v = rows + r * 64
        let v0 = zmm(v), v1 = zmm(v + 16), v2 = zmm(v + 32), v3 = zmm(v + 48)
        let wa = _mm512_set1_ps(weights[r])
        a0 = _mm512_fmadd_ps(wa, v0, a0); a1 = _mm512_fmadd_ps(wa, v1, a1)
        a2 = _mm512_fmadd_ps(wa, v2, a2); a3 = _mm512_fmadd_ps(wa, v3, a3)
        if n > 1 {
            let wb = _mm512_set1_ps(weights[weightStride + r])
            b0 = _mm512_fmadd_ps(wb, v0, b0); b1 = _mm512_fmadd_ps(wb, v1, b1)
            b2 = _mm512_fmadd_ps(wb, v2, b2); b3 = _mm512_fmadd_ps(wb, v3, b3)
        }
        if n > 2 {
            let wc = _mm512_set1_ps(weights[2 * weightStride + r])
            c0 = _mm512_fmadd_ps(wc, v0, c0); c1 = _mm512_fmadd_ps(wc, v1, c1)
            c2 = _mm512_fmadd_ps(wc, v2, c2); c3 = _mm512_fmadd_ps(wc, v3, c3)
        }
        if n > 3 {
            let wd = _mm512_set1_ps(weights[3 * weightStride + r])
            d0 = _mm512_fmadd_ps(wd, v0, d0); d1 = _mm512_fmadd_ps(wd, v1, d1)
            d2 = _mm512_fmadd_ps(wd, v2, d2); d3 = _mm512_fmadd_ps(wd, v3, d3)
        }
    }
    @inline(__always) func store(_ head: Int, _ x0: __m512, _ x1: __m512, _ x2: __m512, _ x3: __m512) {
        let p = o + head * 64
        _mm512_storeu_ps(p, x0); _mm512_storeu_ps(p + 16, x1); _mm512_storeu_ps(p + 32, x2); _mm512_storeu_ps(p + 48, x3)
    }
    store(0, a0, a1, a2, a3)
    if n > 1 { store(1, b0, b1, b2, b3) }
    if n > 2 { store(2, c0, c1, c2, c3) }
    if n > 3 { store(3, d0, d1, d2, d3) }
}

/// The lane-wise maxima of the first `count` floats (a multiple of 16), folded to eight lanes.
@inline(never)
public func largestOfSixteens(_ x: UnsafePointer<Float>, count: Int) -> SIMD8<Float> {
    var top = _mm512_set1_ps(-.infinity)
    var i = 0
    while i < count { top = _mm512_max_ps(top, zmm(x + i)); i += 16 }
    let lanes = unsafeBitCast(top, to: SIMD16<Float>.self)
    return unsafeBitCast(_mm256_max_ps(unsafeBitCast(lanes.lowHalf, to: __m256.self), unsafeBitCast(lanes.highHalf, to: __m256.self)), to: SIMD8<Float>.self)
}

/// `exponentiateInPlace`'s exponentials for the first `count` floats (a multiple of 16), x[i] =
/// exp(x[i] − largest), returning the running 8-lane sums: `fastExp8`'s operations lane for lane (no
/// contraction, as in the SIMD8 code), each 16 folded into the sums as its low then its high eight,
/// so the bits are those of the 8-wide loop.
@inline(never)
public func exponentiate16AVX512(_ x: UnsafeMutablePointer<Float>, count: Int, largest: Float) -> SIMD8<Float> {
    let shift = _mm512_set1_ps(largest)
    let low = _mm512_set1_ps(-87.0), high = _mm512_set1_ps(88.0), log2e = _mm512_set1_ps(1.442_695_040_888_963_4)
    let ln2High = _mm512_set1_ps(0.693_145_751_953_125), ln2Low = _mm512_set1_ps(1.428_606_765_330_187e-06)
    let c720 = _mm512_set1_ps(1.0 / 720), c120 = _mm512_set1_ps(1.0 / 120), c24 = _mm512_set1_ps(1.0 / 24)
    let c6 = _mm512_set1_ps(1.0 / 6), half = _mm512_set1_ps(0.5), one = _mm512_set1_ps(1)
    let bias = _mm512_set1_epi32(127)
    var sums = SIMD8<Float>()
    var i = 0
    while i < count {
        let e0 = _mm512_sub_ps(zmm(x + i), shift)
        let clamped = _mm512_min_ps(_mm512_max_ps(e0, low), high)
        let ki = _mm512_cvtps_epi32(_mm512_mul_ps(clamped, log2e))
        let k = _mm512_cvtepi32_ps(ki)
        let r = _mm512_sub_ps(_mm512_sub_ps(clamped, _mm512_mul_ps(k, ln2High)), _mm512_mul_ps(k, ln2Low))
        var p = c720
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c120)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c24)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c6)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), half)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), one)
        p = _mm512_add_ps(_mm512_mul_ps(p, r), one)
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ki, bias), 23))
        let e = _mm512_mul_ps(p, scale)
        _mm512_storeu_ps(x + i, e)
        let lanes = unsafeBitCast(e, to: SIMD16<Float>.self)
        sums += lanes.lowHalf
        sums += lanes.highHalf
        i += 16
    }
    return sums
}
#endif
