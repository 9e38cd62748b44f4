import PivotKernels

/// A projection plus a sparse FP16 correction (LLM-MQ's outlier protection): the few most sensitive
/// weights are kept as their full-precision difference from the quantized value, so
/// y = Q(W)·x + S·x with S in compressed rows. Stored in the GGUF as `<tensor>.outlier_index`
/// (F32 flat indices, exact below 2²⁴) and `<tensor>.outlier_value` (F16), 6 bytes per weight;
/// llama.cpp does not know these tensors and refuses such files.
public final class SparseOutlierLinear: LinearOperator, FusableProjection {
    public static let indexSuffix = ".outlier_index", valueSuffix = ".outlier_value"
    public let inner: LinearOperator
    /// Compressed rows: row r's corrections are entries rowStart[r] ..< rowStart[r + 1].
    let rowStart: UnsafeMutablePointer<Int32>
    let columns: UnsafeMutablePointer<Int32>
    let values: UnsafeMutablePointer<Float>
    public let outlierCount: Int

    /// `indices` are flat (row · inFeatures + column), sorted or not; `values` the corrections.
    public init(_ inner: LinearOperator, indices: [Int], values corrections: [Float]) throws {
        let n = inner.inFeatures, rows = inner.outFeatures
        guard indices.count == corrections.count else { throw PivotError.invalidArgument("outlier index and value counts differ") }
        guard indices.allSatisfy({ $0 >= 0 && $0 < rows * n }) else {
            throw PivotError.invalidArgument("an outlier index lies outside the \(rows)×\(n) weight")
        }
        self.inner = inner
        outlierCount = indices.count
        let order = indices.indices.sorted { indices[$0] < indices[$1] }
        rowStart = .allocate(capacity: rows + 1)
        rowStart.initialize(repeating: 0, count: rows + 1)
        for i in indices { rowStart[i / n + 1] += 1 }
        for r in 0..<rows { rowStart[r + 1] += rowStart[r] }
        columns = .allocate(capacity: max(1, order.count))
        values = .allocate(capacity: max(1, order.count))
        for (k, i) in order.enumerated() { columns[k] = Int32(indices[i] % n); values[k] = corrections[i] }
    }

    deinit { rowStart.deallocate(); columns.deallocate(); values.deallocate() }

    public var inFeatures: Int { inner.inFeatures }
    public var outFeatures: Int { inner.outFeatures }
    public var weightBytes: Int { inner.weightBytes + 6 * outlierCount }
    public var formatName: String { inner.formatName + "+outliers" }

    func corrections(for x: Matrix) -> SparseCorrections {
        SparseCorrections(rowStart: rowStart, columns: columns, values: values, x: x.base, xStride: x.stride, tokens: x.rows)
    }

    /// Over quantized weights with int8 activations, the corrections run inside the product's own
    /// parallel job, each chunk adding its rows' right after computing them; otherwise after the inner product.
    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        if inner is QuantizedLinear, context.precision == .int8 {
            let act = context.activations
            act.quantize(x.base, rows: x.rows, columns: inFeatures, stride: x.stride, pool: context.pool)
            context.matMulJob.run(segment(into: y, input: x), act: act, pool: context.pool)
            return
        }
        inner.forward(x, into: y, context: context)
        corrections(for: x).apply(rows: 0..<outFeatures, out: y.base, outStride: y.stride)
    }

    var fusedInFeatures: Int? { (inner as? QuantizedLinear)?.inFeatures }

    func segment(into y: Matrix, input x: Matrix) -> QuantizedMatMulJob.Segment {
        var segment = (inner as! QuantizedLinear).segment(into: y, input: x)
        segment.corrections = corrections(for: x)
        return segment
    }
}
