import Foundation

/// AdamW's hyper-parameters (Loshchilov & Hutter 2019): weight decay is decoupled from the gradient,
/// i.e. it shrinks the weights directly instead of being added to the gradient Adam normalizes.
public struct AdamWSettings: Codable, Equatable, Sendable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
    }
}

/// AdamW over one flat parameter vector, with the moments it keeps between steps. Same update as
/// PyTorch's `torch.optim.AdamW` (bias-corrected moments; decay applied before the Adam step):
///   p ← p − lr·λ·p;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − lr·m̂/(√v̂ + ε).
public final class AdamW {
    public let settings: AdamWSettings
    /// First and second moments, one per parameter.
    public internal(set) var firstMoment: [Float], secondMoment: [Float]
    /// Updates taken so far (the bias correction's t).
    public internal(set) var step: Int

    public init(count: Int, settings: AdamWSettings = AdamWSettings()) {
        self.settings = settings
        firstMoment = [Float](repeating: 0, count: count)
        secondMoment = [Float](repeating: 0, count: count)
        step = 0
    }

    /// Restores the state a checkpoint saved.
    public init(settings: AdamWSettings, step: Int, firstMoment: [Float], secondMoment: [Float]) {
        precondition(firstMoment.count == secondMoment.count)
        self.settings = settings; self.step = step; self.firstMoment = firstMoment; self.secondMoment = secondMoment
    }

    public var count: Int { firstMoment.count }

    /// One update of `parameters` (count elements) by `gradients`. Weight decay applies only inside
    /// the `decayed` ranges (nil: everywhere); norms are usually left out.
    public func update(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, learningRate: Float,
                       decayed: [Range<Int>]? = nil) {
        step += 1
        let s = settings, t = Float(step)
        let correction1 = 1 - Foundation.pow(s.beta1, t), correction2 = 1 - Foundation.pow(s.beta2, t)
        let stepSize = learningRate / correction1, rootCorrection2 = correction2.squareRoot()
        if s.weightDecay != 0 {
            let shrink = 1 - learningRate * s.weightDecay
            for range in decayed ?? [0..<count] { for i in range { parameters[i] *= shrink } }
        }
        firstMoment.withUnsafeMutableBufferPointer { mp in secondMoment.withUnsafeMutableBufferPointer { vp in
            let m = mp.baseAddress!, v = vp.baseAddress!
            let b1 = s.beta1, b2 = s.beta2, a1 = 1 - s.beta1, a2 = 1 - s.beta2, eps = s.epsilon
            for i in 0..<count {
                let g = gradients[i]
                let mi = b1 * m[i] + a1 * g, vi = b2 * v[i] + a2 * g * g
                m[i] = mi; v[i] = vi
                parameters[i] -= stepSize * mi / (vi.squareRoot() / rootCorrection2 + eps)
            }
        } }
    }
}

/// Linear warm-up to the peak rate, then a cosine decay to `floor`·peak at `totalSteps`.
public struct LearningRateSchedule: Codable, Equatable, Sendable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var floor: Float
    public init(peak: Float, warmupSteps: Int, totalSteps: Int, floor: Float = 0.1) {
        self.peak = peak; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps; self.floor = floor
    }

    /// The rate of update number `step` (1-based).
    public func rate(at step: Int) -> Float {
        if step <= warmupSteps { return peak * Float(step) / Float(max(1, warmupSteps)) }
        let span = max(1, totalSteps - warmupSteps)
        let progress = min(1, Float(step - warmupSteps) / Float(span))
        let cosine = 0.5 * (1 + Foundation.cos(Float.pi * progress))
        return peak * (floor + (1 - floor) * cosine)
    }
}
