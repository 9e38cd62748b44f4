import PivotKernels

/// How a family routes tokens to experts (Mixtral, Qwen2-MoE).
public struct ExpertLayout: Sendable, Equatable {
    public var count: Int
    /// Experts each token runs (top-k).
    public var used: Int
    /// Hidden width of one expert's MLP.
    public var intermediateSize: Int
    /// Qwen2-MoE's always-on shared expert (its width), gated by sigmoid(w·x).
    public var sharedIntermediateSize: Int? = nil
    /// Renormalize the top-k softmax weights to sum to one (Mixtral always; Qwen2-MoE's norm_topk_prob).
    public var normalizeWeights = true
    /// Which layers route (nil: all; Qwen2-MoE's decoder_sparse_step and mlp_only_layers).
    public var sparseLayers: [Bool]? = nil

    public init(count: Int, used: Int, intermediateSize: Int) {
        self.count = count; self.used = used; self.intermediateSize = intermediateSize
    }

    public func routes(layer index: Int) -> Bool { sparseLayers?[index] ?? true }
}

/// One expert: a gated MLP.
public struct Expert {
    public var gate, up, down: LinearOperator
    public var linears: [LinearOperator] { [gate, up, down] }
}

/// A pass's scratch for routing (in `ForwardState`, shared by every layer as the other buffers are).
public final class ExpertScratch {
    let logits, input, gate, up, output, total, weights, routedWeights: FloatBuffer
    let chosen, routedRows: UnsafeMutablePointer<Int>

    init(layout: ExpertLayout, hidden: Int, maxTokens rows: Int) {
        let width = max(layout.intermediateSize, layout.sharedIntermediateSize ?? 0)
        logits = FloatBuffer(count: rows * max(layout.count, 1)); input = FloatBuffer(count: rows * hidden)
        gate = FloatBuffer(count: rows * width); up = FloatBuffer(count: rows * width)
        output = FloatBuffer(count: rows * hidden); total = FloatBuffer(count: rows * hidden)
        weights = FloatBuffer(count: rows * layout.used); routedWeights = FloatBuffer(count: rows)
        chosen = .allocate(capacity: rows * layout.used); routedRows = .allocate(capacity: rows)
    }

    deinit { chosen.deallocate(); routedRows.deallocate() }
}

/// Routed experts in place of a block's MLP: softmax over the router's logits, the top-k experts of each
/// token, their outputs weighted and summed (plus the shared expert where the family has one). Each
/// expert runs once over the rows routed to it, gathered into scratch, so its weights are read once per pass.
public final class MixtureOfExperts {
    public let router: LinearOperator
    public var experts: [Expert]
    public var shared: Expert?
    /// hidden → 1, sigmoid: the shared expert's share.
    public let sharedGate: LinearOperator?
    let layout: ExpertLayout
    let activation: Activation

    init(router: LinearOperator, experts: [Expert], shared: Expert?, sharedGate: LinearOperator?, layout: ExpertLayout, activation: Activation) {
        self.router = router; self.experts = experts; self.shared = shared; self.sharedGate = sharedGate
        self.layout = layout; self.activation = activation
    }

    public var linears: [LinearOperator] { [router] + experts.flatMap(\.linears) + (shared?.linears ?? []) + (sharedGate.map { [$0] } ?? []) }

    /// One expert's MLP over `x` into `out` (rows × hidden).
    private func run(_ expert: Expert, width: Int, _ x: Matrix, into out: Matrix, scratch: ExpertScratch, context: ComputeContext) {
        let g = scratch.gate.matrix(rows: x.rows, columns: width), u = scratch.up.matrix(rows: x.rows, columns: width)
        expert.gate.forward(x, into: g, context: context)
        expert.up.forward(x, into: u, context: context)
        for t in 0..<x.rows { activation.applyGated(g.row(t), u.row(t), count: width) }
        expert.down.forward(g, into: out, context: context)
    }

    /// out = Σ over each token's top-k experts of weight · expert(x) (+ the gated shared expert). `out` may
    /// be `x`'s buffer (the forward pass reuses it): the sum builds in scratch and is copied at the end.
    func forward(_ x: Matrix, into out: Matrix, scratch: ExpertScratch, context: ComputeContext) {
        let rows = x.rows, hidden = x.columns, count = layout.count, k = layout.used
        let scores = scratch.logits.matrix(rows: rows, columns: count)
        let chosen = scratch.chosen, weights = scratch.weights.pointer
        router.forward(x, into: scores, context: context)
        // Per token: softmax, top-k (ties to the lower index), weights renormalized if the family asks.
        for t in 0..<rows {
            let row = scores.row(t)
            softmaxInPlace(row, count: count)
            var total: Float = 0
            for j in 0..<k {
                var best = -1
                for e in 0..<count where (best < 0 || row[e] > row[best]) && !(0..<j).contains(where: { chosen[t * k + $0] == e }) { best = e }
                chosen[t * k + j] = best; weights[t * k + j] = row[best]; total += row[best]
            }
            if layout.normalizeWeights { for j in 0..<k { weights[t * k + j] /= total } }
        }
        let sum = scratch.total.matrix(rows: rows, columns: hidden)
        for t in 0..<rows { sum.row(t).update(repeating: 0, count: hidden) }
        for (e, expert) in experts.enumerated() {
            var routed = 0
            for t in 0..<rows {
                for j in 0..<k where chosen[t * k + j] == e {
                    scratch.routedRows[routed] = t; scratch.routedWeights.pointer[routed] = weights[t * k + j]; routed += 1
                }
            }
            if routed == 0 { continue }
            let gathered = scratch.input.matrix(rows: routed, columns: hidden), result = scratch.output.matrix(rows: routed, columns: hidden)
            for i in 0..<routed { gathered.row(i).update(from: x.row(scratch.routedRows[i]), count: hidden) }
            run(expert, width: layout.intermediateSize, gathered, into: result, scratch: scratch, context: context)
            for i in 0..<routed { axpyF32(scratch.routedWeights.pointer[i], result.row(i), sum.row(scratch.routedRows[i]), count: hidden) }
        }
        if let shared, let sharedGate, let width = layout.sharedIntermediateSize {
            let result = scratch.output.matrix(rows: rows, columns: hidden), share = scratch.logits.matrix(rows: rows, columns: 1)
            run(shared, width: width, x, into: result, scratch: scratch, context: context)
            sharedGate.forward(x, into: share, context: context)
            for t in 0..<rows {
                let s = 1 / (1 + Float(exp(Double(-share.row(t)[0]))))
                axpyF32(s, result.row(t), sum.row(t), count: hidden)
            }
        }
        for t in 0..<rows { out.row(t).update(from: sum.row(t), count: hidden) }
    }
}

extension TensorData {
    /// Matrix `index` of a stack of matrices ([n, rows, columns], a GGUF `*_exps` tensor), without copying.
    func matrix(_ index: Int) -> TensorData {
        let bytes = byteCount / shape[0]
        return TensorData(name: name, type: type, shape: Array(shape.dropFirst()), data: data + index * bytes, byteCount: bytes, owner: owner)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
