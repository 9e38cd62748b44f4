import XCTest
import Pivot
import PivotKernels

/// The backward pass against finite differences of the loss, on a tiny random Llama (GQA 4/2,
/// two layers, RoPE), for weights of every projection of both layers.
final class GradientTests: XCTestCase {
    func testGradientsMatchFiniteDifferences() throws {
        var tiny = TinyModel()
        tiny.randomize(seed: 21)
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("tiny.gguf").path
        try HuggingFaceConverter.convert(folder: folder.path, to: path, floatType: .f32)
        let model = try GradientModel(gguf: try GGUFFile(path: path))
        let pool = ThreadPool(threads: 2)
        let tokens = [5, 77, 201, 13, 150, 99, 42, 260, 7, 31, 18, 222]
        var gradients: [String: [Float]] = [:]
        var inputs: [String: [Float]] = [:]
        let loss = model.lossAndGradients(tokens: tokens, gradients: &gradients, pool: pool) { inputs[$0] = $1 }
        XCTAssertGreaterThan(loss, 1)
        XCTAssertEqual(gradients.count, 14)
        // The forward half is the engine's forward pass: the same loss from the engine's float logits.
        let engine = try LoadedModel.load(path: path)
        let state = ForwardState(config: engine.config, maxTokens: tokens.count, allLogits: true, execution: Execution(pool: pool, precision: .float))
        let logits = engine.transformer.forward(tokens, cache: engine.makeCache(capacity: 32, maxBatch: 16), state: state, logits: .all)
        var engineLoss = 0.0
        for t in 0..<(tokens.count - 1) {
            let row = Array(UnsafeBufferPointer(start: logits.row(t), count: tiny.vocab)).map(Double.init)
            let largest = row.max()!
            engineLoss += largest + log(row.reduce(0) { $0 + exp($1 - largest) }) - row[tokens[t + 1]]
        }
        XCTAssertEqual(loss, engineLoss / Double(tokens.count - 1), accuracy: 1e-4)
        XCTAssertEqual(inputs["blk.0.attn_q.weight"]?.count, tokens.count * tiny.hidden)

        var checked = 0
        for layer in 0..<2 {
            for role in GradientModel.projectionRoles {
                let name = "blk.\(layer).\(role).weight"
                let g = gradients[name]!
                // The three largest gradients of this tensor, and one ordinary entry.
                let largest = g.indices.sorted { abs(g[$0]) > abs(g[$1]) }
                for index in Array(largest.prefix(3)) + [largest[largest.count / 3]] {
                    let original = model.weights[name]![index], h: Float = 2e-3
                    var unused: [String: [Float]] = [:]
                    model.weights[name]![index] = original + h
                    let plus = model.lossAndGradients(tokens: tokens, gradients: &unused, pool: pool)
                    model.weights[name]![index] = original - h
                    let minus = model.lossAndGradients(tokens: tokens, gradients: &unused, pool: pool)
                    model.weights[name]![index] = original
                    let numeric = (plus - minus) / Double(2 * h)
                    XCTAssertEqual(Double(g[index]), numeric, accuracy: 2e-3 + 0.03 * abs(numeric), "\(name)[\(index)]")
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 56)
    }
}
