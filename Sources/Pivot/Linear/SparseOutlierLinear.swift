import PivotKernels

/// A projection plus a sparse FP16 correction (LLM-MQ's outlier protection): the few most sensitive
/// weights are kept as their full-precision difference from the quantized value, so
/// y = Q(W)·x + S·x with S in compressed rows. Stored in the GGUF as `<tensor>.outlier_index`
/// (F32 flat indices, exact below 2²⁴) and `<tensor>.outlier_value` (F16), 6 bytes per weight;
/// llama.cpp does not know these tensors and refuses such files.
public final class SparseOutlierLinear: LinearOperator {
    public static let indexSuffix = ".outlier_index", valueSuffix = ".outlier_value"
    public let inner: LinearOperator
    /// Row r's corrections are entries rowStart[r] ..< rowStart[r + 1].
    let rowStart: [Int32]
    let columns: [Int32]
    let values: [Float]

    /// `indices` are flat (row · inFeatures + column), sorted or not; `values` the corrections.
    public init(_ inner: LinearOperator, indices: [Int], values: [Float]) throws {
        let n = inner.inFeatures, rows = inner.outFeatures
        guard indices.count == values.count else { throw PivotError.invalidArgument("outlier index and value counts differ") }
        guard indices.allSatisfy({ $0 >= 0 && $0 < rows * n }) else {
            throw PivotError.invalidArgument("an outlier index lies outside the \(rows)×\(n) weight")
        }
        self.inner = inner
        let order = indices.indices.sorted { indices[$0] < indices[$1] }
        var start = [Int32](repeating: 0, count: rows + 1)
        for i in indices { start[i / n + 1] += 1 }
        for r in 0..<rows { start[r + 1] += start[r] }
        rowStart = start
        columns = order.map { Int32(indices[$0] % n) }
        self.values = order.map { values[$0] }
    }

    public var inFeatures: Int { inner.inFeatures }
    public var outFeatures: Int { inner.outFeatures }
    public var weightBytes: Int { inner.weightBytes + 6 * values.count }
    public var formatName: String { inner.formatName + "+outliers" }
    public var outlierCount: Int { values.count }

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        inner.forward(x, into: y, context: context)
        rowStart.withUnsafeBufferPointer { start in columns.withUnsafeBufferPointer { cols in values.withUnsafeBufferPointer { vals in
            for t in 0..<x.rows {
                let input = x.row(t), output = y.row(t)
                for r in 0..<outFeatures where start[r] < start[r + 1] {
                    var sum: Float = 0
                    for k in Int(start[r])..<Int(start[r + 1]) { sum += vals[k] * input[Int(cols[k])] }
                    output[r] += sum
                }
            }
        } } }
    }
}
