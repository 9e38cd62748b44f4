#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

/// softmax(q·Kᵀ·scale)·V for one query over `count` contiguous keys and values (row-major,
/// `headDim` floats each), `scores` scratch of `count` floats.
///
/// Head dimension 64 (SmolLM, Llama-3.2-1B, Qwen) keeps the query and the output accumulator in
/// eight SIMD8 registers across all keys: the generic path reloads and re-stores the output for
/// every key, which made attention a fifth of prefill time. Any other head size takes the generic
/// loop. Either path computes a query the same way alone or in a batch.
@inline(__always)
public func attendOneQuery(_ q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                           count: Int, headDim d: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                           out: UnsafeMutablePointer<Float>, softCap: Float? = nil) {
    scoreRows(q, keys: keys, count: count, headDim: d, scale: scale, into: scores)
    if let softCap { PivotKernels.softCap(scores, count: count, cap: softCap) }
    softmaxInPlace(scores, count: count)
    out.update(repeating: 0, count: d)
    accumulateRows(values, weights: scores, count: count, headDim: d, into: out)
}

/// o[0..<64] += Σ_r weights[r] · rows[r] (rows of 64 floats): the output held in eight registers
/// (four on the AVX-512 path, same bits).
@inline(__always)
public func accumulateRows64(_ rows: UnsafePointer<Float>, weights: UnsafePointer<Float>, count: Int, into o: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    if KernelISA.active == .avx512 { accumulateRows64AVX512(rows, weights: weights, weightStride: 0, heads: 1, count: count, into: o); return }
    #endif
    var o0 = load8(o), o1 = load8(o + 8), o2 = load8(o + 16), o3 = load8(o + 24)
    var o4 = load8(o + 32), o5 = load8(o + 40), o6 = load8(o + 48), o7 = load8(o + 56)
    for r in 0..<count {
        let w = SIMD8<Float>(repeating: weights[r]), v = rows + r * 64
        o0 = o0.addingProduct(w, load8(v)); o1 = o1.addingProduct(w, load8(v + 8))
        o2 = o2.addingProduct(w, load8(v + 16)); o3 = o3.addingProduct(w, load8(v + 24))
        o4 = o4.addingProduct(w, load8(v + 32)); o5 = o5.addingProduct(w, load8(v + 40))
        o6 = o6.addingProduct(w, load8(v + 48)); o7 = o7.addingProduct(w, load8(v + 56))
    }
    store8(o0, o); store8(o1, o + 8); store8(o2, o + 16); store8(o3, o + 24)
    store8(o4, o + 32); store8(o5, o + 40); store8(o6, o + 48); store8(o7, o + 56)
}

/// o_h[0..<64] += Σ_r weights[h·weightStride + r] · rows[r] for `heads` query heads sharing the rows
/// (GQA), o_h at `out + 64h`: per head the sums of `accumulateRows64`. The AVX-512 path reads each
/// row once for up to four heads, whose chains then fill the FMA units one head's four left idle.
@inline(__always)
public func accumulateRows64(_ rows: UnsafePointer<Float>, weights: UnsafePointer<Float>, weightStride: Int, heads: Int,
                             count: Int, into out: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    if KernelISA.active == .avx512 {
        accumulateRows64AVX512(rows, weights: weights, weightStride: weightStride, heads: heads, count: count, into: out)
        return
    }
    #endif
    for h in 0..<heads { accumulateRows64(rows, weights: weights + h * weightStride, count: count, into: out + h * 64) }
}

/// scores[j] = q·keys[j]·scale for `count` rows of `headDim` floats (head dimension 64: one head of
/// `scoreRows64`, the same sums as `dotF32`).
@inline(__always)
public func scoreRows(_ q: UnsafePointer<Float>, keys: UnsafePointer<Float>, count: Int, headDim d: Int, scale: Float,
                      into scores: UnsafeMutablePointer<Float>) {
    guard d == 64 else {
        for j in 0..<count { scores[j] = dotF32(q, keys + j * d, count: d) * scale }
        return
    }
    scoreRows64(q, heads: 1, rows: keys, count: count, scale: scale, scores: scores, scoreStride: count)
}

