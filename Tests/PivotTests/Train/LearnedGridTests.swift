import XCTest
import Pivot
import PivotKernels

/// A group-wise student whose scales and minimums train beside its codes: the loss falls further
/// than with the quantizer's grids kept, the written file holds exactly the weights the forward
/// pass read, and a killed run resumes to the uninterrupted result bit for bit (grids included).
final class LearnedGridTests: XCTestCase {
    func testLearnedGridsTrainWriteAndResume() throws {
        let (_, folder, float) = try TinyModel.floatGGUF(hidden: 64, ffn: 96, seed: 9)
        defer { try? FileManager.default.removeItem(at: folder) }
        let student = folder.appendingPathComponent("tiny-q2.gguf").path
        let pool = ThreadPool(threads: 1)
        _ = try QuantizePipeline.run(input: float, output: student, fileType: QuantizeFileType.named("Q2_G32")!, pool: pool)
        var g = SplitMix64(seed: 4)
        let data = TrainingWindows(tokens: (0..<400).map { _ in Int(g.next() % 300) }, length: 16)
        var settings = TrainingSettings(steps: 8, batch: 2, length: 16, learningRate: 1e-3, warmupSteps: 1)
        func trainer(gridRate: Float) throws -> (Trainer<CrossEntropySource>, StudentGrid) {
            settings.gridLearningRate = gridRate
            let gguf = try GGUFFile(path: student), model = try TrainableModel(gguf: gguf)
            let grid = StudentGrid(student: gguf, layout: model.layout, learnsGrids: gridRate > 0)
            return (Trainer(model: model, settings: settings, data: data, source: CrossEntropySource(), projection: grid), grid)
        }
        let (fixed, _) = try trainer(gridRate: 0)
        try fixed.run(pool: pool)
        let (learning, grid) = try trainer(gridRate: 3e-3)
        XCTAssertTrue(grid.hasGroupGrids)
        try learning.run(pool: pool)
        XCTAssertEqual(learning.records.first!.loss, fixed.records.first!.loss, "the same start")
        XCTAssertLessThan(learning.records.last!.loss, fixed.records.last!.loss, "learned grids recover more")

        // The file stores the learned grids and codes: it dequantizes to the weights the forward pass read.
        let output = folder.appendingPathComponent("healed.gguf").path
        try TrainedModelWriter.write(weights: learning.master, like: try GGUFFile(path: student), grid: grid, fileType: nil, to: output, pool: pool)
        let written = try GGUFFile(path: output)
        let name = "blk.1.ffn_down.weight", entry = learning.model.layout[name]!
        XCTAssertEqual(written.tensors[name]!.type, try GGUFFile(path: student).tensors[name]!.type)
        let restored = written.tensors[name]!.toFloats()
        let forward = Array(UnsafeBufferPointer(start: learning.model.weights.base + entry.offset, count: entry.count))
        XCTAssertEqual(restored, forward)

        // Killed after update 5 (checkpoints every 2), resumed: the uninterrupted weights and grids, bit for bit.
        let checkpoint = folder.appendingPathComponent("run.checkpoint").path
        let (killed, _) = try trainer(gridRate: 3e-3)
        killed.checkpointPath = checkpoint; killed.checkpointEvery = 2; killed.stopAfter = 5
        try killed.run(pool: pool)
        let (resumed, resumedGrid) = try trainer(gridRate: 3e-3)
        resumed.checkpointPath = checkpoint; resumed.checkpointEvery = 2
        try resumed.run(pool: pool, resume: true)
        XCTAssertEqual(resumed.records.map(\.loss), learning.records.map(\.loss))
        XCTAssertTrue(memcmp(resumed.master.base, learning.master.base, 4 * learning.master.count) == 0)
        XCTAssertEqual(resumedGrid.state, grid.state)
    }
}
