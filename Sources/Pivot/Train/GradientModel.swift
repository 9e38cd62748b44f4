import Foundation
import PivotKernels

/// A float copy of a Llama-family GGUF model that computes the next-token loss of a sequence and
/// its gradient with respect to every block projection's weights (and inputs): RMSNorm, RoPE,
/// causal GQA attention and SwiGLU, differentiated by hand. It serves LLM-MQ's sensitivities
/// and, later, calibrated methods. Float throughout (weights dequantized once); not a fast path.
public final class GradientModel {
    public static let projectionRoles = ProjectionRole.allCases.map(\.rawValue)

    public let config: ModelConfig
    /// Weights by GGUF tensor name, row-major [out][in] (norms: one vector).
    public var weights: [String: [Float]]
    let rope: RoPETable

    public init(gguf: GGUFFile) throws {
        config = try ModelConfig(gguf: gguf)
        guard !config.attentionBias, !config.queryKeyNorm, config.ropeLayers == nil, !config.outputBias else {
            throw PivotError.unsupported(file: gguf.path, "the gradient pass covers plain Llama blocks (no biases, q/k norms or RoPE-less layers)")
        }
        var weights: [String: [Float]] = [:]
        func load(_ name: String) throws {
            guard let t = gguf.tensors[name] else { throw PivotError.unsupported(file: gguf.path, "missing tensor '\(name)'") }
            var values = [Float](repeating: 0, count: t.elementCount)
            values.withUnsafeMutableBufferPointer { t.copyFloats(into: $0.baseAddress!) }
            weights[name] = values
        }
        try load("token_embd.weight"); try load("output_norm.weight")
        if gguf.tensors["output.weight"] != nil { try load("output.weight") }
        for l in 0..<config.layerCount {
            for role in Self.projectionRoles + ["attn_norm", "ffn_norm"] { try load("blk.\(l).\(role).weight") }
        }
        self.weights = weights
        rope = RoPETable(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling)
    }

    /// Activations of one layer saved by the forward pass for the backward pass.
    struct LayerTape {
        var input: [Float], rms1: [Float], normed1: [Float]
        var q: [Float], k: [Float], v: [Float], probabilities: [Float], attention: [Float]
        var middle: [Float], rms2: [Float], normed2: [Float], gate: [Float], up: [Float], activation: [Float]
    }

    /// The mean next-token cross-entropy (natural log) of `tokens` (positions 0..<n, one sequence),
    /// and its gradient: added into `gradients[name]` (allocated on first use) for every block
    /// projection. `inputGradients`, when given, receives each projection's input gradient (tokens × in).
    public func lossAndGradients(tokens: [Int], gradients: inout [String: [Float]], pool: ThreadPool,
                                 inputGradients: ((String, [Float]) -> Void)? = nil) -> Double {
        let c = config, n = tokens.count, hidden = c.hiddenSize, ffn = c.intermediateSize
        let qw = c.queryWidth, kvw = c.kvWidth, d = c.headDim, eps = c.rmsNormEpsilon
        precondition(n >= 2, "a loss needs at least two tokens")
        rope.ensure(positions: n)
        let embedding = weights["token_embd.weight"]!, head = weights["output.weight"] ?? embedding
        // Forward, saving what the backward pass needs.
        var x = [Float](repeating: 0, count: n * hidden)
        for (t, token) in tokens.enumerated() { for i in 0..<hidden { x[t * hidden + i] = embedding[token * hidden + i] } }
        var tapes: [LayerTape] = []
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            var tape = LayerTape(input: x, rms1: [], normed1: [], q: [], k: [], v: [], probabilities: [], attention: [],
                                 middle: [], rms2: [], normed2: [], gate: [], up: [], activation: [])
            (tape.normed1, tape.rms1) = normRows(x, weights[p + "attn_norm.weight"]!, rows: n, width: hidden, eps: eps)
            tape.q = project(tape.normed1, p + "attn_q.weight", n, hidden, qw, pool)
            tape.k = project(tape.normed1, p + "attn_k.weight", n, hidden, kvw, pool)
            tape.v = project(tape.normed1, p + "attn_v.weight", n, hidden, kvw, pool)
            rotateRows(&tape.q, heads: c.headCount, n: n, inverse: false)
            rotateRows(&tape.k, heads: c.kvHeadCount, n: n, inverse: false)
            (tape.attention, tape.probabilities) = attentionForward(tape.q, tape.k, tape.v, n: n, pool: pool)
            let a = project(tape.attention, p + "attn_output.weight", n, qw, hidden, pool)
            for i in 0..<(n * hidden) { x[i] += a[i] }
            tape.middle = x
            (tape.normed2, tape.rms2) = normRows(x, weights[p + "ffn_norm.weight"]!, rows: n, width: hidden, eps: eps)
            tape.gate = project(tape.normed2, p + "ffn_gate.weight", n, hidden, ffn, pool)
            tape.up = project(tape.normed2, p + "ffn_up.weight", n, hidden, ffn, pool)
            tape.activation = (0..<(n * ffn)).map { i in tape.gate[i] * TrainKernels.sigmoid(tape.gate[i]) * tape.up[i] }
            let down = project(tape.activation, p + "ffn_down.weight", n, ffn, hidden, pool)
            for i in 0..<(n * hidden) { x[i] += down[i] }
            tapes.append(tape)
        }
        let (normedFinal, rmsFinal) = normRows(x, weights["output_norm.weight"]!, rows: n, width: hidden, eps: eps)
        // Logits and the loss over positions 0..<n−1; dLogits = (softmax − onehot)/(n − 1).
        let vocab = c.vocabularySize
        var dLogits = [Float](repeating: 0, count: n * vocab)
        var loss = 0.0
        normedFinal.withUnsafeBufferPointer { xf in head.withUnsafeBufferPointer { w in dLogits.withUnsafeMutableBufferPointer { out in
            TrainKernels.linear(xf.baseAddress!, w.baseAddress!, tokens: n, inputs: hidden, outputs: vocab, into: out.baseAddress!, pool: pool)
        } } }
        let scale = 1 / Float(n - 1)
        for t in 0..<n {
            let row = t * vocab
            if t == n - 1 { for j in 0..<vocab { dLogits[row + j] = 0 }; continue }
            var largest = -Float.infinity
            for j in 0..<vocab { largest = max(largest, dLogits[row + j]) }
            var total = 0.0
            for j in 0..<vocab { let e = Foundation.exp(dLogits[row + j] - largest); dLogits[row + j] = e; total += Double(e) }
            let target = tokens[t + 1]
            loss -= log(Double(dLogits[row + target]) / total)
            for j in 0..<vocab { dLogits[row + j] = Float(Double(dLogits[row + j]) / total) * scale }
            dLogits[row + target] -= scale
        }
        loss /= Double(n - 1)