/// out[0..<headDim] += Σ_j weights[j] · rows[j] (rows of `headDim` floats).
@inline(__always)
public func accumulateRows(_ rows: UnsafePointer<Float>, weights: UnsafePointer<Float>, count: Int, headDim d: Int,
                           into out: UnsafeMutablePointer<Float>) {
    if d == 64 { accumulateRows64(rows, weights: weights, count: count, into: out); return }
    for j in 0..<count { axpyF32(weights[j], rows + j * d, out, count: d) }
}

/// scores[h·scoreStride + r] = q_h·rows[r]·scale for `count` rows of 64 floats and `heads` query
/// heads (64 floats apart), bit for bit `dotF32(q_h, rows[r], 64)·scale`: each key's two 8-lane
/// chains and their sum as `dotF32` runs them, then four keys' final reductions together (their
/// halves added, two `vhaddps` levels), where a dot per key spent as much on its own reduction as
/// on its products and reloaded the query. The last 1–3 rows go through a zero-padded copy. The
/// AVX-512 path runs the whole fours as one 16-lane chain per key (`scoreRows64AVX512`), the same
/// FMAs lane for lane.
@inline(__always)
public func scoreRows64(_ queries: UnsafePointer<Float>, heads: Int, rows: UnsafePointer<Float>, count: Int, scale: Float,
                        scores: UnsafeMutablePointer<Float>, scoreStride: Int) {
    #if arch(x86_64)
    let whole = count / 4 * 4
    var scored = 0   // rows already scored for every head
    if KernelISA.active == .avx512 {
        // The whole fours on 512-bit registers (same bits); the tail below.
        if whole > 0 { scoreRows64AVX512(queries, heads: heads, rows: rows, count: whole, scale: scale, scores: scores, scoreStride: scoreStride) }
        if whole == count { return }
        scored = whole
    }
    for h in 0..<heads {
        let q = queries + h * 64
        let q0 = load8(q), q1 = load8(q + 8), q2 = load8(q + 16), q3 = load8(q + 24)
        let q4 = load8(q + 32), q5 = load8(q + 40), q6 = load8(q + 48), q7 = load8(q + 56)
        /// `dotF32`'s two chains, summed, folded to 4 lanes as `horizontalAdd` starts: v[i] + v[i+4].
        @inline(__always) func folded(_ k: UnsafePointer<Float>) -> __m128 {
            var a = SIMD8<Float>(), b = SIMD8<Float>()
            a = a.addingProduct(q0, load8(k)); b = b.addingProduct(q1, load8(k + 8))
            a = a.addingProduct(q2, load8(k + 16)); b = b.addingProduct(q3, load8(k + 24))
            a = a.addingProduct(q4, load8(k + 32)); b = b.addingProduct(q5, load8(k + 40))
            a = a.addingProduct(q6, load8(k + 48)); b = b.addingProduct(q7, load8(k + 56))
            let v = a + b
            return unsafeBitCast(v.lowHalf + v.highHalf, to: __m128.self)
        }
        /// ((f0 + f1) + (f2 + f3)) for four keys at once: `horizontalAdd`'s order.
        @inline(__always) func four(_ k: UnsafePointer<Float>) -> SIMD4<Float> {
            let sums = _mm_hadd_ps(_mm_hadd_ps(folded(k), folded(k + 64)), _mm_hadd_ps(folded(k + 128), folded(k + 192)))
            return unsafeBitCast(sums, to: SIMD4<Float>.self) * scale
        }
        let s = scores + h * scoreStride
        var r = scored
        while r < whole { UnsafeMutableRawPointer(s + r).storeBytes(of: four(rows + r * 64), as: SIMD4<Float>.self); r += 4 }
        guard r < count else { continue }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * 64) { buffer in
            let padded = buffer.baseAddress!
            padded.update(from: rows + r * 64, count: (count - r) * 64)
            (padded + (count - r) * 64).update(repeating: 0, count: (4 - (count - r)) * 64)
            let last = four(padded)
            for i in 0..<(count - r) { s[r + i] = last[i] }
        }
    }
    #else
    for h in 0..<heads {
        for r in 0..<count { scores[h * scoreStride + r] = dotF32(queries + h * 64, rows + r * 64, count: 64) * scale }
    }
    #endif
}
