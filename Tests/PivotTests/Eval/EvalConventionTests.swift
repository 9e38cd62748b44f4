import Foundation
import XCTest
import Pivot
import PivotKernels

/// lm-evaluation-harness conventions on hand-made items whose right answer is worked out by hand.
final class EvalConventionTests: XCTestCase {
    func item(_ task: String, _ line: [String: Any], shots: ShotProvider = ShotProvider()) throws -> EvalItem {
        try EvalTask.named(task)!.item(from: line, shots: shots)
    }

    /// process_docs: label ": " ctx_a " " ctx_b.capitalize(), then preprocess (strip, " [title]" → ". ",
    /// drop [..], "  " → " "); the endings get the same preprocessing, which keeps a leading space
    /// left behind by a removed bracket.
    func testHellaswagPreprocessing() throws {
        let it = try item("hellaswag", ["activity_label": "Roof shingle removal", "ctx_a": "A man is on a roof. [title] Climb up.",
                                        "ctx_b": "THE man", "endings": ["[title] Remove [step] the shingles.  Now", "falls."], "label": "1"])
        XCTAssertEqual(it.requests[0].context, "Roof shingle removal: A man is on a roof.. Climb up. The man")
        XCTAssertEqual(it.requests[0].continuation, "  Remove the shingles. Now")
        XCTAssertEqual(it.requests[1].continuation, " falls.")
        XCTAssertEqual(it.gold, 1)
        XCTAssertEqual(it.choiceLengths, [" Remove the shingles. Now".unicodeScalars.count, 6])
        XCTAssertEqual(EvalTask.pythonCapitalize("éCOLE nORMALE"), "École normale")
    }

    /// Winogrande's partial scoring: the option fills the blank inside the context, and the part
    /// after the blank is the one continuation both contexts are scored on.
    func testWinograndePartialScoring() throws {
        let it = try item("winogrande", ["sentence": "The trophy didn't fit in the suitcase because the _ was too big.",
                                         "option1": "trophy", "option2": "suitcase", "answer": "1"])
        XCTAssertEqual(it.requests, [.init("The trophy didn't fit in the suitcase because the trophy", " was too big."),
                                     .init("The trophy didn't fit in the suitcase because the suitcase", " was too big.")])
        XCTAssertEqual(it.gold, 0)
    }

    func testMMLUPromptZeroAndFewShot() throws {
        let question: [String: Any] = ["question": "  What carries oxygen? ", "subject": "high_school_biology",
                                       "choices": ["Platelets", "Red blood cells", "Plasma", "White blood cells"], "answer": 1]
        let zero = try item("mmlu", question)
        XCTAssertEqual(zero.requests[0].context, "The following are multiple choice questions (with answers) about high school biology.\n\n"
                       + "What carries oxygen?\nA. Platelets\nB. Red blood cells\nC. Plasma\nD. White blood cells\nAnswer:")
        XCTAssertEqual(zero.requests.map(\.continuation), [" A", " B", " C", " D"])
        XCTAssertEqual(zero.gold, 1)
        let dev: [[String: Any]] = [["question": "Cells?", "subject": "high_school_biology", "choices": ["a", "b", "c", "d"], "answer": 3],
                                    ["question": "Other?", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 0]]
        let one = try item("mmlu", question, shots: try ShotProvider(mmluDev: dev, count: 1))
        XCTAssertEqual(one.requests[0].context, "The following are multiple choice questions (with answers) about high school biology.\n\n"
                       + "Cells?\nA. a\nB. b\nC. c\nD. d\nAnswer: D\n\n"
                       + "What carries oxygen?\nA. Platelets\nB. Red blood cells\nC. Plasma\nD. White blood cells\nAnswer:")
    }

