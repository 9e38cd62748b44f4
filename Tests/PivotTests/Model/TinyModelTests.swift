import Foundation
import XCTest
import Pivot
import PivotKernels

/// A tiny random Qwen2-shaped model (attention bias, GQA, rotate-half RoPE, untied head) written as a
/// HuggingFace folder, run by the engine and by the plain reference forward pass of `TinyModel`.
final class TinyModelTests: XCTestCase {
    func testQwen2ShapedModelMatchesPlainReference() throws {
        var tiny = TinyModel()
        tiny.qkvBias = true
        tiny.randomize()
        var config = tiny.baseConfig
        config["model_type"] = "qwen2"
        config["rope_theta"] = 10000.0
        let model = try tiny.load(config: config)
        XCTAssertTrue(model.config.attentionBias)
        XCTAssertFalse(model.config.outputBias, "Qwen2 has no o_proj bias")
        XCTAssertFalse(model.config.tiedEmbeddings)
        XCTAssertEqual(model.tokenizer.kind, .byteLevel(.llama3(maxDigits: 1)))
        XCTAssertEqual(model.tokenizer.encode("hi<|im_end|>"), [104, 105, 299])
        try tiny.assertEngineMatchesReference(config: config)
    }
}
