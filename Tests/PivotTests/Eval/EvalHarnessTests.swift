import Foundation
import XCTest
import Pivot
import PivotKernels

/// The harness on the real model: KL divergence identities, a resumable sharded matrix, spec errors, passkey prompts.
final class EvalHarnessTests: XCTestCase {
    func wikitextTokens(_ model: LoadedModel, count: Int) throws -> [Int] {
        let text = try Shared.wikitext()
        return Array(model.tokenizer.encode(String(text.prefix(count * 8)), addBOS: false).prefix(count))
    }

    func testKLDivergenceOfAConfigurationWithItselfIsZero() throws {
        let path = try Shared.requireModelPath()
        let a = try LoadedModel.load(path: path), b = try LoadedModel.load(path: path)
        let tokens = try wikitextTokens(a, count: 256)
        func side(_ m: LoadedModel, _ p: ActivationPrecision) -> ScoringSide { ScoringSide(model: m, execution: Execution(pool: Shared.pool, precision: p), window: 128) }
        let same = try KLDivergence.evaluate(base: side(a, .int8), test: side(b, .int8), tokens: tokens, window: 128, windows: 2, pool: Shared.pool)
        XCTAssertEqual(same.tokens, 254)
        XCTAssertEqual(same.meanKLD, 0)
        XCTAssertEqual(same.maxKLD, 0)
        XCTAssertEqual(same.sameTop1, 1)
        XCTAssertEqual(same.perplexityRatio, 1)
        let mixed = try KLDivergence.evaluate(base: side(a, .float), test: side(b, .int8), tokens: tokens, window: 128, windows: 2, pool: Shared.pool)
        XCTAssertGreaterThan(mixed.meanKLD, 1e-4, "int8 activations move the distributions a little")
        XCTAssertLessThan(mixed.meanKLD, 0.05)
        XCTAssertGreaterThan(mixed.sameTop1, 0.85)
        XCTAssertLessThanOrEqual(mixed.medianKLD, mixed.p90KLD)
        XCTAssertLessThanOrEqual(mixed.p99KLD, mixed.maxKLD)
        // The PPL of each side is the perplexity evaluator's over the same windows.
        let ppl = try PerplexityEvaluator(model: a, contextLength: 128, execution: Execution(pool: Shared.pool, precision: .float)).evaluate(tokens: tokens, windows: 2)
        XCTAssertEqual(mixed.basePerplexity, ppl.perplexity, accuracy: 1e-3 * ppl.perplexity)
    }

    /// KLD against a stored base (top-1024 log-probs + a tail bucket) agrees with the in-memory figure.
    func testKLDAgainstAStoredBase() throws {
        let path = try Shared.requireModelPath()
        let a = try LoadedModel.load(path: path), b = try LoadedModel.load(path: path)
        let tokens = try wikitextTokens(a, count: 256)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-kldbase-\(getpid()).bin").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        func side(_ m: LoadedModel, _ p: ActivationPrecision) -> ScoringSide { ScoringSide(model: m, execution: Execution(pool: Shared.pool, precision: p), window: 128) }
        try KLDBaseFile.write(base: side(a, .float), tokens: tokens, window: 128, windows: 2, topK: 1024, to: file, pool: Shared.pool)
        XCTAssertEqual(try KLDBaseFile.window(of: file), 128)
        let selfScore = try KLDBaseFile.evaluate(path: file, test: side(b, .float), tokens: tokens, pool: Shared.pool)
        XCTAssertEqual(selfScore.meanKLD, 0)
        XCTAssertEqual(selfScore.sameTop1, 1)
        let stored = try KLDBaseFile.evaluate(path: file, test: side(b, .int8), tokens: tokens, pool: Shared.pool)
        let exact = try KLDivergence.evaluate(base: side(a, .float), test: side(b, .int8), tokens: tokens, window: 128, windows: 2, pool: Shared.pool)
        XCTAssertLessThanOrEqual(stored.meanKLD, exact.meanKLD * 1.0001, "grouping the tail only lowers KL")
        XCTAssertGreaterThan(stored.meanKLD, exact.meanKLD * 0.9, "top-1024 keeps nearly all of it")
        XCTAssertEqual(stored.sameTop1, exact.sameTop1)
        XCTAssertEqual(stored.perplexity, exact.perplexity, accuracy: 1e-9)
        XCTAssertEqual(stored.basePerplexity, exact.basePerplexity, accuracy: 1e-4 * exact.basePerplexity)
        // Another text is refused by name.
        XCTAssertThrowsError(try KLDBaseFile.evaluate(path: file, test: side(b, .int8), tokens: Array(tokens.reversed()), pool: Shared.pool)) {
            XCTAssertTrue("\($0)".contains("does not tokenize to the tokens"), "\($0)")
        }
        // A prefix (IntactKV's pivot) is recorded in the file and the compared side must run the same.
        func prefixed(_ m: LoadedModel) -> ScoringSide { ScoringSide(model: m, execution: Execution(pool: Shared.pool, precision: .float), window: 128, prefix: [1]) }
        try KLDBaseFile.write(base: prefixed(a), tokens: tokens, window: 128, windows: 1, topK: 64, to: file, pool: Shared.pool)
        XCTAssertEqual(try KLDBaseFile.prefix(of: file), [1])
        XCTAssertEqual(try KLDBaseFile.evaluate(path: file, test: prefixed(b), tokens: tokens, pool: Shared.pool).meanKLD, 0)
        XCTAssertThrowsError(try KLDBaseFile.evaluate(path: file, test: side(b, .float), tokens: tokens, pool: Shared.pool)) {
            XCTAssertTrue("\($0)".contains("same --prefix"), "\($0)")
        }
    }

