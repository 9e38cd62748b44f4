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
        switch self {
        case .silu: for i in 0..<count { let v = x[i]; x[i] = v / (1 + fastExp(-v)) }
        case .gelu: for i in 0..<count { x[i] = geluErf(x[i]) }
        case .geluTanh: for i in 0..<count { x[i] = geluTanhApproximation(x[i]) }
        }
    }

    /// gate[i] = act(gate[i]) · up[i] (the gated MLP).
    public func applyGated(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        switch self {
        case .silu: siluMultiply(gate, up, count: count)
        case .gelu: for i in 0..<count { gate[i] = geluErf(gate[i]) * up[i] }
        case .geluTanh: for i in 0..<count { gate[i] = geluTanhApproximation(gate[i]) * up[i] }
        }
    }
}

/// x·Φ(x) with Φ through erf, as torch's `gelu` (computed in Double: the MLP is not the hot loop of
/// these small families, and the reference is exact).
@inline(__always) public func geluErf(_ x: Float) -> Float {
    let v = Double(x)
    return Float(0.5 * v * (1 + erf(v / 2.0.squareRoot())))
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as torch's `gelu(approximate="tanh")`.
@inline(__always) public func geluTanhApproximation(_ x: Float) -> Float {
    let v = Double(x)
    return Float(0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v))))
}

/// x[i] = cap·tanh(x[i]/cap): Gemma 2's logit soft-capping.
public func softCap(_ x: UnsafeMutablePointer<Float>, count: Int, cap: Float) {
    for i in 0..<count { x[i] = Float(Double(cap) * tanh(Double(x[i]) / Double(cap))) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
