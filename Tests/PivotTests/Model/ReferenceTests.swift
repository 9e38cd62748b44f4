import Foundation
import XCTest
import Pivot
import PivotKernels

/// The real model against the golden outputs of the reference PyTorch implementation.
final class ReferenceTests: XCTestCase {
    func testTokenizerMatchesReferenceIDs() throws {
        let model = try Shared.model()
        let reference = try Shared.reference()
        for prompt in reference.prompts {
            XCTAssertEqual(model.tokenizer.encode(prompt.text), prompt.ids, "ids of \(prompt.text.debugDescription)")
            XCTAssertEqual(model.tokenizer.decode(prompt.ids), prompt.text)
        }
    }

    func testChatTemplateMatchesReference() throws {
        let model = try Shared.model()
        let reference = try Shared.reference()
        let text = model.chatTemplate.render([ChatMessage(role: "user", content: "What is the capital of France?")])
        XCTAssertEqual(text, reference.chat_template_text)
        XCTAssertEqual(model.tokenizer.encode(text), reference.chat_template_ids)
    }

    func testLastLogitsMatchReference() throws {
        let model = try Shared.model()
        let reference = try Shared.reference()
        let state = ForwardState(config: model.config, maxTokens: 64, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
        var worst: Float = 0
        for prompt in reference.prompts {
            let cache = model.makeCache(capacity: 128, maxBatch: 64)
            let logits = model.transformer.forward(prompt.ids, cache: cache, state: state, logits: .last)
            let row = Array(UnsafeBufferPointer(start: logits.row(0), count: model.config.vocabularySize))
            let top = row.indices.sorted { row[$0] > row[$1] }.prefix(10)
            XCTAssertEqual(Array(top), prompt.last_logits_top10.ids, "top-10 ids of \(prompt.text.debugDescription)")
            for (id, expected) in zip(prompt.last_logits_top10.ids, prompt.last_logits_top10.values) {
                worst = max(worst, abs(row[id] - expected))
                XCTAssertEqual(row[id], expected, accuracy: 1e-2, "logit \(id) of \(prompt.text.debugDescription)")
            }
            for (i, expected) in prompt.last_logits_first16.enumerated() {
                XCTAssertEqual(row[i], expected, accuracy: 1e-2, "logit \(i) of \(prompt.text.debugDescription)")
            }
        }
        print("largest top-10 logit difference from the reference: \(worst)")
    }

    func testGreedyContinuationsMatchReference() throws {
        let model = try Shared.model()
        let reference = try Shared.reference()
        let generator = Generator(model: model, execution: Execution(pool: Shared.pool, precision: .float), contextLength: 256, maxBatch: 64)
        for prompt in reference.prompts {
            generator.reset()
            var sampler = Sampler(temperature: 0)
            var stats = GenerationStats()
            var produced: [Int] = []
            generator.generate(prompt: prompt.ids, maxTokens: 32, sampler: &sampler, stats: &stats) { produced.append($0); return true }
            XCTAssertEqual(produced, prompt.greedy_32, "greedy continuation of \(prompt.text.debugDescription)")
        }
    }
}
