import Foundation
import PivotKernels

/// What one calibration pass of the whole model records for pruning: per block the squared norm of
/// each FFN input column (Wanda's ‖x‖ for gate/up), the Gram matrix G = Σ a·aᵀ of ffn_down's input a
/// (the intermediate activations: Wanda's ‖a‖ and the least-squares normal equations), and, for the
/// block before each run of dropped blocks, C = Σ Δ·aᵀ, where Δ is what the dropped run added to the
/// residual stream — so ffn_down can be re-fit to add it instead.
public final class PruningStatistics {
    public let ffnInputSquares: [[Double]]
    public let downGram: [InputHessian]
    /// Keyed by the block whose ffn_down absorbs the dropped run after it.
    public let downCross: [Int: FloatBuffer]
    public let tokens: Int

    init(ffnInputSquares: [[Double]], downGram: [InputHessian], downCross: [Int: FloatBuffer], tokens: Int) {
        self.ffnInputSquares = ffnInputSquares; self.downGram = downGram; self.downCross = downCross; self.tokens = tokens
    }

    /// Runs of consecutive dropped blocks, as (block before the run, first dropped, first kept after).
    static func droppedRuns(_ dropped: [Int], layerCount: Int) -> [(previous: Int, first: Int, end: Int)] {
        var runs: [(Int, Int, Int)] = [], i = 0
        let set = Set(dropped)
        while i < layerCount {
            guard set.contains(i) else { i += 1; continue }
            var end = i
            while end < layerCount && set.contains(end) { end += 1 }
            if i > 0 { runs.append((i - 1, i, end)) }
            i = end
        }
        return runs
    }

    /// One pass over `chunks` windows of `length` tokens; `absorbDropped`: the dropped blocks whose
    /// contribution the previous block's ffn_down should learn (empty: no cross terms).
    public static func collect(model: LoadedModel, tokens: [Int], length: Int, chunks: Int, absorbDropped: [Int],
                               execution: Execution, progress: (Int, Int) -> Void = { _, _ in }) throws -> PruningStatistics {
        let c = model.config, layers = c.layerCount
        var squares = [[Double]](repeating: [Double](repeating: 0, count: c.hiddenSize), count: layers)
        let grams = (0..<layers).map { _ in InputHessian(columns: c.intermediateSize) }
        let runs = droppedRuns(absorbDropped, layerCount: layers)
        var cross: [Int: FloatBuffer] = [:]
        var captured: [Int: FloatBuffer] = [:]
        for run in runs {
            cross[run.previous] = FloatBuffer(count: c.hiddenSize * c.intermediateSize)
            captured[run.previous] = FloatBuffer(count: length * c.intermediateSize)
        }
        let starts = Dictionary(runs.map { ($0.first, FloatBuffer(count: length * c.hiddenSize)) }, uniquingKeysWith: { a, _ in a })
        let ends = Dictionary(grouping: runs, by: \.end)
        let pool = execution.pool
        let transformer = model.transformer
        transformer.residualObserver = { index, hidden in
            if let start = starts[index] {
                for t in 0..<hidden.rows { (start.pointer + t * c.hiddenSize).update(from: hidden.row(t), count: c.hiddenSize) }
            }
            for run in ends[index] ?? [] {
                // Δ = x(end) − x(first), in place in the start buffer; C += Δᵀ·a.
                let delta = starts[run.first]!.pointer
                for t in 0..<hidden.rows {
                    let d = delta + t * c.hiddenSize, h = hidden.row(t)
                    for j in 0..<c.hiddenSize { d[j] = h[j] - d[j] }
                }
                sgemm(transposeA: true, transposeB: false, m: c.hiddenSize, n: c.intermediateSize, k: hidden.rows,
                      a: delta, lda: c.hiddenSize, b: captured[run.previous]!.pointer, ldb: c.intermediateSize,
                      beta: 1, c: cross[run.previous]!.pointer, ldc: c.intermediateSize, pool: pool)
            }
        }
        defer { transformer.residualObserver = nil }
        let ran = try model.runCalibration(tokens: tokens, contextLength: length, chunks: chunks, execution: execution, progress: progress) { index, op, role in
            switch role {
            case .gate:
                return InputTap(op) { x in
                    for t in 0..<x.rows { let row = x.row(t); for j in 0..<x.columns { squares[index][j] += Double(row[j] * row[j]) } }
                }
            case .down:
                let capture = captured[index]
                return InputTap(op) { x in
                    grams[index].add(x, pool: pool)
                    if let capture { for t in 0..<x.rows { (capture.pointer + t * x.columns).update(from: x.row(t), count: x.columns) } }
                }
            default:
                return op
            }
        }
        return PruningStatistics(ffnInputSquares: squares, downGram: grams, downCross: cross, tokens: ran * length)
    }
}

/// A projection that shows its input to `observe` before computing: how a calibration pass records.
final class InputTap: LinearOperator {
    let inner: LinearOperator
    let observe: (Matrix) -> Void

    init(_ inner: LinearOperator, observe: @escaping (Matrix) -> Void) { self.inner = inner; self.observe = observe }

    var inFeatures: Int { inner.inFeatures }
    var outFeatures: Int { inner.outFeatures }
    var weightBytes: Int { inner.weightBytes }
    var formatName: String { inner.formatName }

    func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        observe(x)
        inner.forward(x, into: y, context: context)
    }
}
