import PivotKernels

/// Simulated activation quantization, as QLLM-Eval studies it: each token's input row is rounded
/// to `bits`-bit symmetric integers (scale = max|x| / (2^(bits−1) − 1)) and back to float, then
/// the wrapped operator runs on it. Measures what A-bits cost; it is not a speed path.
public final class ActivationQuantizedLinear: LinearOperator {
    public let inner: LinearOperator
    public let bits: Int
    private var scratch: FloatBuffer

    public init(_ inner: LinearOperator, bits: Int) {
        precondition((2...16).contains(bits))
        self.inner = inner
        self.bits = bits
        scratch = FloatBuffer(count: inner.inFeatures * 16)
    }

    public var inFeatures: Int { inner.inFeatures }
    public var outFeatures: Int { inner.outFeatures }
    public var weightBytes: Int { inner.weightBytes }
    public var formatName: String { inner.formatName + "·A\(bits)" }

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        let columns = inFeatures
        // Grows once to the largest batch seen; decode reuses it without allocating.
        if scratch.count < x.rows * columns { scratch = FloatBuffer(count: x.rows * columns) }
        let quantized = scratch.matrix(rows: x.rows, columns: columns)
        for t in 0..<x.rows {
            fakeQuantizeSymmetric(UnsafePointer(x.row(t)), into: quantized.row(t), count: columns, bits: bits)
        }
        inner.forward(quantized, into: y, context: context)
    }
}

/// x → round(x / s)·s with s = max|x| / (2^(bits−1) − 1), clamped to the symmetric range.
public func fakeQuantizeSymmetric(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int, bits: Int) {
    var maximum: Float = 0
    for i in 0..<count { maximum = max(maximum, abs(x[i])) }
    let levels = Float((1 << (bits - 1)) - 1)
    guard maximum > 0 else { out.update(repeating: 0, count: count); return }
    let scale = maximum / levels, inverse = 1 / scale
    for i in 0..<count { out[i] = min(levels, max(-levels, (x[i] * inverse).rounded(.toNearestOrEven))) * scale }
}

extension Transformer {
    /// Wraps every projection of every block (not the output head) with simulated `bits`-bit activations.
    public func quantizeActivations(bits: Int) {
        layers = layers.map { $0.mappingProjections { op, _ in ActivationQuantizedLinear(op, bits: bits) } }
    }
}
