import XCTest
import Pivot
import PivotKernels

/// Pivot's group-wise types end to end on a tiny model, and the calibration cache.
final class ExtensionFormatTests: XCTestCase {
    /// A Q3_G64 / Q2_G64 file is marked, loads, runs through the int8 kernels as the float path does,
    /// and more bits stay closer to the float model.
    func testGroupwiseFilesAreMarkedLoadAndRun() throws {
        let (tiny, folder, float) = try TinyModel.floatGGUF(hidden: 64, ffn: 128, seed: 11)
        defer { try? FileManager.default.removeItem(at: folder) }
        let pool = ThreadPool(threads: 2)
        var g = SplitMix64(seed: 2)
        let tokens = (0..<32).map { _ in Int.random(in: 0..<tiny.vocab, using: &g) }
        func logits(_ path: String, _ precision: ActivationPrecision) throws -> [Float] {
            let m = try LoadedModel.load(path: path)
            let state = ForwardState(config: m.config, maxTokens: 32, allLogits: true, execution: Execution(pool: pool, precision: precision))
            let out = m.transformer.forward(tokens, cache: m.makeCache(capacity: 64, maxBatch: 32), state: state, logits: .all)
            return (0..<32).flatMap { Array(UnsafeBufferPointer(start: out.row($0), count: tiny.vocab)) }
        }
        let reference = try logits(float, .float)
        func error(_ x: [Float]) -> Float { zip(x, reference).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }
        var errors: [String: Float] = [:]
        for name in ["Q2_G64", "Q3_G64", "Q4_G128"] {
            let path = folder.appendingPathComponent("\(name).gguf").path
            try QuantizePipeline.run(input: float, output: path, fileType: XCTUnwrap(QuantizeFileType.named(name)), pure: true, pool: pool)
            let file = try GGUFFile(path: path)
            let expected = name == "Q4_G128" ? "Q4_G128,Q4_G64" : name  // 64-wide rows take the 64 group
            XCTAssertEqual(file.metadata["pivot.extension_types"]?.string, expected)
            XCTAssertEqual(file.tensors["blk.0.ffn_down.weight"]?.type, .block(QuantizeFileType.named(name)!.base!))
            let model = try LoadedModel.load(path: path)
            XCTAssertEqual(model.transformer.layers[0].down?.formatName, name)
            let int8 = try logits(path, .int8), exact = try logits(path, .float)
            // The int8-activation kernels against the dequantized float path of the same file.
            XCTAssertLessThan(zip(int8, exact).map { abs($0 - $1) }.max()!, 0.05 * exact.map(abs).max()!, name)
            errors[name] = error(exact)
        }
        XCTAssertLessThan(errors["Q3_G64"]!, errors["Q2_G64"]!)
        XCTAssertLessThan(errors["Q4_G128"]!, errors["Q3_G64"]!)
    }

    /// Hessians and gradients come back as saved; another model, text or chunking is not reused.
    func testCalibrationCacheRoundTrips() throws {
        let (tiny, folder, float) = try TinyModel.floatGGUF(hidden: 64, ffn: 128, seed: 4)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try LoadedModel.load(path: float)
        var g = SplitMix64(seed: 9)
        let tokens = (0..<128).map { _ in Int.random(in: 0..<tiny.vocab, using: &g) }
        let hessians = try HessianCollector.collect(model: model, tokens: tokens, contextLength: 64, pool: ThreadPool(threads: 2))
        let gradients = ["blk.0.attn_q.weight": (0..<(64 * 64)).map { Float($0) * 0.5 }]
        let path = folder.appendingPathComponent("cache.gguf").path
        let key = CalibrationCache.key(model: float, calibration: float, chunks: 2, chunkLength: 64)
        try CalibrationCache.save(path: path, key: key, contents: .init(hessians: hessians, gradients: gradients, loss: 2.5), gradientChunks: 8)
        let back = try XCTUnwrap(CalibrationCache.load(path: path, key: key, gradientChunks: 8))
        XCTAssertEqual(Set(back.hessians.keys), Set(hessians.keys))
        for (name, h) in hessians {
            XCTAssertEqual(back.hessians[name]!.tokens, 128)
            XCTAssertEqual(back.hessians[name]!.matrix(), h.matrix(), name)
            // AWQ's and SmoothQuant's statistics come back too (means stored in float).
            XCTAssertTrue(back.hessians[name]!.hasActivationStatistics, name)
            XCTAssertEqual(back.hessians[name]!.absoluteMaxima, h.absoluteMaxima, name)
            for (a, b) in zip(back.hessians[name]!.meanAbsolute, h.meanAbsolute) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, b), name) }
        }
        XCTAssertTrue(back.hessians["blk.1.attn_k.weight"] === back.hessians["blk.1.attn_v.weight"], "Q/K/V share one input")
        XCTAssertEqual(back.gradients?["blk.0.attn_q.weight"], gradients["blk.0.attn_q.weight"])
        XCTAssertEqual(back.loss ?? 0, 2.5, accuracy: 1e-6)
        XCTAssertNil(try CalibrationCache.load(path: path, key: key, gradientChunks: 4)?.gradients, "other gradient windows")
        XCTAssertNil(try CalibrationCache.load(path: path, key: CalibrationCache.key(model: float, calibration: float, chunks: 3, chunkLength: 64), gradientChunks: 8))
    }
}
