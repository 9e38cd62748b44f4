import XCTest
import Pivot
import PivotKernels

/// The training pass against finite differences of the loss, on a tiny random Llama (GQA 4/2, two
/// layers, RoPE), batched over two sequences, for every kind of parameter: projections, both norms of
/// each block, the final norm, the embedding, tied or untied head, and a trainable intact prefix.
final class GradientTests: XCTestCase {
    let batch = [[5, 77, 201, 13, 150, 99, 42, 260, 7, 31, 18, 222], [9, 3, 180, 44, 61, 250, 12, 8, 140, 77, 5, 19]]

    func tinyFile(tied: Bool) throws -> (String, URL) {
        var tiny = TinyModel()
        tiny.tied = tied
        tiny.randomize(seed: 21)
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        let path = folder.appendingPathComponent("tiny.gguf").path
        try HuggingFaceConverter.convert(folder: folder.path, to: path, floatType: .f32)
        return (path, folder)
    }

    func testForwardLossIsTheEnginesLoss() throws {
        let (path, folder) = try tinyFile(tied: false)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try TrainableModel(gguf: try GGUFFile(path: path))
        let pool = ThreadPool(threads: 2)
        let loss = model.step(batch: batch, objective: NextTokenCrossEntropy(batch: batch), gradients: nil, pool: pool)
        XCTAssertEqual(loss.rows, 22)
        let engine = try LoadedModel.load(path: path)
        var engineLoss = 0.0
        for tokens in batch {
            let state = ForwardState(config: engine.config, maxTokens: tokens.count, allLogits: true, execution: Execution(pool: pool, precision: .float))
            let logits = engine.transformer.forward(tokens, cache: engine.makeCache(capacity: 32, maxBatch: 16), state: state, logits: .all)
            for t in 0..<(tokens.count - 1) {
                let row = Array(UnsafeBufferPointer(start: logits.row(t), count: engine.config.vocabularySize)).map(Double.init)
                let largest = row.max()!
                engineLoss += largest + log(row.reduce(0) { $0 + exp($1 - largest) }) - row[tokens[t + 1]]
            }
        }
        XCTAssertEqual(loss.loss, engineLoss / 22, accuracy: 1e-4)
        XCTAssertGreaterThan(loss.loss, 1)
    }

    func testGradientsMatchFiniteDifferencesUntied() throws { try checkGradients(tied: false, prefix: 0) }
    func testGradientsMatchFiniteDifferencesTiedWithPrefix() throws { try checkGradients(tied: true, prefix: 3) }

    /// Sequences longer than the attention's query block (64), so scores span several blocks.
    func testGradientsMatchAcrossAttentionBlocks() throws {
        var g = SplitMix64(seed: 9)
        let long = (0..<2).map { _ in (0..<150).map { _ in Int(g.next() % 300) } }
        try checkGradients(tied: false, prefix: 2, batch: long, only: ["blk.0.attn_q", "blk.0.attn_k", "blk.1.attn_v", "intact.0"])
    }

    func checkGradients(tied: Bool, prefix: Int, batch: [[Int]]? = nil, only: [String]? = nil) throws {
        let batch = batch ?? self.batch
        let (path, folder) = try tinyFile(tied: tied)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try TrainableModel(gguf: try GGUFFile(path: path), prefixLength: prefix)
        var g = SplitMix64(seed: 3)
        for l in 0..<model.config.layerCount where prefix > 0 {
            for name in [ParameterLayout.intactKeyName(layer: l), ParameterLayout.intactValueName(layer: l)] {
                let e = model.layout[name]!
                for i in 0..<e.count { model.weights.base[e.offset + i] = Float.random(in: -1...1, using: &g) }
            }
        }
        let pool = ThreadPool(threads: 2)
        let objective = NextTokenCrossEntropy(batch: batch)
        let gradients = ParameterBuffer(layout: model.layout)
        _ = model.step(batch: batch, objective: objective, gradients: gradients, pool: pool)
        var checked = 0
        for entry in model.layout.entries where only == nil || only!.contains(where: { entry.name.hasPrefix($0) }) {
            let values = gradients.values(entry.name)
            let order = values.indices.sorted { abs(values[$0]) > abs(values[$1]) }
            for index in Array(order.prefix(2)) + [order[order.count / 3]] {
                let at = entry.offset + index, original = model.weights.base[at], h: Float = 2e-3
                model.weights.base[at] = original + h
                let plus = model.step(batch: batch, objective: objective, gradients: nil, pool: pool).loss
                model.weights.base[at] = original - h
                let minus = model.step(batch: batch, objective: objective, gradients: nil, pool: pool).loss
                model.weights.base[at] = original
                let numeric = (plus - minus) / Double(2 * h)
                XCTAssertEqual(Double(values[index]), numeric, accuracy: 2e-3 + 0.03 * abs(numeric), "\(entry.name)[\(index)]")
                checked += 1
            }
        }
        // Embedding, 2 × 9 block tensors, final norm, head when untied, 2 × 2 prefix tensors.
        XCTAssertEqual(checked, only.map { 3 * ($0.count + 1) } ?? 3 * (1 + 18 + 1 + (tied ? 0 : 1) + (prefix > 0 ? 4 : 0)))
    }

    /// Frozen tensors get no gradient, and the result for trainable ones does not change.
    func testFrozenParametersAreSkipped() throws {
        let (path, folder) = try tinyFile(tied: false)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try TrainableModel(gguf: try GGUFFile(path: path))
        let pool = ThreadPool(threads: 2)
        let all = ParameterBuffer(layout: model.layout), some = ParameterBuffer(layout: model.layout)
        _ = model.step(batch: batch, objective: NextTokenCrossEntropy(batch: batch), gradients: all, pool: pool)
        model.trainable = model.layout.entries.map { $0.name.hasPrefix("blk.1.") }
        _ = model.step(batch: batch, objective: NextTokenCrossEntropy(batch: batch), gradients: some, pool: pool)
        for entry in model.layout.entries {
            let a = all.values(entry.name), b = some.values(entry.name)
            if entry.name.hasPrefix("blk.1.") { XCTAssertEqual(a, b, entry.name) } else { XCTAssertTrue(b.allSatisfy { $0 == 0 }, entry.name) }
        }
    }
}
