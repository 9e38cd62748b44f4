import PivotKernels

/// Several projections of the same input (Q/K/V, gate/up) run as one parallel region.
///
/// When every member is a `QuantizedLinear`, the input is quantized once and one pool dispatch
/// covers all members' output rows — a third of the barriers per layer in decode, where each
/// barrier costs about as much as a small matrix product. Other operators run one after another.
final class ProjectionGroup {
    let members: [LinearOperator]
    private let quantized: [QuantizedLinear]
    /// Start of each member's rows in the concatenated output range.
    private let offsets: [Int]
    private let totalRows: Int

    init(_ members: [LinearOperator]) {
        self.members = members
        let quantized = members.compactMap { $0 as? QuantizedLinear }
        let fusable = quantized.count == members.count && Set(quantized.map(\.inFeatures)).count == 1
        self.quantized = fusable ? quantized : []
        var offsets: [Int] = []
        var total = 0
        for m in members { offsets.append(total); total += m.outFeatures }
        self.offsets = offsets
        totalRows = total
    }

    /// `outputs` holds one matrix per member (unused trailing slots are ignored).
    func forward(_ x: Matrix, into outputs: (Matrix, Matrix, Matrix), context: ComputeContext) {
        @inline(__always) func output(_ i: Int) -> Matrix { i == 0 ? outputs.0 : i == 1 ? outputs.1 : outputs.2 }
        guard !quantized.isEmpty, context.precision == .int8 else {
            for (i, member) in members.enumerated() { member.forward(x, into: output(i), context: context) }
            return
        }
        let act = context.activations
        act.quantize(x.base, rows: x.rows, columns: quantized[0].inFeatures, stride: x.stride, pool: context.pool)
        let quantized = self.quantized, offsets = self.offsets
        context.pool.parallelRanges(count: totalRows, minChunk: 16) { range in
            for (i, op) in quantized.enumerated() {
                let lower = max(range.lowerBound, offsets[i]) - offsets[i]
                let upper = min(range.upperBound, offsets[i] + op.outFeatures) - offsets[i]
                if lower >= upper { continue }
                let out = output(i)
                quantizedMatMul(op.format, weights: op.weights, rowBytes: op.rowBytes, outputs: lower..<upper,
                                act: act, out: out.base, outStride: out.stride)
            }
        }
    }
}
