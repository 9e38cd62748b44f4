import Foundation
import XCTest
import Pivot
import PivotKernels

/// The output shortlist's exact check: with a candidate set far too small to hold the greedy token
/// (300 of 49152), every greedy token still equals the full head's, because the outside tokens that
/// could win are computed.
final class ShortlistTests: XCTestCase {
    func testExactShortlistKeepsEveryGreedyToken() throws {
        let model = try LoadedModel.load(path: try Shared.requireModelPath())
        let pool = ThreadPool(threads: 2), execution = Execution(pool: pool)
        let full = model.transformer.output
        let tokens = model.tokenizer.encode("The history of the city begins in the Roman period, when a small settlement grew up beside the river crossing.")
        func greedy() -> [Int] {
            let cache = model.makeCache(capacity: 64, maxBatch: 8)
            let state = ForwardState(config: model.config, maxTokens: 8, allLogits: false, execution: execution)
            return tokens.map { token in
                let row = model.transformer.forward(token: token, cache: cache, state: state).row(0)
                return (0..<model.config.vocabularySize).max { row[$0] < row[$1] }!
            }
        }
        let expected = greedy()
        let exact = OutputShortlist(full: full, weights: model.transformer.embedding.tensor, initial: Array(0..<300), exact: true, pool: pool)
        model.transformer.output = exact
        XCTAssertEqual(greedy(), expected)
        XCTAssertGreaterThan(exact.checkedRows, 0, "the set of 300 should leave outside tokens able to win")
        // Past 64 rows with the check firing on >90% of them, rows go straight to the whole head: still exact.
        for _ in 0..<3 { XCTAssertEqual(greedy(), expected) }
        if exact.checkedRows * 10 > exact.rowCount * 9 { XCTAssertGreaterThan(exact.bypassedRows, 0) }
        let lossy = OutputShortlist(full: full, weights: model.transformer.embedding.tensor, initial: Array(0..<300), exact: false, pool: pool)
        model.transformer.output = lossy
        let cut = greedy()
        XCTAssertTrue(cut.allSatisfy { $0 < 300 }, "without the check only candidates can win")
        XCTAssertNotEqual(cut, expected)
        model.transformer.output = full
    }
}
