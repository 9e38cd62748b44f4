import Foundation
import XCTest
import Pivot
import PivotKernels

/// CSKV's trained factors: the objective's hand-written gradient, training on the real model, settings.
final class LowRankTrainingTests: XCTestCase {
    /// The attention-output loss's gradient by every factor matrix against central differences, on a
    /// tiny causal problem (2 query heads per KV head, 8 dims, window 3, RoPE on, float latents).
    func testGradientMatchesFiniteDifferences() {
        var g = SplitMix64(seed: 7)
        let d = 8, group = 2, n = 12, width = group * d
        func random(_ count: Int, _ scale: Float = 1) -> [Float] { (0..<count).map { _ in Float.random(in: -scale...scale, using: &g) } }
        let a = random(width * width, 0.3)
        var gram = [Float](repeating: 0, count: width * width)
        for i in 0..<width { for j in 0..<width { gram[i * width + j] = (0..<width).reduce(i == j ? 1 : 0) { $0 + a[i * width + $1] * a[j * width + $1] } } }
        let objective = LowRankObjective(headDim: d, group: group, window: 3, capacity: n, keyRank: 3, valueRank: 4, latentBits: nil,
                                         gram: gram, rope: RotaryGeometry(headDim: d, layers: 1))
        func buffer(_ values: [Float]) -> FloatBuffer {
            let b = FloatBuffer(count: values.count); b.pointer.update(from: values, count: values.count); return b
        }
        let queries = buffer(random(n * width, 2)), keys = buffer(random(n * d)), preKeys = buffer(random(n * d)), values = buffer(random(n * d))
        let exact = FloatBuffer(count: n * width), scratch = FloatBuffer(count: n)
        objective.exactOutput(queries: queries.pointer, keys: keys.pointer, values: values.pointer, count: n, into: exact.pointer, scratch: scratch.pointer)
        let chunk = LowRankHeadChunk(count: n, queries: queries.pointer, keys: keys.pointer, preKeys: preKeys.pointer, values: values.pointer,
                                     exact: exact.pointer)
        var parameters = random(objective.parameterCount, 0.5)
        func loss(_ p: [Float], _ gradients: UnsafeMutablePointer<Float>? = nil) -> Double {
            objective.evaluate(chunk, parameters: p, gradients: gradients).loss
        }
        var gradient = [Float](repeating: 0, count: parameters.count)
        let base = loss(parameters, &gradient)
        XCTAssertGreaterThan(base, 0)
        var worst = 0.0, largest = 0.0
        // Every parameter: encoder and decoder rows of keys and of values.
        for i in 0..<parameters.count {
            let saved = parameters[i], eps: Float = 1e-2
            parameters[i] = saved + eps; let up = loss(parameters)
            parameters[i] = saved - eps; let down = loss(parameters)
            parameters[i] = saved
            let numeric = (up - down) / Double(2 * eps)
            worst = max(worst, abs(numeric - Double(gradient[i])))
            largest = max(largest, abs(numeric))
        }
        XCTAssertGreaterThan(largest, 1e-2)
        XCTAssertLessThan(worst, 2e-3 * max(1, largest), "worst |analytic − numeric| \(worst), largest gradient \(largest)")
    }

    /// On the real model's layer 0, CSKV 50% with 4-bit latents: the closed form already reconstructs
    /// most of the attention output, and training lowers the error on its chunks and on a held-out one.
    func testTrainingLowersTheRealModelsLayerZeroError() throws {
        let model = try Shared.model()
        guard let text = ModelLocator.calibrationText else { throw XCTSkip("calibration.txt not found") }
        let tokens = model.tokenizer.encode(try String(contentsOfFile: text, encoding: .utf8), addBOS: false)
        let pool = ThreadPool()
        let factors = try LowRankKVFactors.calibrate(model: model, tokens: tokens, chunks: 4, pool: pool)
        let plan = try LowRankPlan(factors: factors, fraction: 0.5, latentBits: 4, rope: RotaryGeometry(model.config))
        let recipe = LowRankTrainingRecipe(steps: 40, learningRate: 0.01, window: 32, chunks: 2, chunkLength: 256, batch: 2, layers: 0..<1)
        let report = try plan.train(model: model, tokens: tokens, recipe: recipe, pool: pool)[0]
        XCTAssertLessThan(report.trainBefore, 0.5)
        XCTAssertFalse(report.kept)
        XCTAssertLessThan(report.trainAfter, report.trainBefore * 0.98)
        XCTAssertLessThan(report.heldAfter, report.heldBefore)
    }

    /// `--kv-train-steps` / `--kv-train-lr` (matrix keys kv_train_steps / kv_train_lr) are CSKV's, and the
    /// trained file's name changes with every training setting.
    func testSettingsParseAndTheCacheKeyDiffers() throws {
        let spec = try KVCacheParameters(kind: .cskv, latentBits: 4, trainSteps: 50, trainLearningRate: 0.02).spec()
        guard case .cskv(let settings) = spec else { return XCTFail("not CSKV") }
        XCTAssertEqual(settings.trainSteps, 50)
        XCTAssertEqual(settings.trainLearningRate, 0.02)
        XCTAssertEqual(settings.label, "cskv-50% l4 t50 lr0.02")
        guard case .cskv(let plain) = try KVCacheParameters(kind: .cskv).spec() else { return XCTFail("not CSKV") }
        XCTAssertEqual(plain.trainSteps, 0)
        XCTAssertEqual(plain.trainLearningRate, CSKVSettings.defaultTrainLearningRate)
        XCTAssertThrowsError(try KVCacheParameters(kind: .kivi, trainSteps: 5).spec())
        XCTAssertThrowsError(try KVCacheParameters(kind: .cskv, trainSteps: -1).spec())
        XCTAssertThrowsError(try KVCacheParameters(kind: .cskv, trainLearningRate: 0).spec())
        let decoded = try JSONDecoder().decode(KVCacheSpec.self, from: Data(#"{"kv_type": "cskv", "kv_train_steps": 50, "kv_train_lr": 0.02, "kv_latent_bits": 4}"#.utf8))
        XCTAssertEqual(decoded, spec)
        XCTAssertEqual(try JSONDecoder().decode(KVCacheSpec.self, from: JSONEncoder().encode(spec)), spec)

        let base = "/tmp/cskv/model.v2.safetensors", text = "/tmp/calibration.txt"
        var paths: Set<String> = [base]
        for variant in [settings, CSKVSettings(rank: 0.5, latentBits: 4, trainSteps: 100, trainLearningRate: 0.02),
                        CSKVSettings(rank: 0.5, latentBits: 4, trainSteps: 50, trainLearningRate: 0.01),
                        CSKVSettings(rank: 0.5, latentBits: 16, trainSteps: 50, trainLearningRate: 0.02),
                        CSKVSettings(rank: 0.25, latentBits: 4, trainSteps: 50, trainLearningRate: 0.02),
                        CSKVSettings(window: 16, rank: 0.5, latentBits: 4, trainSteps: 50, trainLearningRate: 0.02)] {
            paths.insert(variant.trainedPath(factorsPath: base, calibration: text))
        }
        XCTAssertEqual(paths.count, 7)
        XCTAssertNotEqual(settings.trainedPath(factorsPath: base, calibration: text), settings.trainedPath(factorsPath: base, calibration: "/tmp/other.txt"))
    }
}
