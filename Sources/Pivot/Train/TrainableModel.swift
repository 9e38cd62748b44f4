import Foundation
import PivotKernels

/// A float Llama-family model that trains: a forward pass over a batch of equal-length sequences
/// that keeps what its gradient needs, and the backward pass to every parameter (embedding, both
/// norms of each block, final norm, untied head, all projections, and an intact prefix's keys and
/// values when it has one). Projections go through one GEMM (`TrainKernels.gemm`) over all rows
/// of the batch; attention recomputes its probabilities (`TrainAttention`); the head runs in row
/// chunks so logits never exist for the whole batch at once.
public final class TrainableModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// The weights the forward pass reads (a quantized student's fake-quantized copy under STE).
    public let weights: ParameterBuffer
    /// Positions of the trainable prefix every sequence attends to (0: none).
    public let prefixLength: Int
    /// Per layout entry: whether its gradient is wanted. Frozen weights skip their weight-gradient
    /// GEMMs, and the backward pass stops below the lowest layer anything trainable depends on.
    public var trainable: [Bool]
    let rope: RoPETable
    let headName: String
    var workspace: TrainWorkspace?
    /// Rows of logits computed at once.
    public var headChunk = 256

    public init(gguf: GGUFFile, prefixLength: Int = 0) throws {
        config = try ModelConfig(gguf: gguf)
        try config.requireLlamaBlock(for: "training")
        guard !config.attentionBias, !config.queryKeyNorm, config.ropeLayers == nil, !config.outputBias else {
            throw PivotError.unsupported(file: gguf.path, "training covers plain Llama blocks (no biases, q/k norms or RoPE-less layers)")
        }
        let untied = gguf.tensors["output.weight"] != nil
        layout = ParameterLayout.llama(config, untiedHead: untied, prefixLength: prefixLength)
        headName = untied ? "output.weight" : "token_embd.weight"
        weights = ParameterBuffer(layout: layout)
        try weights.load(from: gguf)
        self.prefixLength = prefixLength
        trainable = Array(repeating: true, count: layout.entries.count)
        rope = RoPETable(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling)
    }

    /// Forward and backward over `batch` (equal lengths). The mean loss over scored rows is returned
    /// with the row count; gradients of that mean, times `gradientScale`, are added into `gradients`
    /// (nil: forward only).
    public func step<O: TokenObjective>(batch: [[Int]], objective: O, gradients: ParameterBuffer?, gradientScale: Float = 1,
                                        pool: ThreadPool) -> (loss: Double, rows: Int) {
        let c = config, B = batch.count, T = batch.first?.count ?? 0, R = B * T
        precondition(B > 0 && T > 0 && batch.allSatisfy { $0.count == T }, "a batch of equal-length sequences")
        if workspace?.rows != R { workspace = TrainWorkspace(config: c, rows: R, headChunk: headChunk) }
        let ws = workspace!, H = c.hiddenSize, F = c.intermediateSize, qw = c.queryWidth, kvw = c.kvWidth, eps = c.rmsNormEpsilon
        rope.ensure(positions: prefixLength + T)
        let attention = TrainAttention(batch: B, length: T, prefix: prefixLength, heads: c.headCount, kvHeads: c.kvHeadCount, headDim: c.headDim)
        let W = weights
        func w(_ name: String) -> UnsafeMutablePointer<Float> { W.pointer(name) }
        func prefix(_ l: Int) -> (UnsafePointer<Float>?, UnsafePointer<Float>?) {
            prefixLength == 0 ? (nil, nil) : (UnsafePointer(w(ParameterLayout.intactKeyName(layer: l))), UnsafePointer(w(ParameterLayout.intactValueName(layer: l))))
        }

        // Forward.
        let embedding = w("token_embd.weight")
        let tokens = batch.flatMap { $0 }
        for (row, token) in tokens.enumerated() { (ws.layers[0].input + row * H).update(from: embedding + token * H, count: H) }
        for l in 0..<c.layerCount {
            let tape = ws.layers[l], p = "blk.\(l)."
            TrainKernels.rmsNormRows(tape.input, w(p + "attn_norm.weight"), rows: R, width: H, epsilon: eps, into: ws.normed, r: tape.rms1, pool: pool)
            TrainKernels.linear(ws.normed, w(p + "attn_q.weight"), rows: R, inputs: H, outputs: qw, into: tape.q, pool: pool)
            TrainKernels.linear(ws.normed, w(p + "attn_k.weight"), rows: R, inputs: H, outputs: kvw, into: tape.k, pool: pool)
            TrainKernels.linear(ws.normed, w(p + "attn_v.weight"), rows: R, inputs: H, outputs: kvw, into: tape.v, pool: pool)
            rotate(tape.q, heads: c.headCount, batch: B, length: T, inverse: false, pool: pool)
            rotate(tape.k, heads: c.kvHeadCount, batch: B, length: T, inverse: false, pool: pool)
            let (pk, pv) = prefix(l)
            attention.forward(q: tape.q, k: tape.k, v: tape.v, prefixKeys: pk, prefixValues: pv, out: tape.attention, lse: tape.lse, pool: pool)
            TrainKernels.linear(tape.attention, w(p + "attn_output.weight"), rows: R, inputs: qw, outputs: H, into: tape.middle, pool: pool)
            add(tape.input, into: tape.middle, count: R * H)
            TrainKernels.rmsNormRows(tape.middle, w(p + "ffn_norm.weight"), rows: R, width: H, epsilon: eps, into: ws.normed, r: tape.rms2, pool: pool)
            TrainKernels.linear(ws.normed, w(p + "ffn_gate.weight"), rows: R, inputs: H, outputs: F, into: tape.gate, pool: pool)
            TrainKernels.linear(ws.normed, w(p + "ffn_up.weight"), rows: R, inputs: H, outputs: F, into: tape.up, pool: pool)
            swiglu(tape.gate, tape.up, into: ws.activation, count: R * F, pool: pool)
            let next = l + 1 < c.layerCount ? ws.layers[l + 1].input : ws.final
            TrainKernels.linear(ws.activation, w(p + "ffn_down.weight"), rows: R, inputs: F, outputs: H, into: next, pool: pool)
            add(tape.middle, into: next, count: R * H)
        }
        let gFinal = w("output_norm.weight")
        TrainKernels.rmsNormRows(ws.final, gFinal, rows: R, width: H, epsilon: eps, into: ws.normedFinal, r: ws.rmsFinal, pool: pool)

        // Head and loss in row chunks; the loss's gradient flows straight back through the head.
        var scored = 0
        for row in 0..<R where objective.scores(row: row) { scored += 1 }
        let rowScale = gradientScale / Float(max(1, scored))
        let head = w(headName), V = c.vocabularySize, grads = gradients
        let dHead: UnsafeMutablePointer<Float>? = grads.flatMap { isTrainable(headName) ? $0.pointer(headName) : nil }
        var loss = 0.0
        for start in stride(from: 0, to: R, by: ws.headChunk) {
            let n = min(ws.headChunk, R - start)
            let x = ws.normedFinal + start * H
            TrainKernels.linear(x, head, rows: n, inputs: H, outputs: V, into: ws.logits, pool: pool)
            let losses = ws.rowLosses
            pool.parallelRanges(count: n, minChunk: 8) { rows in
                for i in rows {
                    let logits = ws.logits + i * V
                    if objective.scores(row: start + i) {
                        losses[i] = objective.loss(row: start + i, logits: logits, vocabulary: V)
                        if rowScale != 1 { for j in 0..<V { logits[j] *= rowScale } }
                    } else {
                        losses[i] = 0
                        logits.update(repeating: 0, count: V)
                    }
                }
            }
            for i in 0..<n { loss += Double(losses[i]) }
            guard grads != nil else { continue }
            TrainKernels.linearInputGradient(ws.logits, head, rows: n, inputs: H, outputs: V, into: ws.dNormed + start * H, accumulate: false, pool: pool)
            if let dHead { TrainKernels.linearWeightGradient(ws.logits, x, rows: n, inputs: H, outputs: V, into: dHead, pool: pool) }
        }
        let mean = loss / Double(max(1, scored))
        guard let grads else { return (mean, scored) }

        // Backward.
        func g(_ name: String) -> UnsafeMutablePointer<Float>? { isTrainable(name) ? grads.pointer(name) : nil }
        let dx = ws.dx
        dx.update(repeating: 0, count: R * H)
        TrainKernels.rmsNormBackwardRows(ws.final, gFinal, r: ws.rmsFinal, ws.dNormed, rows: R, width: H, dx: dx, dg: g("output_norm.weight"), pool: pool)
        let lowest = lowestLayerNeeded()
        for l in stride(from: c.layerCount - 1, through: lowest, by: -1) {
            let tape = ws.layers[l], p = "blk.\(l)."
            // MLP: out = middle + down(silu(gate)·up).
            let g2 = w(p + "ffn_norm.weight")
            swiglu(tape.gate, tape.up, into: ws.activation, count: R * F, pool: pool)
            backProject(dx, input: ws.activation, weight: w(p + "ffn_down.weight"), dWeight: g(p + "ffn_down.weight"),
                        rows: R, inputs: F, outputs: H, dInput: ws.dActivation, accumulate: false, pool: pool)
            swigluBackward(tape.gate, tape.up, ws.dActivation, dGate: ws.dGate, dUp: ws.dUp, count: R * F, pool: pool)
            normalize(tape.middle, g2, tape.rms2, into: ws.normed, rows: R, width: H, pool: pool)
            backProject(ws.dGate, input: ws.normed, weight: w(p + "ffn_gate.weight"), dWeight: g(p + "ffn_gate.weight"),
                        rows: R, inputs: H, outputs: F, dInput: ws.dNormed, accumulate: false, pool: pool)
            backProject(ws.dUp, input: ws.normed, weight: w(p + "ffn_up.weight"), dWeight: g(p + "ffn_up.weight"),
                        rows: R, inputs: H, outputs: F, dInput: ws.dNormed, accumulate: true, pool: pool)
            TrainKernels.rmsNormBackwardRows(tape.middle, g2, r: tape.rms2, ws.dNormed, rows: R, width: H, dx: dx, dg: g(p + "ffn_norm.weight"), pool: pool)
            // Attention: middle = input + o(attention(rope(q), rope(k), v)).
            backProject(dx, input: tape.attention, weight: w(p + "attn_output.weight"), dWeight: g(p + "attn_output.weight"),
                        rows: R, inputs: qw, outputs: H, dInput: ws.dAttention, accumulate: false, pool: pool)
            let (pk, pv) = prefix(l)
            attention.backward(q: tape.q, k: tape.k, v: tape.v, prefixKeys: pk, prefixValues: pv, out: tape.attention, lse: tape.lse,
                               dOut: ws.dAttention, dq: ws.dq, dk: ws.dk, dv: ws.dv,
                               dPrefixKeys: g(ParameterLayout.intactKeyName(layer: l)), dPrefixValues: g(ParameterLayout.intactValueName(layer: l)), pool: pool)
            rotate(ws.dq, heads: c.headCount, batch: B, length: T, inverse: true, pool: pool)
            rotate(ws.dk, heads: c.kvHeadCount, batch: B, length: T, inverse: true, pool: pool)
            let g1 = w(p + "attn_norm.weight")
            normalize(tape.input, g1, tape.rms1, into: ws.normed, rows: R, width: H, pool: pool)
            backProject(ws.dq, input: ws.normed, weight: w(p + "attn_q.weight"), dWeight: g(p + "attn_q.weight"),
                        rows: R, inputs: H, outputs: qw, dInput: ws.dNormed, accumulate: false, pool: pool)
            backProject(ws.dk, input: ws.normed, weight: w(p + "attn_k.weight"), dWeight: g(p + "attn_k.weight"),
                        rows: R, inputs: H, outputs: kvw, dInput: ws.dNormed, accumulate: true, pool: pool)
            backProject(ws.dv, input: ws.normed, weight: w(p + "attn_v.weight"), dWeight: g(p + "attn_v.weight"),
                        rows: R, inputs: H, outputs: kvw, dInput: ws.dNormed, accumulate: true, pool: pool)
            TrainKernels.rmsNormBackwardRows(tape.input, g1, r: tape.rms1, ws.dNormed, rows: R, width: H, dx: dx, dg: g(p + "attn_norm.weight"), pool: pool)
        }
        if lowest == 0, let dEmbedding = g("token_embd.weight") {
            for (row, token) in tokens.enumerated() { axpyF32(1, dx + row * H, dEmbedding + token * H, count: H) }
        }
        return (mean, scored)
    }

    func isTrainable(_ name: String) -> Bool { layout.position(of: name).map { trainable[$0] } ?? false }

    /// The lowest layer whose backward pass feeds a trainable parameter (the embedding needs all).
    func lowestLayerNeeded() -> Int {
        if trainable[0] { return 0 }
        var lowest = config.layerCount
        for (i, entry) in layout.entries.enumerated() where trainable[i] {
            let layer = TensorName(entry.name).layer ?? (entry.name.hasPrefix("intact.") ? Int(entry.name.split(separator: ".")[1]) : nil)
            if let layer { lowest = min(lowest, layer) }
        }
        return lowest
    }
}
