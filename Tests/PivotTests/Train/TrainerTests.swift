import XCTest
import Pivot
import PivotKernels

/// AdamW against a step worked by hand, the schedule's shape, and resumption: a run killed after an
/// update resumes from its last checkpoint and ends with the same weights, bit for bit, as an
/// uninterrupted one (one thread, so every sum runs in the same order).
final class TrainerTests: XCTestCase {
    func testAdamWMatchesAHandComputedStep() {
        let optimizer = AdamW(count: 2, settings: AdamWSettings(beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.1))
        var p: [Float] = [1, -2]
        let g: [Float] = [0.5, -0.25]
        p.withUnsafeMutableBufferPointer { optimizer.update(parameters: $0.baseAddress!, gradients: g, learningRate: 0.01) }
        // Step 1: p ← p(1 − lr·λ); m̂ = g, v̂ = g², so p ← p − lr·g/(|g| + ε) = p − lr·sign(g).
        XCTAssertEqual(p[0], 1 * (1 - 0.001) - 0.01, accuracy: 1e-6)
        XCTAssertEqual(p[1], -2 * (1 - 0.001) + 0.01, accuracy: 1e-6)
        // Step 2 with g2: m = 0.9·0.1·g... worked in Double.
        let g2: [Float] = [-0.1, 0.3]
        let before = p
        p.withUnsafeMutableBufferPointer { optimizer.update(parameters: $0.baseAddress!, gradients: g2, learningRate: 0.01) }
        for i in 0..<2 {
            let m = 0.9 * (0.1 * Double(g[i])) + 0.1 * Double(g2[i])
            let v = 0.999 * (0.001 * Double(g[i] * g[i])) + 0.001 * Double(g2[i] * g2[i])
            let mHat = m / (1 - 0.81), vHat = v / (1 - 0.998001)
            let expected = Double(before[i]) * (1 - 0.001) - 0.01 * mHat / (vHat.squareRoot() + 1e-8)
            XCTAssertEqual(Double(p[i]), expected, accuracy: 1e-6)
        }
        XCTAssertEqual(optimizer.step, 2)
    }

    func testScheduleWarmsUpThenDecaysToTheFloor() {
        let s = LearningRateSchedule(peak: 1e-3, warmupSteps: 10, totalSteps: 110, floor: 0.1)
        XCTAssertEqual(s.rate(at: 1), 1e-4, accuracy: 1e-9)
        XCTAssertEqual(s.rate(at: 10), 1e-3, accuracy: 1e-9)
        XCTAssertEqual(s.rate(at: 60), 1e-3 * (0.1 + 0.9 * 0.5), accuracy: 1e-7)
        XCTAssertEqual(s.rate(at: 110), 1e-4, accuracy: 1e-9)
    }

    func testFilterSelectsNormsLayersAndPatterns() {
        XCTAssertTrue(ParameterFilter().includes("blk.3.attn_q.weight"))
        XCTAssertFalse(ParameterFilter().includes("intact.0.key"))
        XCTAssertTrue(ParameterFilter(normsOnly: true).includes("output_norm.weight"))
        XCTAssertFalse(ParameterFilter(normsOnly: true).includes("blk.0.ffn_up.weight"))
        XCTAssertTrue(ParameterFilter(layers: 2...3).includes("blk.3.ffn_up.weight"))
        XCTAssertFalse(ParameterFilter(layers: 2...3).includes("token_embd.weight"))
        XCTAssertTrue(ParameterFilter(tensors: ["blk.*.ffn_*"]).includes("blk.12.ffn_down.weight"))
        XCTAssertFalse(ParameterFilter(tensors: ["blk.*.ffn_*"]).includes("blk.12.attn_q.weight"))
        XCTAssertTrue(ParameterFilter(prefixOnly: true).includes("intact.4.value"))
        XCTAssertFalse(ParameterFilter(prefixOnly: true).includes("blk.0.attn_norm.weight"))
    }

    func testResumeGivesTheUninterruptedWeightsBitForBit() throws {
        let (_, folder, path) = try TinyModel.floatGGUF(hidden: 64, ffn: 96, seed: 8)
        defer { try? FileManager.default.removeItem(at: folder) }
        var g = SplitMix64(seed: 4)
        let data = TrainingWindows(tokens: (0..<400).map { _ in Int(g.next() % 300) }, length: 16)
        var settings = TrainingSettings(steps: 6, batch: 2, length: 16, learningRate: 3e-3, warmupSteps: 2)
        settings.accumulation = 2
        settings.optimizer.weightDecay = 0.01
        let pool = ThreadPool(threads: 1)
        func trainer() throws -> Trainer<CrossEntropySource> {
            Trainer(model: try TrainableModel(gguf: try GGUFFile(path: path)), settings: settings, data: data, source: CrossEntropySource())
        }
        let whole = try trainer()
        try whole.run(pool: pool)
        XCTAssertLessThan(whole.records.last!.loss, whole.records.first!.loss)

        let checkpoint = folder.appendingPathComponent("run.checkpoint").path
        let killed = try trainer()
        killed.checkpointPath = checkpoint; killed.checkpointEvery = 2; killed.stopAfter = 3
        try killed.run(pool: pool)
        let resumed = try trainer()
        resumed.checkpointPath = checkpoint; resumed.checkpointEvery = 2
        var resumedAt = -1
        try resumed.run(pool: pool, resume: true) { if case .resumed(let step) = $0 { resumedAt = step } }
        XCTAssertEqual(resumedAt, 2, "update 3 came after the last checkpoint and is done again")
        XCTAssertEqual(resumed.records.map(\.step), Array(1...6))
        XCTAssertEqual(resumed.records.map(\.loss), whole.records.map(\.loss))
        XCTAssertTrue(memcmp(resumed.master.base, whole.master.base, 4 * whole.master.count) == 0, "weights differ after resuming")

        // Different settings refuse to resume.
        settings.learningRate = 1e-3
        let changed = try trainer()
        changed.checkpointPath = checkpoint
        XCTAssertThrowsError(try changed.run(pool: pool, resume: true)) { error in
            XCTAssertTrue("\(error)".contains("different training settings"), "\(error)")
        }
    }
}
