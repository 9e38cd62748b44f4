import Foundation
import PivotKernels

/// The activations one layer's forward pass leaves for its backward pass (rows = batch × length).
/// The normed inputs and the SwiGLU product are not kept: they are recomputed from these.
final class LayerTape {
    let input, rms1, q, k, v, attention, lse, middle, rms2, gate, up: UnsafeMutablePointer<Float>

    init(_ arena: inout Arena, config c: ModelConfig, rows R: Int) {
        input = arena.take(R * c.hiddenSize); rms1 = arena.take(R)
        q = arena.take(R * c.queryWidth); k = arena.take(R * c.kvWidth); v = arena.take(R * c.kvWidth)
        attention = arena.take(R * c.queryWidth); lse = arena.take(R * c.headCount)
        middle = arena.take(R * c.hiddenSize); rms2 = arena.take(R)
        gate = arena.take(R * c.intermediateSize); up = arena.take(R * c.intermediateSize)
    }
}

/// Hands out slices of one allocation.
struct Arena {
    let base: UnsafeMutablePointer<Float>
    let capacity: Int
    var used = 0
    mutating func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        precondition(used + count <= capacity)
        defer { used += (count + 15) & ~15 }
        return base + used
    }
}

/// Every buffer of a training step for a given row count, allocated once and reused step after step
/// (gigabytes for batch 4 × 512: reallocating would cost page faults every step).
final class TrainWorkspace {
    let rows: Int, headChunk: Int
    let layers: [LayerTape]
    let final, normedFinal, rmsFinal, normed, activation: UnsafeMutablePointer<Float>
    let dx, dNormed, dAttention, dq, dk, dv, dActivation, dGate, dUp, logits, rowLosses: UnsafeMutablePointer<Float>
    private let memory: UnsafeMutablePointer<Float>

    init(config c: ModelConfig, rows R: Int, headChunk: Int) {
        rows = R
        self.headChunk = min(headChunk, R)
        let H = c.hiddenSize, F = c.intermediateSize, qw = c.queryWidth, kvw = c.kvWidth
        let perLayer = R * (3 * H + 2 * qw + 2 * kvw + c.headCount + 2 * F + 2) + 11 * 16
        let shared = R * (5 * H + 2 * F + 2 * qw + 2 * kvw + 3 * F + 1) + self.headChunk * (c.vocabularySize + 1) + 20 * 16
        let total = perLayer * c.layerCount + shared
        memory = .allocate(capacity: total)
        var arena = Arena(base: memory, capacity: total)
        layers = (0..<c.layerCount).map { _ in LayerTape(&arena, config: c, rows: R) }
        final = arena.take(R * H); normedFinal = arena.take(R * H); rmsFinal = arena.take(R)
        normed = arena.take(R * H); activation = arena.take(R * F)
        dx = arena.take(R * H); dNormed = arena.take(R * H); dAttention = arena.take(R * qw)
        dq = arena.take(R * qw); dk = arena.take(R * kvw); dv = arena.take(R * kvw)
        dActivation = arena.take(R * F); dGate = arena.take(R * F); dUp = arena.take(R * F)
        logits = arena.take(self.headChunk * c.vocabularySize); rowLosses = arena.take(self.headChunk)
    }

    deinit { memory.deallocate() }
}

extension TrainableModel {
    func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        axpyF32(1, x, y, count: count)
    }

    /// a = silu(gate)·up.
    func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, into a: UnsafeMutablePointer<Float>, count: Int, pool: ThreadPool) {
        pool.parallelRanges(count: count, minChunk: 4096) { range in
            for i in range { let z = gate[i]; a[i] = z * TrainKernels.sigmoid(z) * up[i] }
        }
    }

    /// ∂/∂gate and ∂/∂up of silu(gate)·up.
    func swigluBackward(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ da: UnsafePointer<Float>,
                        dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>, count: Int, pool: ThreadPool) {
        pool.parallelRanges(count: count, minChunk: 4096) { range in
            for i in range {
                let z = gate[i], s = TrainKernels.sigmoid(z)
                dUp[i] = da[i] * z * s
                dGate[i] = da[i] * up[i] * s * (1 + z * (1 - s))
            }
        }
    }

    /// y = g ⊙ x·r with the saved r (the forward's normed rows, recomputed).
    func normalize(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ r: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                   rows: Int, width: Int, pool: ThreadPool) {
        pool.parallelRanges(count: rows, minChunk: 16) { range in
            for t in range { let rt = r[t]; for i in 0..<width { y[t * width + i] = g[i] * x[t * width + i] * rt } }
        }
    }

    /// dW += dYᵀ·X when the weight trains; dX (+)= dY·W.
    func backProject(_ dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, weight: UnsafePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                     rows: Int, inputs: Int, outputs: Int, dInput: UnsafeMutablePointer<Float>, accumulate: Bool, pool: ThreadPool) {
        if let dWeight { TrainKernels.linearWeightGradient(dy, x, rows: rows, inputs: inputs, outputs: outputs, into: dWeight, pool: pool) }
        TrainKernels.linearInputGradient(dy, weight, rows: rows, inputs: inputs, outputs: outputs, into: dInput, accumulate: accumulate, pool: pool)
    }

    /// RoPE over every head of every row (positions restart with each sequence, after the prefix).
    func rotate(_ m: UnsafeMutablePointer<Float>, heads: Int, batch: Int, length: Int, inverse: Bool, pool: ThreadPool) {
        let d = config.headDim, half = d / 2, width = heads * d, interleaved = config.ropeInterleaved, P = prefixLength
        let cos = rope.cosTable, sin = rope.sinTable
        pool.parallelRanges(count: batch * length, minChunk: 32) { rows in
            for row in rows {
                let position = P + row % length
                for h in 0..<heads {
                    TrainKernels.rotate(m + row * width + h * d, headDim: d, cos: cos + position * half, sin: sin + position * half,
                                        interleaved: interleaved, inverse: inverse)
                }
            }
        }
    }
}
