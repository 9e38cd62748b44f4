import Foundation
import XCTest
import Pivot
import PivotKernels

/// `pivot quantize` on the real model: llama.cpp's per-tensor rules, a file Pivot reloads, quality kept.
final class QuantizePipelineTests: XCTestCase {
    func testQuantizedFilesFollowLlamaCppRulesAndRun() throws {
        let path = try Shared.requireModelPath()
        let source = try GGUFFile(path: path)
        for name in ["Q8_0", "Q4_0", "F16"] {
            let fileType = try XCTUnwrap(QuantizePipeline.FileType.named(name))
            let plan = try QuantizePipeline.plan(source, fileType: fileType)
            let byName = Dictionary(uniqueKeysWithValues: plan.map { ($0.name, $0.to) })
            XCTAssertEqual(byName["output_norm.weight"], .f32)
            XCTAssertEqual(byName["blk.0.attn_norm.weight"], .f32)
            // The tied embedding is the output head: Q6_K, which falls back to Q8_0 on 576-wide rows.
            XCTAssertEqual(byName["token_embd.weight"], name == "F16" ? .f16 : .block(.q8_0))
            XCTAssertEqual(byName["blk.7.ffn_down.weight"], name == "F16" ? .f16 : .block(fileType.base!))
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-q8-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        var reported = 0
        try QuantizePipeline.run(input: path, output: output, fileType: QuantizePipeline.FileType.named("Q8_0")!) { done, total, _ in
            XCTAssertEqual(total, source.tensorOrder.count)
            reported = done
        }
        XCTAssertEqual(reported, source.tensorOrder.count)
        let written = try GGUFFile(path: output)
        XCTAssertEqual(written.metadata["general.file_type"]?.int, 7)
        XCTAssertEqual(written.metadata["general.quantization_version"]?.int, 2)
        XCTAssertEqual(written.metadataEntries.first { $0.key == "general.file_type" }?.type, 4, "uint32, as llama.cpp reads it")
        let model = try LoadedModel.load(path: output)
        let text = try Shared.wikitext()
        let tokens = Array(model.tokenizer.encode(String(text.prefix(8000)), addBOS: false).prefix(512))
        let q8 = try PerplexityEvaluator(model: model, contextLength: 256, execution: Execution(pool: Shared.pool, precision: .float)).evaluate(tokens: tokens)
        let base = try PerplexityEvaluator(model: try Shared.model(), contextLength: 256, execution: Execution(pool: Shared.pool, precision: .float)).evaluate(tokens: tokens)
        XCTAssertEqual(q8.perplexity, base.perplexity, accuracy: base.perplexity * 0.01, "Q8_0 of Q4_1 weights is nearly lossless")

        // A K-quant mix written by Pivot loads back through Pivot's own loader and kernels.
        let kOutput = output + ".q4km.gguf"
        defer { try? FileManager.default.removeItem(atPath: kOutput) }
        try QuantizePipeline.run(input: path, output: kOutput, fileType: XCTUnwrap(QuantizeFileType.named("Q4_K_M")), pool: Shared.pool)
        let q4km = try LoadedModel.load(path: kOutput)
        XCTAssertEqual(Set(q4km.transformer.layers.map { $0.down!.formatName }), ["Q4_K", "Q6_K"])
        let k = try PerplexityEvaluator(model: q4km, contextLength: 256, execution: Execution(pool: Shared.pool)).evaluate(tokens: tokens)
        XCTAssertGreaterThan(k.perplexity, base.perplexity, "requantizing loses something")
        XCTAssertLessThan(k.perplexity, base.perplexity * 1.1, "Q4_K_M stays within 10% of its base here (measured +6% on 40 windows)")
    }

    /// llama.cpp's mixes on this 576-wide model, tensor counts as llama-quantize writes them.
    func testKMixesMatchLlamaCppTensorForTensor() throws {
        let source = try GGUFFile(path: try Shared.requireModelPath())
        func counts(_ type: String, importance: Bool = false) throws -> [String: Int] {
            let plan = try QuantizePipeline.plan(source, fileType: XCTUnwrap(QuantizeFileType.named(type)), hasImportance: importance)
            return plan.filter { $0.to.isBlock }.reduce(into: [:]) { $0["\($1.to)", default: 0] += 1 }
        }
        XCTAssertEqual(try counts("Q3_K_M"), ["Q4_0": 120, "Q5_0": 58, "Q4_K": 29, "Q5_1": 2, "Q5_K": 1, "Q8_0": 1])
        XCTAssertEqual(try counts("Q4_K_M"), ["Q5_0": 166, "Q4_K": 16, "Q6_K": 14, "Q8_0": 15])
        XCTAssertEqual(try counts("Q5_K_M"), ["Q5_1": 166, "Q5_K": 16, "Q6_K": 14, "Q8_0": 15])
        XCTAssertEqual(try counts("Q2_K"), ["Q4_0": 180, "Q3_K": 30, "Q8_0": 1])
        XCTAssertEqual(try counts("Q6_K"), ["Q8_0": 181, "Q6_K": 30])
        XCTAssertEqual(try counts("Q4_0"), ["Q4_0": 210, "Q8_0": 1])
        XCTAssertEqual(try counts("Q4_0", importance: true), ["Q4_0": 207, "Q4_1": 3, "Q8_0": 1], "with an imatrix the first eighth of ffn_down gets Q4_1")
        let q4km = Dictionary(uniqueKeysWithValues: try QuantizePipeline.plan(source, fileType: XCTUnwrap(QuantizeFileType.named("Q4_K_M"))).map { ($0.name, "\($0.to)") })
        // Layers 0-2, 26-29 and every third from 5 get Q6_K (Q8_0 on 576-wide attn_v).
        XCTAssertEqual((0..<30).filter { q4km["blk.\($0).ffn_down.weight"] == "Q6_K" }, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29])
        XCTAssertEqual((0..<30).filter { q4km["blk.\($0).attn_v.weight"] == "Q8_0" }, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29])
        XCTAssertEqual(QuantizeFileType.named("q4_k")?.name, "Q4_K_M", "llama-quantize's alias")
    }

    /// Pivot's quantizers against llama-quantize's bytes for real tensors, with and without an
    /// importance matrix (hashes from scripts/make_quantize_fixture.py).
    func testQuantizersAreByteIdenticalToLlamaQuantize() throws {
        let source = try GGUFFile(path: try Shared.requireModelPath())
        struct Case: Decodable { let tensor: String; let type: String; let importance: Bool; let bytes: Int; let fnv1a64: String }
        struct Fixture: Decodable { let cases: [Case] }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/llama-quantize.json")
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        XCTAssertEqual(fixture.cases.count, 18)
        for c in fixture.cases {
            let t = try XCTUnwrap(source.tensors[c.tensor])
            let format = try XCTUnwrap(BlockFormat.allCases.first { $0.name == c.type })
            let importance = c.importance ? (0..<t.shape[1]).map { 0.25 + Float(($0 * 7919) % 97) / 24 } : nil
            let q = t.quantized(to: format, importance: importance, pool: Shared.pool)
            XCTAssertEqual(q.byteCount, c.bytes)
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for i in 0..<q.byteCount { hash = (hash ^ UInt64(q.data.load(fromByteOffset: i, as: UInt8.self))) &* 0x100_0000_01b3 }
            XCTAssertEqual(String(format: "%016llx", hash), c.fnv1a64, "\(c.tensor) \(c.type)\(c.importance ? " with importance" : "")")
        }
    }

    /// An importance matrix collected from text: per-column sums of x² equal to a direct sum over the
    /// rows the projection saw, a GGUF round trip in llama-imatrix's form, and a mismatched one refused.
    func testImportanceMatrixCollectsWritesAndReads() throws {
        let model = try Shared.model()
        let text = try Shared.wikitext()
        let tokens = Array(model.tokenizer.encode(String(text.prefix(4000)), addBOS: false).prefix(128))
        let matrix = try ImportanceMatrix.collect(model: model, tokens: tokens, contextLength: 64, dataset: "wiki", execution: Execution(pool: Shared.pool))
        XCTAssertEqual(matrix.entries.count, 7 * model.config.layerCount)
        XCTAssertEqual(matrix.chunkCount, 2)
        let q = try XCTUnwrap(matrix.entries["blk.0.attn_q.weight"]), k = try XCTUnwrap(matrix.entries["blk.0.attn_k.weight"])
        XCTAssertEqual(q.count, 128, "every token of both chunks")
        XCTAssertEqual(q.sums, k.sums, "q and k see the same normed input")
        XCTAssertEqual(matrix.entries["blk.3.ffn_down.weight"]?.sums.count, model.config.intermediateSize)
        XCTAssertTrue(q.sums.allSatisfy { $0 >= 0 } && q.sums.contains { $0 > 0 })
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-imatrix-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try matrix.write(to: path)
        let back = try ImportanceMatrix.load(path: path)
        XCTAssertEqual(back.entries["blk.0.attn_q.weight"]?.sums, q.sums)
        XCTAssertEqual(back.entries["blk.0.attn_q.weight"]?.count, 128)
        XCTAssertEqual(back.chunkSize, 64)
        XCTAssertEqual(back.datasets, ["wiki"])
        var wrong = back
        wrong.entries["blk.0.attn_q.weight"]!.sums.removeLast()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-imq-\(getpid()).gguf").path
        XCTAssertThrowsError(try QuantizePipeline.run(input: try Shared.requireModelPath(), output: output,
                                                      fileType: XCTUnwrap(QuantizeFileType.named("Q4_K_M")), importance: wrong)) {
            XCTAssertTrue("\($0)".contains("blk.0.attn_q.weight"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }
}
