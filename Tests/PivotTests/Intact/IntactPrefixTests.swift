import Foundation
import XCTest
import Pivot
import PivotKernels

/// IntactKV prefixes stored in the model file: the GGUF form, the runtime seam over every cache type, and
/// `--prefix`'s unscored tokens. All on the real model; the "full" model is the model itself (float activations).
final class IntactPrefixTests: XCTestCase {
    static let text = " The capital of France is Paris, and the capital of Italy is Rome. Both cities"

    /// The default model's file with a chat-preamble prefix computed from itself, written once per process.
    nonisolated(unsafe) private static var written: (path: String, prefix: IntactPrefix)?

    /// The shared file is 99 MB: removed once the class's tests are done, not left in the temporary folder.
    override class func tearDown() {
        Shared.lock.lock(); defer { Shared.lock.unlock() }
        if let written { try? FileManager.default.removeItem(atPath: written.path) }
        written = nil
        super.tearDown()
    }

    private func intactFile() throws -> (path: String, prefix: IntactPrefix) {
        Shared.lock.lock(); defer { Shared.lock.unlock() }
        if let written = Self.written { return written }
        let source = try Shared.requireModelPath()
        let model = try LoadedModel.load(path: source)
        let (text, tokens) = try PrefixText.chatPreamble.tokens(for: model)
        let prefix = try IntactPrefix.compute(full: model, tokens: tokens, text: text, pool: Shared.pool)
        let path = NSTemporaryDirectory() + "pivot-intact-\(getpid()).gguf"
        try prefix.write(model: try GGUFFile(path: source), to: path)
        Self.written = (path, prefix)
        return (path, prefix)
    }

    private func logits(_ model: LoadedModel, cache: KVCache, passes: [[Int]], precision: ActivationPrecision = .float) -> [[Float]] {
        let state = ForwardState(config: model.config, maxTokens: 64, allLogits: true, execution: Execution(pool: Shared.pool, precision: precision))
        var rows: [[Float]] = []
        for pass in passes {
            let out = model.transformer.forward(pass, cache: cache, state: state, logits: .all)
            rows = (0..<pass.count).map { Array(UnsafeBufferPointer(start: out.row($0), count: model.config.vocabularySize)) }
        }
        return rows   // the last pass's rows
    }

