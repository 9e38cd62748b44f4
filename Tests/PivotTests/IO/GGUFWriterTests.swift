import Foundation
import XCTest
import Pivot
import PivotKernels

/// The writer against the reader: the real model rewritten key by key and tensor by tensor.
final class GGUFWriterTests: XCTestCase {
    func testRewrittenModelIsIdentical() throws {
        let path = try Shared.requireModelPath()
        let original = try GGUFFile(path: path)
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-rewrite-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let tensors = original.tensorOrder.map { name -> GGUFWriter.Tensor in
            let t = original.tensors[name]!
            return GGUFWriter.Tensor(name: name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
        }
        try GGUFWriter.write(metadata: original.metadataEntries, tensors: tensors, to: copy)
        let reread = try GGUFFile(path: copy)
        XCTAssertEqual(reread.metadataEntries.count, original.metadataEntries.count)
        for (a, b) in zip(original.metadataEntries, reread.metadataEntries) {
            XCTAssertEqual(a.key, b.key)
            XCTAssertEqual(a.type, b.type, a.key)
            XCTAssertEqual(a.itemType, b.itemType, a.key)
            XCTAssertEqual("\(a.value)", "\(b.value)", a.key)
        }
        XCTAssertEqual(reread.tensorOrder, original.tensorOrder)
        for name in original.tensorOrder {
            let a = original.tensors[name]!, b = reread.tensors[name]!
            XCTAssertEqual(a.shape, b.shape)
            XCTAssertEqual(a.type, b.type)
            XCTAssertEqual(memcmp(a.data, b.data, a.byteCount), 0, name)
            XCTAssertEqual(Int(bitPattern: b.data) % 32, Int(bitPattern: reread.tensors[reread.tensorOrder[0]]!.data) % 32, "aligned")
        }
        let model = try LoadedModel.load(path: copy)
        let ids = model.tokenizer.encode("The capital of France is")
        func logits(_ m: LoadedModel) -> [Float] {
            let state = ForwardState(config: m.config, maxTokens: 16, allLogits: false, execution: Execution(pool: Shared.pool))
            let row = m.transformer.forward(ids, cache: m.makeCache(capacity: 32, maxBatch: 16), state: state).row(0)
            return Array(UnsafeBufferPointer(start: row, count: m.config.vocabularySize))
        }
        XCTAssertEqual(logits(model), logits(try Shared.model()))
        // A tensor whose bytes do not match its type and shape is refused, and nothing is left behind.
        let bad = GGUFWriter.Tensor(name: "x", ggmlType: BlockFormat.q4_K.ggmlType, shape: [2, 576], bytes: tensors[0].bytes)
        XCTAssertThrowsError(try GGUFWriter.write(metadata: [], tensors: [bad], to: copy + ".bad"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: copy + ".bad"))
    }
}
