/// Float kernels on raw pointers with SIMD8 accumulators. Lengths need not be multiples of 8.

#if arch(x86_64)
import PivotKernelsAVX512
#endif

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// Σ a[i]·b[i].
@inline(__always)
public func dotF32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var i = 0
    while i + 16 <= count {
        acc0 = acc0.addingProduct(load8(a + i), load8(b + i))
        acc1 = acc1.addingProduct(load8(a + i + 8), load8(b + i + 8))
        i += 16
    }
    if i + 8 <= count { acc0 = acc0.addingProduct(load8(a + i), load8(b + i)); i += 8 }
    var total = horizontalAdd(acc0 + acc1)
    while i < count { total += a[i] * b[i]; i += 1 }
    return total
}

/// y[i] += alpha·x[i].
@inline(__always)
public func axpyF32(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    let a = SIMD8<Float>(repeating: alpha)
    var i = 0
    while i + 8 <= count { store8(load8(y + i).addingProduct(a, load8(x + i)), y + i); i += 8 }
    while i < count { y[i] += alpha * x[i]; i += 1 }
}

/// out = x / rms(x) · weight, per row of `count` floats.
public func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, epsilon: Float,
                    out: UnsafeMutablePointer<Float>, count: Int) {
    let meanSquare = dotF32(x, x, count: count) / Float(count)
    let scale = 1 / (meanSquare + epsilon).squareRoot()
    let s = SIMD8<Float>(repeating: scale)
    var i = 0
    while i + 8 <= count { store8(load8(x + i) * s * load8(weight + i), out + i); i += 8 }
    while i < count { out[i] = x[i] * scale * weight[i]; i += 1 }
}

/// In-place softmax over `count` floats; returns nothing, leaves probabilities.
public func softmaxInPlace(_ x: UnsafeMutablePointer<Float>, count: Int) {
    let total = exponentiateInPlace(x, count: count).total
    let inverse = SIMD8<Float>(repeating: 1 / total)
    var i = 0
    while i + 8 <= count { store8(load8(x + i) * inverse, x + i); i += 8 }
    while i < count { x[i] *= inverse[0]; i += 1 }
}

/// x[i] = exp(x[i] − max x), returning the max and the sum: softmax without its final division, for
/// attention that normalizes its output once instead (or merges partial results).
@discardableResult
public func exponentiateInPlace(_ x: UnsafeMutablePointer<Float>, count: Int) -> (largest: Float, total: Float) {
    var top = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    #if arch(x86_64)
    // Whole sixteens on 512-bit registers: their largest (the same value in any order, a zero's sign
    // aside, which exp(±0) = 1 does not see), then their exponentials below.
    let sixteens = KernelISA.active == .avx512 ? count / 16 * 16 : 0
    if sixteens > 0 { i = sixteens; top = largestOfSixteens(x, count: sixteens) }
    #endif
    while i + 8 <= count { top = maximum(top, load8(x + i)); i += 8 }
    var largest = horizontalMax(top)
    while i < count { largest = max(largest, x[i]); i += 1 }
    let shift = SIMD8<Float>(repeating: largest)
    var sums = SIMD8<Float>()
    i = 0
    #if arch(x86_64)
    // The same bits as the loop below (the sums fold each 16 as two eights).
    if sixteens > 0 { i = sixteens; sums = exponentiate16AVX512(x, count: sixteens, largest: largest) }
    #endif
    while i + 8 <= count { let e = fastExp8(load8(x + i) - shift); store8(e, x + i); sums += e; i += 8 }
    var total = horizontalAdd(sums)
    while i < count { let e = fastExp(x[i] - largest); x[i] = e; total += e; i += 1 }
    return (largest, total)
}

/// gate[i] = silu(gate[i]) · up[i] (SwiGLU).
public func siluMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count {
        let g = load8(gate + i)
        store8(g / (1 + fastExp8(-g)) * load8(up + i), gate + i)
        i += 8
    }
    while i < count { let g = gate[i]; gate[i] = g / (1 + fastExp(-g)) * up[i]; i += 1 }
}

