import PivotKernels

/// Several projections of the same input (Q/K/V, gate/up) run as one parallel region.
///
/// When every member is quantized (`FusableProjection`: a `QuantizedLinear`, or one with sparse
/// outliers), the input is quantized once and one pool dispatch covers all members' output rows — a
/// third of the barriers per layer in decode, where each barrier costs about as much as a small
/// matrix product. F16/BF16 members packed in panels share one dispatch over all their panels the
/// same way. Other operators run one after another.
final class ProjectionGroup {
    let members: [LinearOperator]
    private let quantized: [FusableProjection]
    private let paneled: [HalfLinear]
    private let panelCounts: [Int]

    init(_ members: [LinearOperator]) {
        self.members = members
        let quantized = members.compactMap { $0 as? FusableProjection }.filter { $0.fusedInFeatures != nil }
        let fusable = quantized.count == members.count && Set(quantized.map(\.fusedInFeatures)).count == 1
        self.quantized = fusable ? quantized : []
        let paneled = members.compactMap { $0 as? HalfLinear }.filter { $0.panels != nil }
        self.paneled = paneled.count == members.count && members.count > 1 ? paneled : []
        panelCounts = self.paneled.map { $0.panels!.panels }
        precondition(members.count <= 3, "a projection group fuses at most three operators")
    }

    /// `outputs` holds one matrix per member (unused trailing slots are ignored).
    func forward(_ x: Matrix, into outputs: (Matrix, Matrix, Matrix), context: ComputeContext) {
        @inline(__always) func output(_ i: Int) -> Matrix { i == 0 ? outputs.0 : i == 1 ? outputs.1 : outputs.2 }
        if !paneled.isEmpty {
            // One range of panels over the members' panels end to end; each member runs its share.
            let paneled = self.paneled, counts = panelCounts
            context.pool.parallelRanges(count: counts.reduce(0, +), minChunk: 3) { range in
                var offset = 0
                for (i, member) in paneled.enumerated() {
                    let lower = max(range.lowerBound, offset), upper = min(range.upperBound, offset + counts[i])
                    if lower < upper { member.forward(panels: (lower - offset)..<(upper - offset), x, into: output(i)) }
                    offset += counts[i]
                }
            }
            return
        }
        guard !quantized.isEmpty, context.precision == .int8 else {
            for (i, member) in members.enumerated() { member.forward(x, into: output(i), context: context) }
            return
        }
        let act = context.activations
        act.quantize(x.base, rows: x.rows, columns: quantized[0].fusedInFeatures!, stride: x.stride, pool: context.pool)
        context.matMulJob.run(quantized[0].segment(into: outputs.0, input: x),
                              quantized.count > 1 ? quantized[1].segment(into: outputs.1, input: x) : nil,
                              quantized.count > 2 ? quantized[2].segment(into: outputs.2, input: x) : nil,
                              act: act, pool: context.pool)
    }
}

/// An operator whose int8 product can join a fused dispatch: quantized weights, possibly with sparse
/// corrections. `fusedInFeatures` is nil when it cannot (an outlier wrapper around other weights).
protocol FusableProjection: AnyObject {
    var fusedInFeatures: Int? { get }
    func segment(into y: Matrix, input x: Matrix) -> QuantizedMatMulJob.Segment
}
