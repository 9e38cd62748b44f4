import Foundation
import XCTest
import Pivot
import PivotKernels

/// The prefix-sharing scorer against a plain full-sequence computation on a tiny random model.
final class EvalScorerTests: XCTestCase {
    func testSharedPrefixScoringEqualsFullRecomputation() throws {
        var tiny = TinyModel()
        tiny.randomize(seed: 9)
        let model = try tiny.load(config: tiny.baseConfig)
        let pool = ThreadPool(threads: 2)
        // A chunk of 8 tokens forces long continuations across several forward calls.
        let scorer = LoglikelihoodScorer(model: model, execution: Execution(pool: pool, precision: .float), contextLength: 128, chunk: 8)
        let items = [
            EvalItem(requests: [.init("abc de", " fg"), .init("abc de", " hij klmno pqrstu"), .init("abc de", "x")], gold: 0, choiceLengths: [2, 15, 1]),
            EvalItem(requests: [.init("the cat", " sat."), .init("the dog", " sat.")], gold: 1, choiceLengths: [7, 7]),
            EvalItem(requests: [.init("Q: ok?\nA: ", "yes"), .init("zzz", " no")], gold: 0, choiceLengths: [3, 2]),
        ]
        let cache = model.makeCache(capacity: 128, maxBatch: 64)
        let state = ForwardState(config: model.config, maxTokens: 64, allLogits: true, execution: Execution(pool: pool, precision: .float))
        for item in items {
            let scores = scorer.score(item)
            for (request, score) in zip(item.requests, scores) {
                let (tokens, start) = scorer.encode(request)
                cache.truncate(to: 0)
                let logits = model.transformer.forward(tokens, cache: cache, state: state, logits: .all)
                var expected = 0.0, greedy = true
                for j in start..<tokens.count {
                    let row = logits.row(j - 1)
                    expected += Double(row[tokens[j]] - logSumExp(row, count: tiny.vocab))
                    if argmax(row, count: tiny.vocab) != tokens[j] { greedy = false }
                }
                XCTAssertEqual(score.logLikelihood, expected, accuracy: 1e-3, "\(request)")
                XCTAssertEqual(score.isGreedy, greedy)
                XCTAssertEqual(score.continuationTokens, tokens.count - start)
            }
        }
        // Byte tokens: "Q: ok?\nA: " + "yes" → context without the trailing space, continuation " yes".
        XCTAssertEqual(scorer.encode(.init("Q: ok?\nA: ", "yes")).continuationStart, "Q: ok?\nA:".utf8.count)
    }
}
