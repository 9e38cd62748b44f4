import Foundation

/// How rotary frequencies are stretched for long contexts, as transformers' `rope_type` values
/// define them (Llama-3.1/3.2 use `llama3`, Qwen2.5 long-context variants `yarn`).
public enum RoPEScaling: Sendable, Equatable {
    case none
    /// Positions divided by `factor` (every frequency / factor).
    case linear(factor: Double)
    /// Llama-3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Int)
    /// YaRN: interpolation blended with extrapolation per dimension; cos/sin scaled by `attentionFactor`.
    case yarn(factor: Double, originalContext: Int, betaFast: Double, betaSlow: Double, attentionFactor: Double, truncate: Bool)
    /// llama.cpp's `rope_freqs.weight`: each frequency divided by its own factor.
    case frequencyFactors([Float])
    /// Phi-3.5/Phi-4-mini's LongRoPE: each frequency divided by its short factor (contexts up to
    /// `originalContext`, to which the context is capped), cos/sin scaled by `attentionFactor`. The long
    /// factors and the trained `context` (max_position_embeddings) are kept for conversion; transformers
    /// switches to the long factors only past `originalContext`.
    case longRoPE(short: [Float], long: [Float], originalContext: Int, attentionFactor: Double, context: Int)

    /// LongRoPE's default attention factor for a context `scale` times the original one: √(1 + ln s /
    /// ln original) when s > 1 (transformers' and llama.cpp's converter's rule).
    static func longRoPEAttentionFactor(scale: Double, originalContext: Int) -> Double {
        scale <= 1 ? 1 : (1 + log(scale) / log(Double(originalContext))).squareRoot()
    }

    /// Inverse frequencies θ^(-2i/d) after scaling, and the factor cos/sin are multiplied by.
    public func frequencies(headDim d: Int, theta: Double) -> (inverse: [Double], attentionFactor: Double) {
        let half = d / 2
        // Float32 powers, as the reference implementations compute them.
        let base = (0..<half).map { Double(Float(1) / powf(Float(theta), Float(2 * $0) / Float(d))) }
        switch self {
        case .none:
            return (base, 1)
        case .linear(let factor):
            return (base.map { $0 / factor }, 1)
        case .frequencyFactors(let factors):
            return (base.indices.map { base[$0] / Double(factors[$0]) }, 1)
        case let .longRoPE(short, _, _, attentionFactor, _):
            return (base.indices.map { base[$0] / Double(short[$0]) }, attentionFactor)
        case let .llama3(factor, low, high, original):
            let lowWavelength = Double(original) / low, highWavelength = Double(original) / high
            return (base.map { f in
                let wavelength = 2 * Double.pi / f
                if wavelength < highWavelength { return f }
                if wavelength > lowWavelength { return f / factor }
                let smooth = (Double(original) / wavelength - low) / (high - low)
                return (1 - smooth) * f / factor + smooth * f
            }, 1)
        case let .yarn(factor, original, betaFast, betaSlow, attentionFactor, truncate):
            func correctionDimension(_ rotations: Double) -> Double {
                Double(d) * log(Double(original) / (rotations * 2 * Double.pi)) / (2 * log(theta))
            }
            var low = correctionDimension(betaFast), high = correctionDimension(betaSlow)
            if truncate { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0); high = min(high, Double(d - 1))
            if low == high { high += 0.001 }
            let inverse = (0..<half).map { i -> Double in
                let ramp = min(1, max(0, (Double(i) - low) / (high - low)))
                let extrapolation = 1 - ramp
                return base[i] / factor * (1 - extrapolation) + base[i] * extrapolation
            }
            return (inverse, attentionFactor)
        }
    }
}

extension RoPEScaling: CustomStringConvertible {
    public var description: String {
        switch self {
        case .none: return "none"
        case .linear(let f): return "linear ×\(f)"
        case let .llama3(f, low, high, original): return "llama3 ×\(f) (low \(low), high \(high), original context \(original))"
        case let .yarn(f, original, fast, slow, attention, _):
            return "yarn ×\(f) (original context \(original), beta \(fast)/\(slow), attention factor \(String(format: "%.4f", attention)))"
        case .frequencyFactors(let f): return "per-frequency factors (\(f.count))"
        case let .longRoPE(short, _, original, attention, _):
            return "longrope, short factors (\(short.count); original context \(original), attention factor \(String(format: "%.4f", attention)))"
        }
    }
}
