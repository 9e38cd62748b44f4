import Foundation
import XCTest
import Pivot
import PivotKernels

/// Mamba's recurrent state through the toolkit's paths that share, cut or batch a cache: restoring kept
/// lengths, a continuous batch, drafting (which must replay on rejection) and a scorer's shared prefix.
final class StateSpaceTests: XCTestCase {
    static func model(_ name: String = "mamba") throws -> LoadedModel {
        try LoadedModel.load(path: FamilyTests.root.appendingPathComponent(name).path)
    }

    static func row(_ m: Matrix, _ r: Int = 0) -> [Float] { Array(UnsafeBufferPointer(start: m.row(r), count: m.columns)) }

    func testCacheReturnsToTheLengthsItKept() throws {
        let model = try Self.model()
        XCTAssertThrowsError(try model.config.requireLlamaBlock(for: "training")) { XCTAssertTrue("\($0)".contains("state-space mixer")) }
        let state = ForwardState(config: model.config, maxTokens: 16, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
        let cache = model.makeCache(capacity: 64, maxBatch: 16)
        XCTAssertNotNil(cache.recurrentState)
        XCTAssertEqual(cache.bytesPerToken, 0, "the state does not grow")
        let prompt = Array(40..<52)
        model.transformer.forward(prompt, cache: cache, state: state)
        var first: [[Float]] = []
        for t in [7, 8, 9, 10] { first.append(Self.row(model.transformer.forward(token: t, cache: cache, state: state))) }
        // Kept: the prompt's end, and the first one-token pass after it; not the run of decode passes after.
        XCTAssertEqual(cache.restorableLength(atMost: 16), 16)
        XCTAssertEqual(cache.restorableLength(atMost: 15), 13)
        XCTAssertEqual(cache.restorableLength(atMost: 12), 12)
        XCTAssertEqual(cache.restorableLength(atMost: 11), 0)
        cache.truncate(to: 12)
        for (i, t) in [7, 8, 9, 10].enumerated() {
            XCTAssertEqual(Self.row(model.transformer.forward(token: t, cache: cache, state: state)), first[i], "step \(i) after returning to the prompt's end")
        }
        // Copies past a truncation belong to forgotten tokens: after feeding others, 13 is a new state.
        cache.truncate(to: 12)
        model.transformer.forward([1, 2], cache: cache, state: state)
        XCTAssertEqual(cache.restorableLength(atMost: 13), 12)
        // The length a truncation returned to stays however many passes follow (pp runs after a bench's depth).
        cache.truncate(to: 12)
        for _ in 0..<12 { model.transformer.forward([5, 6, 7], cache: cache, state: state) }
        XCTAssertEqual(cache.restorableLength(atMost: 12), 12)
        cache.truncate(to: 12)
        XCTAssertEqual(Self.row(model.transformer.forward(token: 7, cache: cache, state: state)), first[0])
        cache.truncate(to: 0)
        XCTAssertEqual(cache.length, 0)
        let again = ForwardState(config: model.config, maxTokens: 16, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
        let fresh = model.makeCache(capacity: 64, maxBatch: 16)
        XCTAssertEqual(Self.row(model.transformer.forward(prompt, cache: cache, state: state)),
                       Self.row(model.transformer.forward(prompt, cache: fresh, state: again)), "a reset state is a fresh one")
    }

    /// Two sequences in one pass (the server's continuous batch), each continuing its own state, give
    /// each one's logits alone.
    func testBatchedSequencesMatchEachAlone() throws {
        let model = try Self.model("mamba-untied")
        let execution = Execution(pool: Shared.pool, precision: .float)
        let a = Array(10..<19), b = Array(100..<105)
        var alone: [[Float]] = []
        for tokens in [a, b] {
            let state = ForwardState(config: model.config, maxTokens: 16, allLogits: true, execution: execution)
            let cache = model.makeCache(capacity: 64, maxBatch: 16)
            model.transformer.forward(Array(tokens.prefix(3)), cache: cache, state: state)
            let m = model.transformer.forward(Array(tokens.dropFirst(3)), cache: cache, state: state, logits: .all)
            alone.append((0..<m.rows).flatMap { Self.row(m, $0) })
        }
        let state = ForwardState(config: model.config, maxTokens: 32, logitRows: 32, execution: execution)
        let (ca, cb) = (model.makeCache(capacity: 64, maxBatch: 32), model.makeCache(capacity: 64, maxBatch: 32))
        model.transformer.forward(batch: Array(a.prefix(3)) + Array(b.prefix(3)),
                                  sequences: [SequenceSlice(cache: ca, start: 0, count: 3, logits: .last), SequenceSlice(cache: cb, start: 3, count: 3, logits: .last)],
                                  state: state)
        let restA = Array(a.dropFirst(3)), restB = Array(b.dropFirst(3))
        let m = model.transformer.forward(batch: restA + restB, sequences: [
            SequenceSlice(cache: ca, start: 0, count: restA.count, logits: .all),
            SequenceSlice(cache: cb, start: restA.count, count: restB.count, logits: .all)], state: state)
        let rows = (0..<m.rows).flatMap { Self.row(m, $0) }
        let width = model.config.vocabularySize
        XCTAssertEqual(Array(rows[..<(restA.count * width)]), alone[0])
        XCTAssertEqual(Array(rows[(restA.count * width)...]), alone[1])
    }

    /// Greedy decoding with n-gram drafts equals plain decoding: rejected drafts make the state return to
    /// the verification pass's start and replay what was kept.
    func testDraftingReplaysRejectedDrafts() throws {
        let model = try Self.model()
        let prompt = Array(repeating: [65, 66, 67, 68, 32], count: 6).flatMap { $0 }
        func run(_ drafter: Drafter?) -> ([Int], GenerationStats) {
            let generator = Generator(model: model, execution: Execution(pool: Shared.pool), contextLength: 256, drafter: drafter)
            generator.draftPolicy.fixedLength = drafter == nil ? nil : 4
            var sampler = Sampler(), stats = GenerationStats(), out: [Int] = []
            generator.generate(prompt: prompt, maxTokens: 40, sampler: &sampler, stats: &stats) { out.append($0); return true }
            return (out, stats)
        }
        let (plain, _) = run(nil)
        let (drafted, stats) = run(NGramDrafter(maxN: 3, minBigramCount: 1))
        XCTAssertEqual(drafted, plain)
        XCTAssertGreaterThan(stats.draftedTokens, stats.acceptedTokens, "some drafts were rejected, so the replay ran")
    }

    /// Choices scored after a shared context (the cache returned to it) equal each scored from scratch.
    func testScorerSharedPrefixMatchesFreshScoring() throws {
        let model = try Self.model()
        let item = EvalItem(requests: [.init("The cat sat on the", " mat."), .init("The cat sat on the", " moon, far away"), .init("The cat sat on the", "x")],
                            gold: 0, choiceLengths: [4, 14, 1])
        let execution = Execution(pool: Shared.pool, precision: .float)
        let shared = LoglikelihoodScorer(model: model, execution: execution, chunk: 4).score(item)
        for (i, request) in item.requests.enumerated() {
            let alone = LoglikelihoodScorer(model: model, execution: execution, chunk: 4)
                .score(EvalItem(requests: [request], gold: 0, choiceLengths: [1]))[0]
            XCTAssertEqual(shared[i].logLikelihood, alone.logLikelihood, accuracy: 1e-4, "choice \(i)")
            XCTAssertEqual(shared[i].isGreedy, alone.isGreedy)
        }
    }

    /// GPTQ's Hessians and the imatrix reach every mixer projection, including Δ's of rank 4 (narrower
    /// than the Hessian kernel's eight columns): the diagonals agree, every entry is filled.
    func testCalibrationStatisticsCoverEveryMixerProjection() throws {
        let model = try Self.model()
        let tokens = (0..<128).map { ($0 * 37 + 11) % 256 }
        let hessians = try HessianCollector.collect(model: model, tokens: tokens, contextLength: 64, pool: Shared.pool)
        let imatrix = try ImportanceMatrix.collect(model: model, tokens: tokens, contextLength: 64, dataset: "test",
                                                   execution: Execution(pool: Shared.pool)).values
        let roles: [ProjectionRole] = [.stateInput, .stateSelection, .stateTimeStep, .stateOutput]
        for layer in 0..<model.config.layerCount {
            for role in roles {
                let name = role.tensorName(layer: layer)
                let h = try XCTUnwrap(hessians[name], name), means = try XCTUnwrap(imatrix[name], name)
                let n = h.columns, m = h.matrix()
                XCTAssertEqual(means.count, n)
                XCTAssertEqual(h.tokens, 128)
                for i in 0..<n {
                    XCTAssertEqual(m[i * n + i] / 128, Double(means[i]), accuracy: 1e-4 * max(1, Double(means[i])), "\(name) [\(i)][\(i)]")
                    for j in 0..<n where j != i {
                        XCTAssertNotEqual(m[i * n + j], 0, "\(name) [\(i)][\(j)] never filled")
                        XCTAssertLessThanOrEqual(m[i * n + j] * m[i * n + j], m[i * n + i] * m[j * n + j] * (1 + 1e-4), "\(name): not a Gram matrix")
                    }
                }
            }
        }
        XCTAssertEqual(hessians["blk.0.ssm_dt.weight"]?.columns, 4)
    }

    /// Python's json writes `time_step_limit`'s infinity bare, which JSON does not allow: such a config loads
    /// as transformers 5's {"__float__": "Infinity"} form does; a limit that would clamp Δ is refused by name.
    func testMamba2TimeStepLimitForms() throws {
        let source = FamilyTests.root.appendingPathComponent("mamba2")
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-mamba2-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        for file in try FileManager.default.contentsOfDirectory(atPath: source.path) where file != "config.json" {
            try FileManager.default.createSymbolicLink(at: work.appendingPathComponent(file), withDestinationURL: source.appendingPathComponent(file))
        }
        let text = try String(contentsOf: source.appendingPathComponent("config.json"), encoding: .utf8)
        let object = try XCTUnwrap(text.range(of: #"\{\s*"__float__":\s*"Infinity"\s*\}"#, options: .regularExpression))
        let reference = try FamilyTests.Reference(source)
        try text.replacingCharacters(in: object, with: "Infinity").write(to: work.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        FamilyTests.check("mamba2 (bare Infinity)", FamilyTests.logits(try LoadedModel.load(path: work.path), tokens: reference.tokens), reference)
        try text.replacingCharacters(in: object, with: "5.0").write(to: work.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LoadedModel.load(path: work.path)) { XCTAssertTrue("\($0)".contains("time_step_limit"), "\($0)") }
    }

    /// A vocabulary padded past its tokenizer (Mamba-2's 272 rows for 260 tokens): the converted GGUF lists
    /// llama.cpp's `[PAD i]` tokens of type UNUSED, which decode to nothing.
    func testPaddedVocabularyConvertsWithUnusedTokens() throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-pad-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        try HuggingFaceConverter.convert(folder: FamilyTests.root.appendingPathComponent("mamba2").path, to: output, floatType: .f32)
        let gguf = try GGUFFile(path: output)
        let tokens = try XCTUnwrap(gguf.metadata["tokenizer.ggml.tokens"]?.array).map { $0.string ?? "" }
        let types = try XCTUnwrap(gguf.metadata["tokenizer.ggml.token_type"]?.array).map { $0.int ?? 0 }
        XCTAssertEqual(tokens.count, 272)
        XCTAssertEqual(tokens[260], "[PAD260]")
        XCTAssertEqual(Array(types[260...]), Array(repeating: 5, count: 12))
        let model = try LoadedModel.load(path: output)
        XCTAssertEqual(model.tokenizer.decode([72, 271, 105]), "Hi")
    }
}

