import PivotKernels
/// Picks the next token from logits: greedy at temperature 0, else temperature + top-k + top-p.
public struct Sampler {
    public var temperature: Float
    public var topK: Int
    public var topP: Float
    var rng: SplitMix64
    /// Reused scratch so sampling does not allocate per token.
    private var candidates: [(id: Int, logit: Float)] = []
    private var weights: [Float] = []

    public init(temperature: Float = 0, topK: Int = 40, topP: Float = 0.95, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        rng = SplitMix64(seed: seed)
    }

    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        if temperature <= 0 { return argmax(logits, count: count) }
        let k = topK > 0 ? min(topK, count) : count
        candidates.removeAll(keepingCapacity: true)
        // Keep the k largest with a simple bounded selection.
        for i in 0..<count {
            let v = logits[i]
            if candidates.count < k { candidates.append((i, v)); if candidates.count == k { candidates.sort { $0.logit > $1.logit } }; continue }
            if v > candidates[k - 1].logit {
                var j = k - 1
                while j > 0 && candidates[j - 1].logit < v { candidates[j] = candidates[j - 1]; j -= 1 }
                candidates[j] = (i, v)
            }
        }
        if candidates.count < k || k == count { candidates.sort { $0.logit > $1.logit } }
        let maximum = candidates[0].logit
        weights.removeAll(keepingCapacity: true)
        for candidate in candidates { weights.append(expf((candidate.logit - maximum) / temperature)) }
        let total = weights.reduce(0, +)
        var cumulative: Float = 0
        var keep = weights.count
        for i in 0..<weights.count {
            weights[i] /= total
            cumulative += weights[i]
            if cumulative >= topP { keep = i + 1; break }
        }
        var mass: Float = 0
        for i in 0..<keep { mass += weights[i] }
        var r = Float(rng.nextUnit()) * mass
        for i in 0..<keep {
            r -= weights[i]
            if r <= 0 { return candidates[i].id }
        }
        return candidates[keep - 1].id
    }
}

/// Index of the largest value (first on ties), as PyTorch's argmax.
public func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
    var best = 0
    var bestValue = x[0]
    for i in 1..<count where x[i] > bestValue { best = i; bestValue = x[i] }
    return best
}

import Foundation
