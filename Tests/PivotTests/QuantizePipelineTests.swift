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
            XCTAssertEqual(byName["blk.7.ffn_down.weight"], name == "F16" ? .f16 : .block(fileType.format!))
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
        guard let text = try? String(contentsOfFile: Shared.wikitextPath, encoding: .utf8) else { throw XCTSkip("wikitext not found") }
        let tokens = Array(model.tokenizer.encode(String(text.prefix(8000)), addBOS: false).prefix(512))
        let q8 = try PerplexityEvaluator(model: model, contextLength: 256, pool: Shared.pool, precision: .float).evaluate(tokens: tokens)
        let base = try PerplexityEvaluator(model: try Shared.model(), contextLength: 256, pool: Shared.pool, precision: .float).evaluate(tokens: tokens)
        XCTAssertEqual(q8.perplexity, base.perplexity, accuracy: base.perplexity * 0.01, "Q8_0 of Q4_1 weights is nearly lossless")
    }
}
