/// Element-wise kernels of the non-Llama blocks: LayerNorm, GELU (exact and tanh) and tanh soft-capping.

/// out = (x − mean) / sqrt(var + ε) · weight + bias, per row of `count` floats (bias may be nil).
public func layerNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, epsilon: Float,
                      out: UnsafeMutablePointer<Float>, count: Int) {
    var sum = SIMD8<Float>()
    var i = 0
    while i + 8 <= count { sum += load8(x + i); i += 8 }
    var total = horizontalAdd(sum)
    while i < count { total += x[i]; i += 1 }
    let mean = total / Float(count)
    let m = SIMD8<Float>(repeating: mean)
    var squares = SIMD8<Float>()
    i = 0
    while i + 8 <= count { let c = load8(x + i) - m; squares = squares.addingProduct(c, c); i += 8 }
    var variance = horizontalAdd(squares)
    while i < count { let c = x[i] - mean; variance += c * c; i += 1 }
    variance /= Float(count)
    let scale = 1 / (variance + epsilon).squareRoot()
    let s = SIMD8<Float>(repeating: scale)
    i = 0
    if let bias {
        while i + 8 <= count { store8((load8(x + i) - m) * s * load8(weight + i) + load8(bias + i), out + i); i += 8 }
        while i < count { out[i] = (x[i] - mean) * scale * weight[i] + bias[i]; i += 1 }
    } else {
        while i + 8 <= count { store8((load8(x + i) - m) * s * load8(weight + i), out + i); i += 8 }
        while i < count { out[i] = (x[i] - mean) * scale * weight[i]; i += 1 }
    }
}

/// The activation of a block's MLP.
public enum Activation: Sendable, Equatable {
    case silu
    /// GELU with the exact erf (`gelu`).
    case gelu
    /// GELU's tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
    case geluTanh

    /// x[i] = act(x[i]).
    public func apply(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        switch self {
        case .silu:
            while i + 8 <= count { let v = load8(x + i); store8(v / (1 + fastExp8(-v)), x + i); i += 8 }
        case .gelu:
            while i + 8 <= count { store8(geluErf8(load8(x + i)), x + i); i += 8 }
        case .geluTanh:
            while i + 8 <= count { store8(geluTanh8(load8(x + i)), x + i); i += 8 }
        }
        while i < count { x[i] = scalar(x[i]); i += 1 }
    }

    /// gate[i] = act(gate[i]) · up[i] (the gated MLP).
    public func applyGated(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        var i = 0
        switch self {
        case .silu: siluMultiply(gate, up, count: count); return
        case .gelu:
            while i + 8 <= count { store8(geluErf8(load8(gate + i)) * load8(up + i), gate + i); i += 8 }
        case .geluTanh:
            while i + 8 <= count { store8(geluTanh8(load8(gate + i)) * load8(up + i), gate + i); i += 8 }
        }
        while i < count { gate[i] = scalar(gate[i]) * up[i]; i += 1 }
    }

    @inline(__always) func scalar(_ v: Float) -> Float {
        switch self {
        case .silu: return v / (1 + fastExp(-v))
        case .gelu: return geluErf8(SIMD8(repeating: v))[0]
        case .geluTanh: return geluTanh8(SIMD8(repeating: v))[0]
        }
    }
}

/// x·Φ(x), Φ through erf by Abramowitz–Stegun 7.1.26 (|error of erf| < 1.5e-7, below Float's step
/// near 1): torch's exact `gelu` to within rounding, eight at a time.
@inline(__always) public func geluErf8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let z = x * 0.707_106_781_186_547_5
    let a = abs8(z)
    let t = 1 / (1 + 0.327_591_1 * a)
    var p = SIMD8<Float>(repeating: 1.061_405_429)
    p = p * t - 1.453_152_027
    p = p * t + 1.421_413_741
    p = p * t - 0.284_496_736
    p = p * t + 0.254_829_592
    p = p * t
    let erfAbs = 1 - p * fastExp8(-a * a)
    let erf = erfAbs.replacing(with: -erfAbs, where: z .< 0)
    return 0.5 * x * (1 + erf)
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as torch's `gelu(approximate="tanh")`; tanh(u) as
/// 1 − 2/(e^{2u} + 1), eight at a time.
@inline(__always) public func geluTanh8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let u = 0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)
    let tanh = 1 - 2 / (fastExp8(2 * u) + 1)
    return 0.5 * x * (1 + tanh)
}

@inline(__always) func abs8(_ v: SIMD8<Float>) -> SIMD8<Float> { v.replacing(with: -v, where: v .< 0) }

/// x[i] = cap·tanh(x[i]/cap): Gemma 2's logit soft-capping.
public func softCap(_ x: UnsafeMutablePointer<Float>, count: Int, cap: Float) {
    for i in 0..<count { x[i] = Float(Double(cap) * tanh(Double(x[i]) / Double(cap))) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
