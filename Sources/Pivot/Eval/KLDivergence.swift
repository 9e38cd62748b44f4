import Foundation
import PivotKernels

/// How far a configuration's next-token distributions are from a base's over the same tokens, with
/// the statistics llama.cpp's `llama-perplexity --kl-divergence` prints.
public struct KLDResult: Codable, Sendable {
    public var tokens: Int
    public var meanKLD: Double
    public var meanKLDStderr: Double
    public var medianKLD: Double
    public var p90KLD: Double
    public var p99KLD: Double
    public var p999KLD: Double
    public var maxKLD: Double
    /// Fraction of tokens whose most likely next token is the same under both.
    public var sameTop1: Double
    public var sameTop1Stderr: Double
    public var basePerplexity: Double
    public var perplexity: Double
    public var perplexityRatio: Double { perplexity / basePerplexity }
    public var seconds: Double

    /// As metrics for reports.
    public var metrics: [String: MetricValue] {
        ["kld_mean": MetricValue(meanKLD, stderr: meanKLDStderr), "kld_median": MetricValue(medianKLD),
         "kld_p90": MetricValue(p90KLD), "kld_p99": MetricValue(p99KLD), "kld_p99.9": MetricValue(p999KLD),
         "kld_max": MetricValue(maxKLD), "same_top1": MetricValue(sameTop1, stderr: sameTop1Stderr),
         "ppl_base": MetricValue(basePerplexity), "perplexity": MetricValue(perplexity), "ppl_ratio": MetricValue(perplexityRatio)]
    }
}

/// One model run by one configuration: the model and its forward-pass buffers.
public final class ScoringSide {
    let model: LoadedModel
    let cache: KVCache
    let state: ForwardState
    /// Tokens run before every window, never scored (`--prefix`).
    public let prefix: [Int]

    public init(model: LoadedModel, execution: Execution, window: Int, prefix: [Int] = []) {
        self.model = model
        self.prefix = prefix
        cache = model.makeCache(capacity: prefix.count + window, maxBatch: max(window, prefix.count))
        state = ForwardState(config: model.config, maxTokens: max(window, prefix.count), allLogits: true, execution: execution)
    }

    /// Logits of every position of `window`, on a cache holding only the prefix.
    func logits(_ window: [Int]) -> Matrix {
        cache.truncate(to: 0)
        if !prefix.isEmpty { model.transformer.forward(prefix, cache: cache, state: state, logits: .last) }
        return model.transformer.forward(window, cache: cache, state: state, logits: .all)
    }
}

/// Per scored token: KL divergence, both sides' NLL and whether their top-1 agrees, filled in
/// parallel window by window and summarized as llama.cpp does (every KLD evaluation shares it).
struct TokenScores {
    var kld, baseNLL, testNLL, same: [Double]

    init(count: Int) {
        kld = [Double](repeating: 0, count: count); baseNLL = kld; testNLL = kld; same = kld
    }

    /// Tokens `first..<first + count`: `score(t)` for t in 0..<count, split over `pool`.
    mutating func fill(first: Int, count: Int, pool: ThreadPool,
                       _ score: (Int) -> (kld: Double, baseNLL: Double, testNLL: Double, same: Bool)) {
        kld.withUnsafeMutableBufferPointer { kldOut in baseNLL.withUnsafeMutableBufferPointer { baseOut in
            testNLL.withUnsafeMutableBufferPointer { testOut in same.withUnsafeMutableBufferPointer { sameOut in
                pool.parallelRanges(count: count) { range in
                    for t in range {
                        let r = score(t), i = first + t
                        kldOut[i] = r.kld; baseOut[i] = r.baseNLL; testOut[i] = r.testNLL; sameOut[i] = r.same ? 1 : 0
                    }
                }
            } }
        } }
    }

    func summarize(seconds: Double) -> KLDResult {
        KLDivergence.summarize(kld: kld, baseNLL: baseNLL, testNLL: testNLL, same: same, seconds: seconds)
    }
}

public enum KLDivergence {
    /// Both sides over the same non-overlapping windows; every token but each window's first is
    /// scored, as `pivot perplexity` scores them, so the PPL columns equal that verb's.
    public static func evaluate(base: ScoringSide, test: ScoringSide, tokens: [Int], window: Int, windows limit: Int?,
                                pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws -> KLDResult {
        guard base.model.config.vocabularySize == test.model.config.vocabularySize else {
            throw PivotError.invalidArgument("the two models have different vocabularies (\(base.model.config.vocabularySize) vs \(test.model.config.vocabularySize))")
        }
        let available = tokens.count / window
        let windows = min(limit ?? available, available)
        guard windows > 0 else { throw PivotError.invalidArgument("the text has \(tokens.count) tokens, fewer than one window of \(window)") }
        let vocabulary = base.model.config.vocabularySize
        let perWindow = window - 1
        let count = windows * perWindow
        var scores = TokenScores(count: count)
        let start = Date()
        for w in 0..<windows {
            let ids = Array(tokens[(w * window)..<((w + 1) * window)])
            let p = base.logits(ids), q = test.logits(ids)
            scores.fill(first: w * perWindow, count: perWindow, pool: pool) { t in
                let target = ids[t + 1]
                let lseP = logSumExp(p.row(t), count: vocabulary), lseQ = logSumExp(q.row(t), count: vocabulary)
                return (Double(max(0, klDivergence(p.row(t), logSumExpP: lseP, q.row(t), logSumExpQ: lseQ, count: vocabulary))),
                        Double(lseP - p.row(t)[target]), Double(lseQ - q.row(t)[target]),
                        argmax(p.row(t), count: vocabulary) == argmax(q.row(t), count: vocabulary))
            }
            let range = (w * perWindow)..<((w + 1) * perWindow)
            for (side, nll) in [(base, scores.baseNLL), (test, scores.testNLL)] where !nll[range].reduce(0, +).isFinite {
                throw PivotError.nonFinite(file: side.model.path, "window \(w + 1) gives non-finite log-probabilities")
            }
            progress(w + 1, windows)
        }
        return scores.summarize(seconds: Date().timeIntervalSince(start))
    }

    /// llama.cpp's statistics from per-token KL divergences, both sides' NLLs and same-top-1 flags.
    static func summarize(kld: [Double], baseNLL: [Double], testNLL: [Double], same: [Double], seconds: Double) -> KLDResult {
        let count = kld.count
        let mean = meanWithStderr(kld), top = meanWithStderr(same)
        let sorted = kld.sorted()
        func percentile(_ p: Double) -> Double {
            let position = p * Double(sorted.count - 1)
            let low = Int(position.rounded(.down)), high = min(sorted.count - 1, low + 1)
            return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
        }
        return KLDResult(tokens: count, meanKLD: mean.value, meanKLDStderr: mean.stderr ?? 0, medianKLD: percentile(0.5),
                         p90KLD: percentile(0.9), p99KLD: percentile(0.99), p999KLD: percentile(0.999), maxKLD: sorted.last!,
                         sameTop1: top.value, sameTop1Stderr: top.stderr ?? 0,
                         basePerplexity: exp(baseNLL.reduce(0, +) / Double(count)), perplexity: exp(testNLL.reduce(0, +) / Double(count)),
                         seconds: seconds)
    }
}
