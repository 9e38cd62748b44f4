import Foundation
import PivotKernels

/// What a lossy output shortlist costs, measured from the full head's logits over text windows: at
/// each position the candidates are the initial set plus the window's tokens so far (the prompt), and
/// the shortlist's distribution is the full one renormalized over them. Its KL divergence from the
/// full distribution is −log P(set) (forward KL is infinite whenever the full distribution puts mass
/// outside the set); top-1 agrees when the full argmax is in the set.
public struct ShortlistQuality: Sendable {
    public var size: Int
    public var candidates: Int
    public var tokens = 0
    /// Mean KL(shortlist ‖ full) = mean −log P(set), nats.
    public var meanKLD = 0.0
    /// Mean probability the full head puts outside the set.
    public var meanMassOutside = 0.0
    public var sameTop1 = 0.0
    /// Positions whose next token (the text's) lies outside the set: the shortlist cannot produce it.
    public var targetOutside = 0.0

    public static func measure(model: LoadedModel, initial: [Int], size: Int, tokens: [Int], window: Int, windows: Int?,
                               execution: Execution) -> ShortlistQuality {
        let vocabulary = model.config.vocabularySize
        var base = [Bool](repeating: false, count: vocabulary)
        for t in initial where t >= 0 && t < vocabulary { base[t] = true }
        var result = ShortlistQuality(size: size, candidates: base.filter { $0 }.count)
        let side = ScoringSide(model: model, execution: execution, window: window)
        let count = min(windows ?? Int.max, tokens.count / window)
        var kl = 0.0, outside = 0.0, same = 0, missed = 0, scored = 0
        for w in 0..<count {
            let chunk = Array(tokens[(w * window)..<((w + 1) * window)])
            let logits = side.logits(chunk)
            var member = base
            for t in 0..<(window - 1) {
                member[chunk[t]] = true
                let row = logits.row(t)
                var maxAll = -Float.infinity, argmax = 0
                for j in 0..<vocabulary where row[j] > maxAll { maxAll = row[j]; argmax = j }
                var all = 0.0, inside = 0.0
                for j in 0..<vocabulary {
                    let e = Foundation.exp(Double(row[j] - maxAll))
                    all += e
                    if member[j] { inside += e }
                }
                kl += Foundation.log(all / inside)
                outside += 1 - inside / all
                if member[argmax] { same += 1 }
                if !member[chunk[t + 1]] { missed += 1 }
                scored += 1
            }
        }
        result.tokens = scored
        let n = Double(max(scored, 1))
        result.meanKLD = kl / n; result.meanMassOutside = outside / n
        result.sameTop1 = Double(same) / n; result.targetOutside = Double(missed) / n
        return result
    }
}