    /// float vs int8 × 3 tasks, as two shards; the first is interrupted after one cell and resumed
    /// without recomputing it; the merged report has both rows and plots.
    func testMatrixResumesShardsAndMerges() throws {
        _ = try Shared.requireModelPath()
        let data = try Shared.requireEvalData()
        let spec = MatrixSpec(configurations: [RunConfiguration(name: "float", model: Shared.modelPath, precision: .float),
                                               RunConfiguration(name: "int8", model: Shared.modelPath, precision: .int8)],
                              tasks: [TaskSpec(task: "piqa", limit: 6), TaskSpec(task: "arc-easy", limit: 6), TaskSpec(task: "winogrande", limit: 6)])
        try spec.validate()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-matrix-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        let shard0 = root.appendingPathComponent("0").path, shard1 = root.appendingPathComponent("1").path
        let runner = CellRunner(pool: Shared.pool, dataDirectory: data)
        // Shard 0 takes cells 0, 2, 4: float×piqa, float×winogrande, int8×arc-easy.
        XCTAssertEqual(try MatrixRunner(spec: spec, directory: shard0).run(runner: runner, shard: (0, 2), maxCells: 1), 1, "interrupted after one cell")
        let first = URL(fileURLWithPath: shard0).appendingPathComponent("cells/float__piqa@6.json")
        let written = try FileManager.default.attributesOfItem(atPath: first.path)[.modificationDate] as! Date
        XCTAssertEqual(try MatrixRunner(spec: spec, directory: shard0).run(runner: runner, shard: (0, 2)), 2, "resumed: only the two missing cells")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: first.path)[.modificationDate] as! Date, written, "finished cell untouched")
        XCTAssertEqual(try MatrixRunner(spec: spec, directory: shard0).run(runner: runner, shard: (0, 2)), 0, "nothing left")
        XCTAssertEqual(try MatrixRunner(spec: spec, directory: shard1).run(runner: runner, shard: (1, 2)), 3)
        let cells = try MatrixRunner.collect([shard0, shard1])
        XCTAssertEqual(cells.count, 6)
        for cell in cells {
            XCTAssertEqual(cell.items, 6)
            let acc = try XCTUnwrap(cell.metrics["acc"]).value
            XCTAssertTrue((0...1).contains(acc) && (acc * 6).rounded() == acc * 6, "accuracy over 6 items: \(acc)")
            XCTAssertGreaterThan(cell.efficiency.decodeTokensPerSecond, 0)
            XCTAssertEqual(cell.efficiency.kvBytesPerToken, 30 * 2 * 3 * 64 * 4)
        }
        let report = Report(spec: spec, cells: cells)
        XCTAssertEqual(report.table.count, 4, "header, rule, float, int8")
        XCTAssertTrue(report.table[2].hasPrefix("| float |") && report.table[3].hasPrefix("| int8 |"))
        XCTAssertNotNil(report.plotFiles["accuracy-vs-bits.svg"])
        try report.write(to: root.path)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("plots/accuracy-vs-bits.svg").path))
        XCTAssertTrue(try String(contentsOf: root.appendingPathComponent("report.md"), encoding: .utf8).contains("piqa@6 (acc_norm)"))
    }

    func testSpecErrorsBeforeAnyComputation() throws {
        func assertInvalid(_ json: String, _ words: String, line: UInt = #line) throws {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-spec-\(getpid())-\(line).json")
            try json.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            XCTAssertThrowsError(try MatrixSpec.load(file.path), line: line) { XCTAssertTrue("\($0)".contains(words), "\($0)", line: line) }
        }
        try assertInvalid(#"{"configurations": [], "tasks": ["piqa"]}"#, "no configurations")
        try assertInvalid(#"{"configurations": [{"name": "a"}], "tasks": []}"#, "no tasks")
        try assertInvalid(#"{"configurations": [{"name": "a", "model": "missing.gguf"}], "tasks": ["piqa"]}"#, "model 'missing.gguf' not found")
        try assertInvalid(#"{"configurations": [{"name": "a"}], "tasks": ["piqaa"]}"#, "unknown task 'piqaa'")
        try assertInvalid(#"{"configurations": [{"name": "a"}], "tasks": [{"task": "kld", "base": "b"}]}"#, "kld base 'b'")
        try assertInvalid(#"{"configurations": [{"name": "a"}, {"name": "a"}], "tasks": ["piqa"]}"#, "appears twice")
        try assertInvalid(#"{"configurations": [{"model": "x"}], "tasks": ["piqa"]}"#, "missing 'name' at .configurations[0]")
        try assertInvalid(#"{"configurations": [{"name": "a", "precision": "int3"}], "tasks": ["piqa"]}"#, "configurations[0].precision")
        try assertInvalid("{", "not valid JSON")
    }

    func testPasskeyPromptHidesTheKeyAtTheDepth() throws {
        let model = try Shared.model()
        for depth in [0.0, 0.5, 1.0] {
            let ids = Passkey.prompt(tokenizer: model.tokenizer, key: 48213, context: 1024, depth: depth)
            XCTAssertLessThanOrEqual(ids.count, 1024 - 8)
            XCTAssertGreaterThan(ids.count, 1024 - 8 - 30, "fills the context")
            let text = model.tokenizer.decode(ids)
            let at = try XCTUnwrap(text.range(of: "The pass key is 48213."))
            let fraction = Double(text.distance(from: text.startIndex, to: at.lowerBound)) / Double(text.count)
            XCTAssertEqual(fraction, depth, accuracy: 0.1)
            XCTAssertTrue(text.hasSuffix("What is the pass key? The pass key is"))
        }
    }
}
