import PivotKernels

/// LLM-MQ's sparse outlier protection: which weights of a tensor stay in FP16 beside its quantized
/// form. A weight's sensitivity is |g|·|Q(W) − W| with loss gradients, else E[x²]·(Q(W) − W)², for
/// Q the importance-weighted quantizer of the tensor's type; the top `fraction` per tensor are kept.
public struct OutlierPlan {
    /// Share of each projection's weights kept (0.005 = 0.5%).
    public var fraction: Double
    /// Σ|∂loss/∂W| per weight (`GradientModel.gradientMagnitudes`), when available.
    public var gradients: [String: [Float]]?

    public init(fraction: Double, gradients: [String: [Float]]? = nil) { self.fraction = fraction; self.gradients = gradients }

    public static let bytesPerOutlier = 6

    public func count(elements: Int) -> Int { Int((fraction * Double(elements)).rounded()) }

    /// The kept weights' flat indices, and the tensor quantized without GPTQ (RTN with importance) with
    /// each kept weight's correction W − Q(W).
    func select(_ weights: UnsafePointer<Float>, rows: Int, columns: Int, format: BlockFormat, importance: [Float],
                gradient: [Float]?, pool: ThreadPool?) -> (indices: [Int], rtn: TensorData, corrections: [Float]) {
        var restored = [Float](repeating: 0, count: rows * columns)
        let rtn = restored.withUnsafeMutableBufferPointer {
            format.roundTrip(weights, rows: rows, columns: columns, importance: importance, pool: pool, restored: $0.baseAddress!)
        }
        var scores = [Float](repeating: 0, count: rows * columns)
        for i in 0..<(rows * columns) {
            let error = restored[i] - weights[i]
            scores[i] = gradient.map { $0[i] * abs(error) } ?? importance[i % columns] * error * error
        }
        let k = min(rows * columns, count(elements: rows * columns))
        let indices = Array(scores.indices.sorted { scores[$0] > scores[$1] }.prefix(k)).sorted()
        return (indices, rtn, indices.map { weights[$0] - restored[$0] })
    }
}
