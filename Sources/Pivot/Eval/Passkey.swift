import Foundation
import PivotKernels

/// Long-context retrieval (the passkey test of Landmark Attention / LongLoRA): a random 5-digit
/// key hidden at a given depth of repetitive filler; the model is asked to repeat it and is right
/// when its greedy answer's first number is the key.
public struct PasskeyResult: Codable, Sendable {
    public var contexts: [Int]
    /// Depths as fractions of the filler (0 = the key comes first, 1 = just before the question).
    public var depths: [Double]
    /// accuracy[context][depth], each over `trials` keys.
    public var accuracy: [[Double]]
    public var trials: Int
    public var seconds: Double

    public var overall: Double { accuracy.flatMap { $0 }.reduce(0, +) / Double(max(1, contexts.count * depths.count)) }

    public var metrics: [String: MetricValue] {
        var m = ["acc": MetricValue(overall)]
        for (i, c) in contexts.enumerated() { m["acc@\(c)"] = MetricValue(accuracy[i].reduce(0, +) / Double(max(1, depths.count))) }
        return m
    }
}

public enum Passkey {
    static let instruction = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there."
    static let filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    static let question = " What is the pass key? The pass key is"
    static let answerTokens = 8

    /// The prompt tokens for one trial: instruction, filler with the key line at `depth`, question;
    /// at most `context − answerTokens` tokens so the answer fits.
    public static func prompt(tokenizer: Tokenizer, key: Int, context: Int, depth: Double) -> [Int] {
        let head = tokenizer.encode(instruction)
        let fill = tokenizer.encode(filler, addBOS: false)
        let keyLine = tokenizer.encode(" The pass key is \(key). Remember it. \(key) is the pass key.", addBOS: false)
        let tail = tokenizer.encode(question, addBOS: false)
        let budget = context - answerTokens - head.count - keyLine.count - tail.count
        let repeats = max(1, budget / fill.count)
        let before = Int((Double(repeats) * depth).rounded())
        var tokens = head
        for _ in 0..<before { tokens += fill }
        tokens += keyLine
        for _ in before..<repeats { tokens += fill }
        return tokens + tail
    }

    /// Every (context, depth) cell with `trials` keys drawn from `seed`; contexts beyond the model's are dropped.
    public static func run(model: LoadedModel, execution: Execution, contexts: [Int],
                           depths: [Double], trials: Int, seed: UInt64,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> PasskeyResult {
        let usable = contexts.filter { $0 <= model.config.contextLength }
        guard !usable.isEmpty else {
            throw PivotError.invalidArgument("no passkey context fits the model's \(model.config.contextLength) tokens")
        }
        guard trials > 0, !depths.isEmpty, depths.allSatisfy({ (0...1).contains($0) }) else {
            throw PivotError.invalidArgument("passkey needs at least one trial and depths between 0 and 1")
        }
        let cache = model.makeCache(capacity: usable.max()!, maxBatch: 256)
        let state = ForwardState(config: model.config, maxTokens: 256, allLogits: false, execution: execution)
        var rng = SplitMix64(seed: seed)
        var accuracy = [[Double]](repeating: [Double](repeating: 0, count: depths.count), count: usable.count)
        let total = usable.count * depths.count * trials
        var done = 0
        let start = Date()
        for (ci, context) in usable.enumerated() {
            for (di, depth) in depths.enumerated() {
                for _ in 0..<trials {
                    let key = 10_000 + Int(rng.next() % 90_000)
                    let ids = prompt(tokenizer: model.tokenizer, key: key, context: context, depth: depth)
                    cache.truncate(to: 0)
                    var logits = model.transformer.forward(ids, cache: cache, state: state)
                    var answer: [Int] = []
                    for step in 0..<answerTokens {
                        let next = argmax(logits.row(0), count: model.config.vocabularySize)
                        answer.append(next)
                        if step + 1 < answerTokens { logits = model.transformer.forward(token: next, cache: cache, state: state) }
                    }
                    if firstNumber(in: model.tokenizer.decode(answer, skipSpecial: true)) == key { accuracy[ci][di] += 1 / Double(trials) }
                    done += 1
                    progress(done, total)
                }
            }
        }
        return PasskeyResult(contexts: usable, depths: depths, accuracy: accuracy, trials: trials, seconds: Date().timeIntervalSince(start))
    }

    /// The first run of digits in `text`.
    static func firstNumber(in text: String) -> Int? {
        let digits = text.drop { !$0.isASCII || !$0.isNumber }.prefix { $0.isASCII && $0.isNumber }
        return Int(digits)
    }
}