        // Backward.
        var dNormed = [Float](repeating: 0, count: n * hidden)
        dLogits.withUnsafeBufferPointer { dl in head.withUnsafeBufferPointer { w in dNormed.withUnsafeMutableBufferPointer { out in
            TrainKernels.linearInputGradient(dl.baseAddress!, w.baseAddress!, tokens: n, inputs: hidden, outputs: vocab, into: out.baseAddress!, pool: pool)
        } } }
        var dx = [Float](repeating: 0, count: n * hidden)
        normBackward(x, weights["output_norm.weight"]!, rmsFinal, dNormed, rows: n, width: hidden, into: &dx)
        for l in stride(from: c.layerCount - 1, through: 0, by: -1) {
            let p = "blk.\(l).", tape = tapes[l]
            // MLP: x2 = x1 + down(silu(gate)·up).
            let dActivation = backProject(dx, tape.activation, p + "ffn_down.weight", n, ffn, hidden, &gradients, pool, inputGradients)
            var dGate = [Float](repeating: 0, count: n * ffn), dUp = dGate
            for i in 0..<(n * ffn) {
                let z = tape.gate[i], s = TrainKernels.sigmoid(z)
                dUp[i] = dActivation[i] * z * s
                dGate[i] = dActivation[i] * tape.up[i] * s * (1 + z * (1 - s))
            }
            var dNormed2 = backProject(dGate, tape.normed2, p + "ffn_gate.weight", n, hidden, ffn, &gradients, pool, nil)
            let fromUp = backProject(dUp, tape.normed2, p + "ffn_up.weight", n, hidden, ffn, &gradients, pool, nil)
            for i in 0..<(n * hidden) { dNormed2[i] += fromUp[i] }
            inputGradients?(p + "ffn_gate.weight", dNormed2)
            normBackward(tape.middle, weights[p + "ffn_norm.weight"]!, tape.rms2, dNormed2, rows: n, width: hidden, into: &dx)
            // Attention: x1 = x0 + o(attention(rope(q), rope(k), v)).
            let dAttention = backProject(dx, tape.attention, p + "attn_output.weight", n, qw, hidden, &gradients, pool, inputGradients)
            var (dq, dk, dv) = attentionBackward(dAttention, tape, n: n, pool: pool)
            rotateRows(&dq, heads: c.headCount, n: n, inverse: true)
            rotateRows(&dk, heads: c.kvHeadCount, n: n, inverse: true)
            var dNormed1 = backProject(dq, tape.normed1, p + "attn_q.weight", n, hidden, qw, &gradients, pool, nil)
            let fromK = backProject(dk, tape.normed1, p + "attn_k.weight", n, hidden, kvw, &gradients, pool, nil)
            let fromV = backProject(dv, tape.normed1, p + "attn_v.weight", n, hidden, kvw, &gradients, pool, nil)
            for i in 0..<(n * hidden) { dNormed1[i] += fromK[i] + fromV[i] }
            inputGradients?(p + "attn_q.weight", dNormed1)
            normBackward(tape.input, weights[p + "attn_norm.weight"]!, tape.rms1, dNormed1, rows: n, width: hidden, into: &dx)
        }
        return loss
    }

    // MARK: - Pieces

    func project(_ x: [Float], _ name: String, _ n: Int, _ inputs: Int, _ outputs: Int, _ pool: ThreadPool) -> [Float] {
        var y = [Float](repeating: 0, count: n * outputs)
        x.withUnsafeBufferPointer { xp in weights[name]!.withUnsafeBufferPointer { w in y.withUnsafeMutableBufferPointer { out in
            TrainKernels.linear(xp.baseAddress!, w.baseAddress!, tokens: n, inputs: inputs, outputs: outputs, into: out.baseAddress!, pool: pool)
        } } }
        return y
    }

    /// Adds dW of `name` into `gradients` and returns dX for the projection's input.
    func backProject(_ dy: [Float], _ x: [Float], _ name: String, _ n: Int, _ inputs: Int, _ outputs: Int,
                     _ gradients: inout [String: [Float]], _ pool: ThreadPool, _ report: ((String, [Float]) -> Void)?) -> [Float] {
        if gradients[name] == nil { gradients[name] = [Float](repeating: 0, count: inputs * outputs) }
        dy.withUnsafeBufferPointer { d in x.withUnsafeBufferPointer { xp in gradients[name]!.withUnsafeMutableBufferPointer { g in
            TrainKernels.linearWeightGradient(d.baseAddress!, xp.baseAddress!, tokens: n, inputs: inputs, outputs: outputs, into: g.baseAddress!, pool: pool)
        } } }
        var dx = [Float](repeating: 0, count: n * inputs)
        dy.withUnsafeBufferPointer { d in weights[name]!.withUnsafeBufferPointer { w in dx.withUnsafeMutableBufferPointer { out in
            TrainKernels.linearInputGradient(d.baseAddress!, w.baseAddress!, tokens: n, inputs: inputs, outputs: outputs, into: out.baseAddress!, pool: pool)
        } } }
        report?(name, dx)
        return dx
    }

    func normRows(_ x: [Float], _ g: [Float], rows: Int, width: Int, eps: Float) -> ([Float], [Float]) {
        var y = [Float](repeating: 0, count: rows * width), r = [Float](repeating: 0, count: rows)
        x.withUnsafeBufferPointer { xp in g.withUnsafeBufferPointer { gp in y.withUnsafeMutableBufferPointer { yp in
            for t in 0..<rows {
                r[t] = TrainKernels.rmsNormForward(xp.baseAddress! + t * width, gp.baseAddress!, count: width, epsilon: eps, into: yp.baseAddress! + t * width)
            }
        } } }
        return (y, r)
    }

    func normBackward(_ x: [Float], _ g: [Float], _ r: [Float], _ dy: [Float], rows: Int, width: Int, into dx: inout [Float]) {
        x.withUnsafeBufferPointer { xp in g.withUnsafeBufferPointer { gp in dy.withUnsafeBufferPointer { d in dx.withUnsafeMutableBufferPointer { out in
            for t in 0..<rows {
                TrainKernels.rmsNormBackward(xp.baseAddress! + t * width, gp.baseAddress!, r: r[t], d.baseAddress! + t * width,
                                             count: width, into: out.baseAddress! + t * width)
            }
        } } } }
    }

    func rotateRows(_ m: inout [Float], heads: Int, n: Int, inverse: Bool) {
        let d = config.headDim, half = d / 2, width = heads * d
        m.withUnsafeMutableBufferPointer { mp in
            for t in 0..<n {
                for h in 0..<heads {
                    TrainKernels.rotate(mp.baseAddress! + t * width + h * d, headDim: d, cos: rope.cosTable + t * half, sin: rope.sinTable + t * half,
                                        interleaved: config.ropeInterleaved, inverse: inverse)
                }
            }
        }
    }
}

extension GradientModel {
    /// Σ over windows of |∂loss/∂W| per block-projection weight (LLM-MQ's gradient magnitudes), and the mean loss.
    public func gradientMagnitudes(windows: [[Int]], pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) -> ([String: [Float]], Double) {
        var magnitudes: [String: [Float]] = [:]
        var loss = 0.0
        for (i, window) in windows.enumerated() {
            var gradients: [String: [Float]] = [:]
            loss += lossAndGradients(tokens: window, gradients: &gradients, pool: pool)
            for (name, g) in gradients {
                if magnitudes[name] == nil { magnitudes[name] = [Float](repeating: 0, count: g.count) }
                magnitudes[name]!.withUnsafeMutableBufferPointer { m in for j in 0..<g.count { m[j] += abs(g[j]) } }
            }
            progress(i + 1, windows.count)
        }
        return (magnitudes, loss / Double(max(1, windows.count)))
    }
}
