import Foundation
import PivotKernels

/// Float building blocks of the training-style pass (forward with saved activations, then
/// backward): products with a weight matrix and with its transpose, RMSNorm and its gradient.
/// Matrices are row-major, one row per token; W is [out][in] as the checkpoints store it.
enum TrainKernels {
    /// Y[t] = W·X[t] for every token.
    static func linear(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, tokens: Int, inputs: Int, outputs: Int,
                       into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        pool.parallelRanges(count: outputs, minChunk: 8) { range in
            denseMatMul(weights: w, inFeatures: inputs, outputs: range, x: x, xStride: inputs, tokens: tokens, out: y, outStride: outputs)
        }
    }

    /// dX[t] += Wᵀ·dY[t] (the gradient reaching a projection's input).
    static func linearInputGradient(_ dy: UnsafePointer<Float>, _ w: UnsafePointer<Float>, tokens: Int, inputs: Int, outputs: Int,
                                    into dx: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        pool.parallelRanges(count: tokens) { range in
            for t in range {
                let target = dx + t * inputs
                for o in 0..<outputs {
                    let g = dy[t * outputs + o]
                    if g != 0 { axpyF32(g, w + o * inputs, target, count: inputs) }
                }
            }
        }
    }

    /// dW[o] += Σ_t dY[t][o]·X[t] (the gradient of the weights).
    static func linearWeightGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, tokens: Int, inputs: Int, outputs: Int,
                                     into dw: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        pool.parallelRanges(count: outputs, minChunk: 4) { range in
            for o in range {
                let target = dw + o * inputs
                for t in 0..<tokens {
                    let g = dy[t * outputs + o]
                    if g != 0 { axpyF32(g, x + t * inputs, target, count: inputs) }
                }
            }
        }
    }

    /// y = g ⊙ x·r with r = 1/√(mean x² + ε); returns r (saved for the gradient).
    static func rmsNormForward(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, count n: Int, epsilon: Float,
                               into y: UnsafeMutablePointer<Float>) -> Float {
        var sum: Float = 0
        for i in 0..<n { sum += x[i] * x[i] }
        let r = 1 / (sum / Float(n) + epsilon).squareRoot()
        for i in 0..<n { y[i] = g[i] * x[i] * r }
        return r
    }

    /// dx += r·(g⊙dy) − x·r³·⟨g⊙dy, x⟩/n.
    static func rmsNormBackward(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, r: Float, _ dy: UnsafePointer<Float>,
                                count n: Int, into dx: UnsafeMutablePointer<Float>) {
        var dot: Float = 0
        for i in 0..<n { dot += g[i] * dy[i] * x[i] }
        let c = r * r * r * dot / Float(n)
        for i in 0..<n { dx[i] += r * g[i] * dy[i] - c * x[i] }
    }

    /// RoPE on one head vector, or its inverse (the transpose of the rotation) for gradients.
    static func rotate(_ v: UnsafeMutablePointer<Float>, headDim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                       interleaved: Bool, inverse: Bool) {
        let half = headDim / 2
        for i in 0..<half {
            let (a, b) = interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
            let x0 = v[a], x1 = v[b], c = cos[i], s = inverse ? -sin[i] : sin[i]
            v[a] = x0 * c - x1 * s
            v[b] = x0 * s + x1 * c
        }
    }

    @inline(__always) static func sigmoid(_ z: Float) -> Float { 1 / (1 + Foundation.exp(-z)) }
}
