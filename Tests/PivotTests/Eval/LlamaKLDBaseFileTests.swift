import Foundation
import XCTest
import Pivot
import PivotKernels

/// A llama.cpp `--kl-divergence-base` file written here in llama-perplexity's layout from a model's own
/// logits: read back against the same model it gives no divergence and the same top-1; against another
/// model, the divergence an exact computation gives (up to the 16-bit log-probabilities and the −16 floor).
final class LlamaKLDBaseFileTests: XCTestCase {
    /// llama-perplexity's records for `logits` (rows of the second half of each window).
    static func write(model: LoadedModel, tokens: [Int], window: Int, chunks: Int, to path: String) throws {
        let vocabulary = model.config.vocabularySize, record = 2 * ((vocabulary + 1) / 2) + 4
        var data = Data("_logits_".utf8)
        func i32(_ v: Int) { withUnsafeBytes(of: Int32(v).littleEndian) { data.append(contentsOf: $0) } }
        i32(window); i32(vocabulary); i32(chunks)
        for t in tokens.prefix(window * chunks) { i32(t) }
        let execution = Execution(pool: Shared.pool, precision: .float)
        let state = ForwardState(config: model.config, maxTokens: window, allLogits: true, execution: execution)
        for c in 0..<chunks {
            let cache = model.makeCache(capacity: window, maxBatch: window)
            let m = model.transformer.forward(Array(tokens[(c * window)..<((c + 1) * window)]), cache: cache, state: state, logits: .all)
            for position in (window / 2)..<(window - 1) {
                let row = Array(UnsafeBufferPointer(start: m.row(position), count: vocabulary))
                let top = row.max()!, low = max(row.min()!, top - 16)
                let lse = top + Float(log(row.reduce(0.0) { $0 + exp(Double($1 - top)) }))
                let scale = (top - low) / 65535
                var words = [UInt16](repeating: 0, count: record)
                withUnsafeBytes(of: scale.bitPattern.littleEndian) { words[0] = $0.load(as: UInt16.self); words[1] = $0.load(fromByteOffset: 2, as: UInt16.self) }
                withUnsafeBytes(of: (low - lse).bitPattern.littleEndian) { words[2] = $0.load(as: UInt16.self); words[3] = $0.load(fromByteOffset: 2, as: UInt16.self) }
                for j in 0..<vocabulary where row[j] > low { words[4 + j] = UInt16((( row[j] - low) / scale).rounded()) }
                words.withUnsafeBytes { data.append(contentsOf: $0) }
            }
        }
        try data.write(to: URL(fileURLWithPath: path))
    }

    func testReadsLlamaCppLayout() throws {
        let root = FamilyTests.root
        let model = try LoadedModel.load(path: root.appendingPathComponent("llama").path)
        let other = try LoadedModel.load(path: root.appendingPathComponent("qwen2").path)
        var rng = SplitMix64(seed: 3)
        let window = 32, chunks = 3
        let tokens = (0..<(window * chunks)).map { _ in Int(rng.next() % 256) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-llama-kld-\(getpid()).kld").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Self.write(model: model, tokens: tokens, window: window, chunks: chunks, to: path)
        XCTAssertEqual(try LlamaKLDBaseFile.window(of: path), window)
        let execution = Execution(pool: Shared.pool, precision: .float)
        let same = try LlamaKLDBaseFile.evaluate(path: path, test: ScoringSide(model: model, execution: execution, window: window), pool: Shared.pool)
        XCTAssertEqual(same.tokens, chunks * (window - 1 - window / 2))
        XCTAssertLessThan(same.meanKLD, 5e-6, "only the 16-bit log-probabilities differ")
        XCTAssertEqual(same.sameTop1, 1)
        let apart = try LlamaKLDBaseFile.evaluate(path: path, test: ScoringSide(model: other, execution: execution, window: window), pool: Shared.pool)
        XCTAssertGreaterThan(apart.meanKLD, 0.05, "two different random models")
        // A truncated file is one clear error.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try LlamaKLDBaseFile.evaluate(path: path, test: ScoringSide(model: model, execution: execution, window: window), pool: Shared.pool))
    }

    /// The eval harness's speed probe fits a model whose context (256) is shorter than its default 256 + 64.
    func testSpeedProbeFitsShortContexts() throws {
        let model = try LoadedModel.load(path: FamilyTests.root.appendingPathComponent("gemma3").path)
        let e = Efficiency.measure(model: model, execution: Execution(pool: Shared.pool, precision: .float))
        XCTAssertGreaterThan(e.prefillTokensPerSecond, 0)
        XCTAssertGreaterThan(e.decodeTokensPerSecond, 0)
    }
}