    private func largestDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).map { zip($0, $1).map { abs($0 - $1) }.max()! }.max()!
    }

    func testPrefixRoundTripsThroughGGUFBitExactly() throws {
        let (path, prefix) = try intactFile()
        let file = try GGUFFile(path: path), original = try GGUFFile(path: try Shared.requireModelPath())
        XCTAssertEqual(try IntactPrefix.read(from: file), prefix)
        XCTAssertEqual(prefix.tokens.first, 1, "SmolLM2's chat preamble starts with <|im_start|>")
        XCTAssertEqual(prefix.source, ModelLocator.defaultModelName)
        XCTAssertFalse(prefix.calibrated)
        XCTAssertEqual(file.metadata[IntactPrefix.Key.pivotOnly]?.string?.contains("llama.cpp") ?? false, true)
        XCTAssertEqual(file.tensorOrder.count, original.tensorOrder.count + 2 * 30)
        for name in original.tensorOrder {
            let a = original.tensors[name]!, b = file.tensors[name]!
            XCTAssertEqual(a.shape, b.shape)
            XCTAssertEqual(memcmp(a.data, b.data, a.byteCount), 0, name)
        }
        XCTAssertEqual(file.tensors[IntactPrefix.tensorName(layer: 29, value: true)]?.shape, [prefix.tokens.count, 3, 64])
        // The calibration seam: change the arrays, mark calibrated, rewrite (over a file that has a prefix already).
        var tuned = prefix
        tuned.keys[3][5] += 0.25
        tuned.calibrated = true
        let rewritten = path + ".tuned.gguf"
        defer { try? FileManager.default.removeItem(atPath: rewritten) }
        try tuned.write(model: file, to: rewritten)
        let reread = try GGUFFile(path: rewritten)
        XCTAssertEqual(try IntactPrefix.read(from: reread), tuned)
        XCTAssertEqual(reread.tensorOrder.count, file.tensorOrder.count, "the old prefix is replaced, not added to")
    }

    /// The prefix computed from the same model and precision: logits after it are bit-identical with and
    /// without the stored keys/values (positions, RoPE and layout line up), and the stored ones were used.
    func testSameModelPrefixGivesIdenticalLogitsOnF32Cache() throws {
        let (path, prefix) = try intactFile()
        let intact = try LoadedModel.load(path: path), plain = try LoadedModel.load(path: try Shared.requireModelPath())
        XCTAssertNil(plain.intactPrefix)
        XCTAssertEqual(intact.intactPrefix, prefix)
        let rest = intact.tokenizer.encode(Self.text, addBOS: false)
        let cache = intact.makeCache(capacity: 128, maxBatch: 64)
        let withStored = logits(intact, cache: cache, passes: [prefix.tokens, rest])
        XCTAssertEqual((cache as? PivotedKVCache)?.supplied, prefix.tokens.count)
        let own = logits(plain, cache: plain.makeCache(capacity: 128, maxBatch: 64), passes: [prefix.tokens, rest])
        XCTAssertLessThanOrEqual(largestDifference(withStored, own), 1e-6)
        // A sequence that leaves the prefix takes only the positions before it leaves.
        let other = intact.makeCache(capacity: 128, maxBatch: 64) as! PivotedKVCache
        _ = logits(intact, cache: other, passes: [Array(prefix.tokens[0..<3]) + rest])
        XCTAssertEqual(other.supplied, 3)
        other.truncate(to: 2)
        XCTAssertEqual(other.supplied, 2)
    }

    /// F16 and KIVI-2 caches hold the stored pivots exactly (F32), even with int8 activations, whose own
    /// keys/values differ; a sequence without the prefix uses its own.
    func testCompressedCachesHoldThePivotsExactly() throws {
        let (path, prefix) = try intactFile()
        let model = try LoadedModel.load(path: path)
        let tokens = prefix.tokens + model.tokenizer.encode(Self.text, addBOS: false)
        for spec in [KVCacheSpec.f16, .kivi(KIVISettings(bits: 2, group: 8, window: 4))] {
            model.kvCache = try spec.prepare(for: model, pool: Shared.pool)
            let made = model.makeCache(capacity: 128, maxBatch: 64)
            _ = logits(model, cache: made, passes: [tokens], precision: .int8)
            let cache = try XCTUnwrap((made as? PivotedKVCache)?.inner as? QuantizedKVCache, spec.label)
            for layer in [0, 14, 29] {
                for kvHead in 0..<3 {
                    for position in 0..<prefix.tokens.count {
                        let at = prefix.offset(position: position, kvHead: kvHead), stored = cache.pivot(layer: layer, kvHead: kvHead, position: position)
                        XCTAssertEqual(stored.key, Array(prefix.keys[layer][at..<(at + 64)]), "\(spec.label) layer \(layer) position \(position)")
                        XCTAssertEqual(stored.value, Array(prefix.values[layer][at..<(at + 64)]), "\(spec.label) layer \(layer) position \(position)")
                    }
                }
            }
        }
        model.kvCache = try KVCacheSpec.f16.prepare(for: model, pool: Shared.pool)
        let stranger = model.makeCache(capacity: 128, maxBatch: 64) as! PivotedKVCache
        _ = logits(model, cache: stranger, passes: [Array(tokens.dropFirst())], precision: .int8)
        XCTAssertEqual(stranger.supplied, 0)
        XCTAssertNotEqual((stranger.inner as! QuantizedKVCache).pivot(layer: 0, kvHead: 0, position: 0).key,
                          Array(prefix.keys[0][0..<64]))
    }

    /// CSKV: the pivots are read exactly, never from latents: with a window of 2, a pass right after the
    /// prefix gives the F32 cache's logits; without the stored pivots it does not.
    func testLowRankCacheReadsThePivotsExactly() throws {
        let (path, prefix) = try intactFile()
        let model = try LoadedModel.load(path: path)
        let text = String(repeating: "Calibration text for the factors: a sentence or two of ordinary English prose. ", count: 20)
        let factors = try LowRankKVFactors.calibrate(model: model, tokens: model.tokenizer.encode(text, addBOS: false), chunkLength: 128,
                                                     chunks: 2, pool: Shared.pool)
        let plan = try LowRankPlan(factors: factors, fraction: 0.25, latentBits: 16, rope: RotaryGeometry(model.config))
        let rest = Array(model.tokenizer.encode(Self.text, addBOS: false).prefix(2))
        let exact = logits(model, cache: model.makeCache(capacity: 64, maxBatch: 32), passes: [prefix.tokens, rest])
        let spec = KVCacheSpec.cskv(CSKVSettings(window: 2, rank: 0.25))
        let shape = AttentionShape(model.config)
        let pivoted = PreparedKVCache(spec: spec, pivotSource: StoredPivots(prefix), lowRankPlan: plan).makeCache(shape: shape, capacity: 64, maxBatch: 32)
        let plain = PreparedKVCache(spec: spec, lowRankPlan: plan).makeCache(shape: shape, capacity: 64, maxBatch: 32)
        let withPivots = logits(model, cache: pivoted, passes: [prefix.tokens, rest])
        let withoutPivots = logits(model, cache: plain, passes: [prefix.tokens, rest])
        XCTAssertLessThan(largestDifference(withPivots, exact), 1e-3)
        XCTAssertGreaterThan(largestDifference(withoutPivots, exact), 1e-2)
        // Decode (one query: the tiled path) after the prefix, too.
        let step = logits(model, cache: pivoted, passes: [[rest[0]]])
        XCTAssertTrue(step[0].allSatisfy(\.isFinite))
    }

    /// `--prefix` runs before every window and is not scored: same windows, same scored count, other NLL.
    func testPrefixTokensAreNotScored() throws {
        let model = try Shared.model()
        let tokens = model.tokenizer.encode(String(repeating: "A short text that repeats so that it fills two windows of sixty-four tokens. ", count: 12), addBOS: false)
        let execution = Execution(pool: Shared.pool, precision: .int8)
        let plain = try PerplexityEvaluator(model: model, contextLength: 64, execution: execution).evaluate(tokens: tokens, windows: 2)
        let (_, prefix) = try PrefixText.chatPreamble.tokens(for: model)
        let prefixed = try PerplexityEvaluator(model: model, contextLength: 64, execution: execution, prefix: prefix).evaluate(tokens: tokens, windows: 2)
        XCTAssertEqual(prefixed.windows, plain.windows)
        XCTAssertEqual(prefixed.scoredTokens, plain.scoredTokens)
        XCTAssertEqual(prefixed.scoredTokens, 2 * 63)
        XCTAssertNotEqual(prefixed.meanNLL, plain.meanNLL)
        let scorer = LoglikelihoodScorer(model: model, execution: execution, prefix: prefix)
        let request = EvalItem.Request("The sky is", " blue")
        let bare = LoglikelihoodScorer(model: model, execution: execution).encode(request)
        let encoded = scorer.encode(request)
        XCTAssertEqual(encoded.tokens, prefix + bare.tokens)
        XCTAssertEqual(encoded.continuationStart, prefix.count + bare.continuationStart)
    }

    /// The chat preamble's tokens begin every conversation's tokens, so chat and the server use the stored prefix.
    func testChatPreambleBeginsEveryConversation() throws {
        let model = try Shared.model()
        let (_, preamble) = try PrefixText.chatPreamble.tokens(for: model)
        let conversation = model.tokenizer.encode(model.chatTemplate.render([ChatMessage(role: "user", content: "Hello there!")]))
        XCTAssertEqual(Array(conversation.prefix(preamble.count)), preamble)
        XCTAssertEqual(try PrefixText.start.tokens(for: model).tokens, [conversation[0]])
    }

    /// One clear error for a file whose prefix has the wrong shape, and for a prefix of another model's shape.
    func testMalformedPrefixIsOneClearError() throws {
        let source = try Shared.requireModelPath()
        let gguf = try GGUFFile(path: source)
        let path = NSTemporaryDirectory() + "pivot-intact-bad-\(getpid()).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let metadata = gguf.metadataEntries + [GGUFMetadataEntry(IntactPrefix.Key.tokens, .array([.int(1)]), type: 9, itemType: 5)]
        var keys = [Float](repeating: 0, count: 2 * 64)
        try keys.withUnsafeMutableBytes { bytes in
            let tensors = gguf.tensorOrder.map { name -> GGUFWriter.Tensor in
                let t = gguf.tensors[name]!
                return GGUFWriter.Tensor(name: name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
            } + [GGUFWriter.Tensor(name: IntactPrefix.tensorName(layer: 0, value: false), ggmlType: 0, shape: [1, 2, 64], bytes: UnsafeRawBufferPointer(bytes)),
                 GGUFWriter.Tensor(name: IntactPrefix.tensorName(layer: 0, value: true), ggmlType: 0, shape: [1, 2, 64], bytes: UnsafeRawBufferPointer(bytes))]
            try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
        }
        XCTAssertThrowsError(try LoadedModel.load(path: path)) { error in
            XCTAssertTrue("\(error)".contains("intact prefix has 1 layers × 2 KV heads × 64"), "\(error)")
        }
        let wrong = try IntactPrefix(tokens: [1], text: "", source: "x", kvHeads: 2, headDim: 64, keys: [keys], values: [keys])
        XCTAssertThrowsError(try wrong.write(model: gguf, to: path))
        XCTAssertThrowsError(try IntactPrefix(tokens: [1, 2], text: "", source: "x", kvHeads: 2, headDim: 64, keys: [keys], values: [keys]))
    }
}
