import Foundation
import PivotKernels

/// Perplexity over non-overlapping windows of `contextLength` tokens starting at token 0, every
/// token but each window's first scored — the windowing of the reference file and of
/// llama.cpp's `perplexity` without its half-window rule, so figures compare directly.
public struct PerplexityResult: Sendable {
    public var windows: Int
    public var scoredTokens: Int
    public var meanNLL: Double
    /// Standard error of the mean negative log-likelihood.
    public var standardError: Double
    public var seconds: Double

    public var perplexity: Double { exp(meanNLL) }
    /// ± on the perplexity, by the delta method (PPL · SE(mean NLL)).
    public var perplexityError: Double { perplexity * standardError }
}

public final class PerplexityEvaluator {
    public let model: LoadedModel
    public let contextLength: Int
    let state: ForwardState
    let cache: KVCache
    let pool: ThreadPool

    /// Predictions from positions before this one are not scored: 0 scores every token but each window's
    /// first; contextLength / 2 is llama.cpp's `llama-perplexity`, which scores only each window's second half.
    public let firstScored: Int
    /// Tokens run before every window and never scored (`--prefix`: e.g. the start token or a system
    /// prompt, whose keys/values a file's intact prefix supplies); the windows and scores stay the same.
    public let prefix: [Int]

    public init(model: LoadedModel, contextLength: Int = 512, execution: Execution,
                firstScored: Int = 0, prefix: [Int] = []) {
        precondition(firstScored >= 0 && firstScored < contextLength - 1)
        self.model = model
        self.contextLength = contextLength
        self.firstScored = firstScored
        self.prefix = prefix
        self.pool = execution.pool
        state = ForwardState(config: model.config, maxTokens: max(contextLength, prefix.count), allLogits: true, execution: execution)
        cache = model.makeCache(capacity: prefix.count + contextLength, maxBatch: max(contextLength, prefix.count))
    }

    /// How many windows `tokens` yields (at most `limit`).
    public func windowCount(tokens: Int, limit: Int?) -> Int {
        let available = tokens / contextLength
        return limit.map { min($0, available) } ?? available
    }

    /// Scores the windows; `progress(done, total, runningPPL)` after each.
    public func evaluate(tokens: [Int], windows limit: Int? = nil,
                         progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> PerplexityResult {
        let windows = windowCount(tokens: tokens.count, limit: limit)
        guard windows > 0 else {
            throw PivotError.invalidArgument("the text has \(tokens.count) tokens, fewer than one window of \(contextLength)")
        }
        let vocabulary = model.config.vocabularySize
        let perWindow = contextLength - 1 - firstScored
        var nll = [Double](repeating: 0, count: windows * perWindow)
        let start = Date()
        for w in 0..<windows {
            cache.truncate(to: 0)
            if !prefix.isEmpty { model.transformer.forward(prefix, cache: cache, state: state, logits: .last) }
            let window = Array(tokens[(w * contextLength)..<((w + 1) * contextLength)])
            let logits = model.transformer.forward(window, cache: cache, state: state, logits: .all)
            nll.withUnsafeMutableBufferPointer { out in
                let base = out.baseAddress! + w * perWindow
                window.withUnsafeBufferPointer { ids in
                    let idsBase = ids.baseAddress!
                    let first = firstScored
                    pool.parallelRanges(count: perWindow) { range in
                        for i in range {
                            let t = first + i
                            let row = logits.row(t)
                            let target = idsBase[t + 1]
                            precondition(target < vocabulary)
                            base[i] = Double(logSumExp(row, count: vocabulary) - row[target])
                        }
                    }
                }
            }
            let scored = (w + 1) * perWindow
            let windowNLL = nll[(w * perWindow)..<scored].reduce(0, +)
            guard windowNLL.isFinite else {
                throw PivotError.nonFinite(file: model.path, "window \(w + 1) gives non-finite log-probabilities")
            }
            progress(w + 1, windows, exp(nll[0..<scored].reduce(0, +) / Double(scored)))
        }
        let n = Double(nll.count)
        let mean = nll.reduce(0, +) / n
        let variance = nll.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / max(1, n - 1)
        return PerplexityResult(windows: windows, scoredTokens: nll.count, meanNLL: mean,
                                standardError: (variance / n).squareRoot(), seconds: Date().timeIntervalSince(start))
    }
}