    func testOtherPrompts() throws {
        let arc = try item("arc-easy", ["query": "Question: Which is a gas?", "choices": ["ice", "steam"], "gold": 1])
        XCTAssertEqual(arc.requests, [.init("Question: Which is a gas?\nAnswer:", " ice"), .init("Question: Which is a gas?\nAnswer:", " steam")])
        let piqa = try item("piqa", ["goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0])
        XCTAssertEqual(piqa.requests[1], .init("Question: Open a jar\nAnswer:", " eat the lid"))
        let boolq = try item("boolq", ["passage": "Water is wet.", "question": "is water wet", "answer": true])
        XCTAssertEqual(boolq.requests, [.init("Water is wet.\nQuestion: is water wet?\nAnswer:", " no"), .init("Water is wet.\nQuestion: is water wet?\nAnswer:", " yes")])
        XCTAssertEqual(boolq.gold, 1)
        let obqa = try item("openbookqa", ["question_stem": "The sun is", "choices": ["text": ["a star", "a planet"], "label": ["A", "B"]], "answerKey": " A"])
        XCTAssertEqual(obqa.requests[0], .init("The sun is", " a star"))
        XCTAssertEqual(obqa.gold, 0)
        let lambada = try item("lambada", ["context": "He opened the", "continuation": "door"])
        XCTAssertEqual(lambada.requests, [.init("He opened the", " door")])
    }

    /// acc takes the largest summed log-likelihood, acc_norm the largest per character; ties go to the first.
    func testAccAndAccNorm() {
        let item = EvalItem(requests: [.init("c", " short"), .init("c", " a much longer one")], gold: 1, choiceLengths: [5, 20])
        let scores = [RequestScore(logLikelihood: -10, isGreedy: false, continuationTokens: 1),
                      RequestScore(logLikelihood: -12, isGreedy: false, continuationTokens: 4)]
        let verdict = TaskRunner.judge(.multipleChoice, item, scores)
        XCTAssertFalse(verdict.acc)       // −10 > −12
        XCTAssertTrue(verdict.accNorm)    // −10/5 = −2 < −12/20 = −0.6
        let tie = [RequestScore(logLikelihood: -3, isGreedy: true, continuationTokens: 1), RequestScore(logLikelihood: -3, isGreedy: true, continuationTokens: 1)]
        XCTAssertFalse(TaskRunner.judge(.multipleChoice, item, tie).acc, "a tie goes to the first choice")
        let standard = meanWithStderr([1, 0, 1, 1])
        XCTAssertEqual(standard.value, 0.75)
        XCTAssertEqual(standard.stderr!, 0.25, accuracy: 1e-12)  // sample variance 0.25, / n = 4
    }

    /// `_encode_pair`: trailing whitespace moves into the continuation, the whole text is encoded once,
    /// and the continuation is what follows the context's own tokens.
    func testEncodePairOnTheRealTokenizer() throws {
        let model = try Shared.model()
        let scorer = LoglikelihoodScorer(model: model, execution: Execution(pool: Shared.pool, precision: .float), contextLength: 256, chunk: 32)
        let t = model.tokenizer
        let moved = scorer.encode(.init("Question: Is it?\nAnswer: ", "yes"))
        XCTAssertEqual(moved.tokens, t.encode("Question: Is it?\nAnswer: yes"))
        XCTAssertEqual(moved.continuationStart, t.encode("Question: Is it?\nAnswer:").count)
        XCTAssertEqual(t.decode(Array(moved.tokens[moved.continuationStart...])), " yes")
        // Numbers split per digit in SmolLM's tokenizer, so "12" + "34" shares no merge: 4 digit tokens in all.
        let digits = scorer.encode(.init("Total: 12", "34"))
        XCTAssertEqual(t.decode(Array(digits.tokens[digits.continuationStart...])), "34")
        XCTAssertFalse(model.tokenizer.addBOS, "SmolLM2 adds no BOS, so lm-eval adds none")
        XCTAssertEqual(moved.tokens.first, t.encode("Question").first)
    }

    func testTaskFileErrorsNameTheLine() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-tasks-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("piqa_validation.jsonl")
        try "{\"goal\": \"a\", \"sol1\": \"b\", \"sol2\": \"c\", \"label\": 0}\n{not json\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try EvalTask.named("piqa")!.loadItems(directory: dir.path)) { XCTAssertTrue("\($0)".contains("line 2"), "\($0)") }
        XCTAssertEqual(try EvalTask.named("piqa")!.loadItems(directory: dir.path, limit: 1).count, 1, "--limit reads only the first lines")
        try "{\"goal\": \"a\", \"sol1\": \"b\", \"label\": 0}\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try EvalTask.named("piqa")!.loadItems(directory: dir.path)) { XCTAssertTrue("\($0)".contains("item 1: field 'sol2'"), "\($0)") }
        XCTAssertThrowsError(try TaskSpec(task: "hellaswagg").validate()) { XCTAssertTrue("\($0)".contains("unknown task 'hellaswagg'"), "\($0)") }
    }
}