/// exp for SIMD8 by range reduction (2^k · e^r) and a degree-6 polynomial; rel. error < 2e-7.
@inline(__always) public func fastExp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let clamped = minimum(maximum(x, SIMD8(repeating: -87.0)), SIMD8(repeating: 88.0))
    let ki = roundToInt32(clamped * 1.442_695_040_888_963_4)
    let k = toFloat(ki)
    let r = clamped - k * 0.693_145_751_953_125 - k * 1.428_606_765_330_187e-06
    var p = SIMD8<Float>(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let bits = (ki &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

@inline(__always) public func fastExp(_ x: Float) -> Float {
    fastExp8(SIMD8(repeating: x))[0]
}

/// Rotary position embedding on one head vector, in place, with that position's cos/sin rows
/// (headDim/2 each). `interleaved` rotates pairs (x[2i], x[2i+1]) — GGUF's permuted Q/K;
/// otherwise (x[i], x[i+d/2]) — the HF "rotate half" layout.
@inline(__always)
public func applyRoPE(_ x: UnsafeMutablePointer<Float>, headDim: Int, cos: UnsafePointer<Float>,
                      sin: UnsafePointer<Float>, interleaved: Bool) {
    let half = headDim / 2
    if interleaved {
        for i in 0..<half {
            let x0 = x[2 * i], x1 = x[2 * i + 1], c = cos[i], s = sin[i]
            x[2 * i] = x0 * c - x1 * s
            x[2 * i + 1] = x0 * s + x1 * c
        }
    } else {
        for i in 0..<half {
            let x0 = x[i], x1 = x[i + half], c = cos[i], s = sin[i]
            x[i] = x0 * c - x1 * s
            x[i + half] = x0 * s + x1 * c
        }
    }
}

/// Float GEMM for dense weights: out[t][o] = W[o] · x[t] for `o` in `outputs`; W row-major [out][in].
public func denseMatMul(weights: UnsafePointer<Float>, inFeatures: Int, outputs: Range<Int>,
                        x: UnsafePointer<Float>, xStride: Int, tokens: Int,
                        out: UnsafeMutablePointer<Float>, outStride: Int) {
    for o in outputs {
        let row = weights + o * inFeatures
        for t in 0..<tokens { out[t * outStride + o] = dotF32(row, x + t * xStride, count: inFeatures) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// log Σ exp(x[i]), stable and vectorized (perplexity and KL divergence need it per row of logits).
public func logSumExp(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var m8 = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    while i + 8 <= count { m8 = PivotKernels.maximum(m8, load8(x + i)); i += 8 }
    var largest = horizontalMax(m8)
    while i < count { largest = max(largest, x[i]); i += 1 }
    let mv = SIMD8<Float>(repeating: largest)
    var s8 = SIMD8<Float>()
    i = 0
    while i + 8 <= count { s8 += fastExp8(load8(x + i) - mv); i += 8 }
    var total = horizontalAdd(s8)
    while i < count { total += fastExp(x[i] - largest); i += 1 }
    return largest + logf(total)
}

/// KL(P‖Q) = Σ p(v)·(log p(v) − log q(v)) for two rows of logits given their log-sum-exps
/// (identical rows give exactly 0).
public func klDivergence(_ p: UnsafePointer<Float>, logSumExpP: Float, _ q: UnsafePointer<Float>, logSumExpQ: Float,
                         count: Int) -> Float {
    let lseP = SIMD8<Float>(repeating: logSumExpP), lseQ = SIMD8<Float>(repeating: logSumExpQ)
    var sum = SIMD8<Float>()
    var i = 0
    while i + 8 <= count {
        let lp = load8(p + i) - lseP
        sum = sum.addingProduct(fastExp8(lp), lp - (load8(q + i) - lseQ))
        i += 8
    }
    var total = horizontalAdd(sum)
    while i < count {
        let lp = p[i] - logSumExpP
        total += fastExp(lp) * (lp - (q[i] - logSumExpQ))
        i += 1
    }
    return total
}
