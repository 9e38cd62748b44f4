#if arch(x86_64)
import _Builtin_intrinsics.intel
import PivotKernelsAVX512
#endif

// The standard library's generic SIMD conversions and min/max are not specialized in hot loops
// (they showed up as 30% of decode time); these map to single AVX instructions on x86-64.

/// Float → Int32 lanes, round to nearest even.
@inline(__always) func roundToInt32(_ v: SIMD8<Float>) -> SIMD8<Int32> {
    #if arch(x86_64)
    return unsafeBitCast(_mm256_cvtps_epi32(v), to: SIMD8<Int32>.self)
    #else
    var r = SIMD8<Int32>()
    for i in 0..<8 { r[i] = Int32(v[i].rounded(.toNearestOrEven)) }
    return r
    #endif
}

/// Int32 → Float lanes.
@inline(__always) func toFloat(_ v: SIMD8<Int32>) -> SIMD8<Float> {
    #if arch(x86_64)
    return _mm256_cvtepi32_ps(unsafeBitCast(v, to: __m256i.self))
    #else
    var r = SIMD8<Float>()
    for i in 0..<8 { r[i] = Float(v[i]) }
    return r
    #endif
}

@inline(__always) func maximum(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    #if arch(x86_64)
    return _mm256_max_ps(a, b)
    #else
    return a.replacing(with: b, where: b .> a)
    #endif
}

@inline(__always) func minimum(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    #if arch(x86_64)
    return _mm256_min_ps(a, b)
    #else
    return a.replacing(with: b, where: b .< a)
    #endif
}

/// Largest lane.
@inline(__always) func horizontalMax(_ v: SIMD8<Float>) -> Float {
    let a = maximum(v, SIMD8(v[4], v[5], v[6], v[7], v[0], v[1], v[2], v[3]))
    return max(max(a[0], a[1]), max(a[2], a[3]))
}

/// Round to nearest integer value (as float).
@inline(__always) func roundNearest(_ v: SIMD8<Float>) -> SIMD8<Float> {
    toFloat(roundToInt32(v))
}

/// Sum of lanes.
@inline(__always) func horizontalAdd(_ v: SIMD8<Float>) -> Float {
    ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
}

#if !arch(x86_64)
/// No prefetch hints off x86: the portable loops leave it to the hardware. (On x86 `prefetch` and
/// the helpers built on it come from PivotKernelsAVX512's Prefetch.swift.)
@inline(__always) func prefetch(_ address: UnsafeRawPointer) {}
#endif
