import Foundation
import PivotKernels

/// A metric value with its standard error (lm-eval's `_stderr`), when one is defined.
public struct MetricValue: Codable, Sendable, Equatable {
    public var value: Double
    public var stderr: Double?
    public init(_ value: Double, stderr: Double? = nil) { self.value = value; self.stderr = stderr }
}

/// How one item came out: right by acc / acc_norm, and each request's log-likelihood and greedy flag,
/// so runs can be compared item by item (with the float reference, or between configurations).
public struct ItemOutcome: Codable, Sendable, Equatable {
    public var acc: Bool
    public var accNorm: Bool
    public var logLikelihoods: [Double]
    public var greedy: [Bool]
}

/// One task's scores plus what it cost.
public struct TaskResult: Sendable {
    public var task: String
    public var items: Int
    public var metrics: [String: MetricValue]
    public var seconds: Double
    /// Tokens the model actually ran (shared prefixes once).
    public var computedTokens: Int
    public var tokensPerSecond: Double { seconds > 0 ? Double(computedTokens) / seconds : 0 }
    public var outcomes: [ItemOutcome]
}

/// Reads a JSON-lines file; a malformed line is an error naming the file and line.
public func readJSONLines(_ path: String, limit: Int? = nil) throws -> [[String: Any]] {
    let text = try readTextFile(path)
    var rows: [[String: Any]] = []
    var number = 0
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        number += 1
        if let limit, rows.count >= limit { break }
        if line.allSatisfy(\.isWhitespace) { continue }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            throw PivotError.malformed(file: path, "line \(number) is not a JSON object")
        }
        rows.append(object)
    }
    return rows
}

extension EvalTask {
    /// The first `limit` items of the task file in `directory`, in file order.
    public func loadItems(directory: String, limit: Int? = nil, shots: ShotProvider = ShotProvider()) throws -> [EvalItem] {
        let path = (directory as NSString).appendingPathComponent(file)
        let lines = try readJSONLines(path, limit: limit)
        guard !lines.isEmpty else { throw PivotError.malformed(file: path, "no items") }
        return try lines.enumerated().map { index, line in
            do { return try makeItem(line, shots) } catch let error as PivotError {
                throw PivotError.malformed(file: path, "item \(index + 1): \(error)")
            }
        }
    }
}

/// Scores items and aggregates them exactly as lm-eval's `process_results` and aggregations:
/// acc = argmax of summed log-likelihoods, acc_norm = argmax of log-likelihood / choice length,
/// LAMBADA acc = every target token greedy, perplexity = exp(−mean per-item log-likelihood).
public enum TaskRunner {
    public static func run(_ task: EvalTask, items: [EvalItem], scorer: LoglikelihoodScorer,
                           progress: (Int, Int) -> Void = { _, _ in }) -> TaskResult {
        let start = Date()
        let tokensBefore = scorer.computedTokens
        var correct: [Double] = [], correctNorm: [Double] = [], likelihoods: [Double] = []
        var outcomes: [ItemOutcome] = []
        for (index, item) in items.enumerated() {
            let scores = scorer.score(item)
            let verdict = judge(task.kind, item, scores)
            outcomes.append(ItemOutcome(acc: verdict.acc, accNorm: verdict.accNorm, logLikelihoods: scores.map(\.logLikelihood), greedy: scores.map(\.isGreedy)))
            correct.append(verdict.acc ? 1 : 0)
            correctNorm.append(verdict.accNorm ? 1 : 0)
            if task.kind == .lastWord { likelihoods.append(scores[0].logLikelihood) }
            progress(index + 1, items.count)
        }
        var metrics = ["acc": meanWithStderr(correct)]
        if task.headline == "acc_norm" { metrics["acc_norm"] = meanWithStderr(correctNorm) }
        if task.kind == .lastWord {
            let nll = meanWithStderr(likelihoods.map { -$0 })
            let ppl = exp(nll.value)
            metrics["perplexity"] = MetricValue(ppl, stderr: nll.stderr.map { $0 * ppl })
        }
        return TaskResult(task: task.name, items: items.count, metrics: metrics, seconds: Date().timeIntervalSince(start),
                          computedTokens: scorer.computedTokens - tokensBefore, outcomes: outcomes)
    }

    /// Whether an item is right by acc and by acc_norm (multiple choice), or by greedy match (last word).
    public static func judge(_ kind: TaskKind, _ item: EvalItem, _ scores: [RequestScore]) -> (acc: Bool, accNorm: Bool) {
        switch kind {
        case .multipleChoice:
            let lls = scores.map(\.logLikelihood)
            let normalized = lls.indices.map { lls[$0] / Double(max(1, item.choiceLengths[$0])) }
            return (firstArgmax(lls) == item.gold, firstArgmax(normalized) == item.gold)
        case .lastWord:
            return (scores[0].isGreedy, scores[0].isGreedy)
        }
    }

    /// numpy's argmax: the first maximum.
    static func firstArgmax(_ values: [Double]) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }
}

/// Mean and its standard error with the sample (n − 1) variance, as lm-eval's `mean_stderr`.
public func meanWithStderr(_ values: [Double]) -> MetricValue {
    guard !values.isEmpty else { return MetricValue(.nan) }
    let n = Double(values.count)
    let mean = values.reduce(0, +) / n
    guard values.count > 1 else { return MetricValue(mean) }
    let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
    return MetricValue(mean, stderr: (variance / n).squareRoot())
}
