import PivotKernels
/// Picks the next token from logits: greedy at temperature 0, else temperature + top-k + top-p.
public struct Sampler: Sendable {
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
        let keep = prepare(logits, count: count)
        var mass: Float = 0
        for i in 0..<keep { mass += weights[i] }
        var r = Float(rng.nextUnit()) * mass
        for i in 0..<keep {
            r -= weights[i]
            if r <= 0 { return candidates[i].id }
        }
        return candidates[keep - 1].id
    }

    /// Verifies `draft` against the rows of the pass that fed the last token and the draft (row i:
    /// the distribution after draft token i−1): how many draft tokens are kept, and the token drawn in
    /// place of the first rejected one (nil when all are kept: the next token then comes from row `accepted`).
    public mutating func verify(draft: [Int], rows: Matrix, count: Int) -> (accepted: Int, replacement: Int?) {
        for (i, token) in draft.enumerated() {
            let verdict = verify(rows.row(i), count: count, drafted: token)
            if !verdict.accepted { return (i, verdict.token) }
        }
        return (draft.count, nil)
    }

    /// Speculative sampling's rule for a deterministic drafter (the draft distribution is a point
    /// mass on `drafted`): accept it with probability p(drafted), else draw from p with `drafted`
    /// removed. The result is distributed exactly as `sample` — drafting changes speed, not output.
    /// At temperature 0: accepted iff `drafted` is the argmax, which is returned either way.
    public mutating func verify(_ logits: UnsafePointer<Float>, count: Int, drafted: Int) -> (accepted: Bool, token: Int) {
        if temperature <= 0 {
            let best = argmax(logits, count: count)
            return (best == drafted, best)
        }
        let keep = prepare(logits, count: count)
        var mass: Float = 0, draftedWeight: Float = 0
        for i in 0..<keep {
            mass += weights[i]
            if candidates[i].id == drafted { draftedWeight = weights[i] }
        }
        if Float(rng.nextUnit()) * mass < draftedWeight { return (true, drafted) }
        var r = Float(rng.nextUnit()) * (mass - draftedWeight)
        var last = drafted
        for i in 0..<keep where candidates[i].id != drafted {
            last = candidates[i].id
            r -= weights[i]
            if r <= 0 { return (false, last) }
        }
        return (false, last)
    }

    /// Fills `candidates` (top-k, by logit) and `weights` (softmax at the temperature, normalized);
    /// returns how many survive top-p.
    private mutating func prepare(_ logits: UnsafePointer<Float>, count: Int) -> Int {
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
        return keep
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
