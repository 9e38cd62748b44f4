import XCTest
import Pivot
import PivotKernels

/// Sparse FP16 outliers end to end on a tiny model: written beside Q4_0 weights, loaded as a
/// correction, closer to the float model than the same file without them; damaged ones rejected.
final class OutlierTests: XCTestCase {
    func testOutliersRoundTripAndLowerTheError() throws {
        let (tiny, folder, float) = try TinyModel.floatGGUF(hidden: 64, ffn: 128, seed: 8)
        defer { try? FileManager.default.removeItem(at: folder) }
        let pool = ThreadPool(threads: 2)
        let floatModel = try LoadedModel.load(path: float)
        var g = SplitMix64(seed: 3)
        let calibration = (0..<256).map { _ in Int.random(in: 0..<tiny.vocab, using: &g) }
        let importance = try ImportanceMatrix.collect(model: floatModel, tokens: calibration, contextLength: 64, dataset: "random", execution: Execution(pool: pool))
        let plain = folder.appendingPathComponent("q4.gguf").path, kept = folder.appendingPathComponent("q4-outliers.gguf").path
        let all = folder.appendingPathComponent("q4-all.gguf").path
        let type = QuantizeFileType.named("Q4_0")!
        try QuantizePipeline.run(input: float, output: plain, fileType: type, importance: importance, pure: true, pool: pool)
        try QuantizePipeline.run(input: float, output: kept, fileType: type, importance: importance, pure: true,
                                 outliers: OutlierPlan(fraction: 0.02), pool: pool)
        try QuantizePipeline.run(input: float, output: all, fileType: type, importance: importance, pure: true,
                                 outliers: OutlierPlan(fraction: 1), pool: pool)
        let file = try GGUFFile(path: kept)
        let name = "blk.0.ffn_up.weight"
        XCTAssertEqual(file.tensors[name + SparseOutlierLinear.indexSuffix]?.elementCount, Int((0.02 * Double(tiny.ffn * tiny.hidden)).rounded()))
        XCTAssertEqual(file.metadata["pivot.sparse_outliers"]?.int, 1)

        let tokens = Array(calibration.prefix(32))
        func logits(_ path: String, _ precision: ActivationPrecision = .float) throws -> [Float] {
            let m = try LoadedModel.load(path: path)
            let state = ForwardState(config: m.config, maxTokens: 32, allLogits: true, execution: Execution(pool: pool, precision: precision))
            let out = m.transformer.forward(tokens, cache: m.makeCache(capacity: 64, maxBatch: 32), state: state, logits: .all)
            return (0..<32).flatMap { Array(UnsafeBufferPointer(start: out.row($0), count: tiny.vocab)) }
        }
        let reference = try logits(float), withOutliers = try logits(kept), without = try logits(plain)
        func error(_ x: [Float]) -> Float { zip(x, reference).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }
        // Every weight kept: a projection's quantized weight plus its FP16 correction is the float weight (to f16 rounding).
        let exact = try XCTUnwrap(try LoadedModel.load(path: all).transformer.layers[1].down), dense = try XCTUnwrap(floatModel.transformer.layers[1].down)
        let x = FloatBuffer(count: 4 * tiny.ffn), y1 = FloatBuffer(count: 4 * tiny.hidden), y2 = FloatBuffer(count: 4 * tiny.hidden)
        for i in 0..<(4 * tiny.ffn) { x.pointer[i] = Float.random(in: -1...1, using: &g) }
        let context = ComputeContext(pool: pool, maxTokens: 4, maxColumns: tiny.ffn, precision: .float)
        exact.forward(x.matrix(rows: 4, columns: tiny.ffn), into: y1.matrix(rows: 4, columns: tiny.hidden), context: context)
        dense.forward(x.matrix(rows: 4, columns: tiny.ffn), into: y2.matrix(rows: 4, columns: tiny.hidden), context: context)
        for i in 0..<(4 * tiny.hidden) { XCTAssertEqual(y1.pointer[i], y2.pointer[i], accuracy: 2e-3 * max(1, abs(y2.pointer[i]))) }
        XCTAssertLessThan(error(withOutliers), 0.97 * error(without), "the most sensitive 2% kept exactly")
        // With int8 activations the corrections run inside the fused product (gate/up, Q/K/V dispatches included).
        XCTAssertLessThan(error(try logits(kept, .int8)), 0.97 * error(try logits(plain, .int8)), "int8: the fused corrections apply")

        // The fused int8 product equals the inner product plus every correction from the file's tensors.
        let fused = try XCTUnwrap(loaded0(kept).transformer.layers[1].down as? SparseOutlierLinear)
        let rows = fused.outFeatures, n = fused.inFeatures
        let input = FloatBuffer(count: 5 * n), a = FloatBuffer(count: 5 * rows), b = FloatBuffer(count: 5 * rows)
        for i in 0..<(5 * n) { input.pointer[i] = Float.random(in: -1...1, using: &g) }
        let int8 = ComputeContext(pool: pool, maxTokens: 5, maxColumns: n, precision: .int8)
        fused.forward(input.matrix(rows: 5, columns: n), into: a.matrix(rows: 5, columns: rows), context: int8)
        fused.inner.forward(input.matrix(rows: 5, columns: n), into: b.matrix(rows: 5, columns: rows), context: int8)
        let indices = file.tensors["blk.1.ffn_down.weight" + SparseOutlierLinear.indexSuffix]!.toFloats()
        let values = file.tensors["blk.1.ffn_down.weight" + SparseOutlierLinear.valueSuffix]!.toFloats()
        XCTAssertEqual(fused.outlierCount, indices.count)
        for t in 0..<5 {
            for (i, v) in zip(indices, values) { b.pointer[t * rows + Int(i) / n] += v * input.pointer[t * n + Int(i) % n] }
        }
        for i in 0..<(5 * rows) { XCTAssertEqual(a.pointer[i], b.pointer[i], accuracy: 1e-5 * max(1, abs(b.pointer[i]))) }
        let loaded = try LoadedModel.load(path: kept)
        XCTAssertTrue(loaded.transformer.layers[0].up?.formatName.hasSuffix("+outliers") == true)
    }

    func loaded0(_ path: String) throws -> LoadedModel { try LoadedModel.load(path: path) }

    func testOutliersOutsideTheMatrixAreRejected() {
        let inner = DenseLinear(weights: [Float](repeating: 0, count: 12), outFeatures: 3, inFeatures: 4)
        XCTAssertThrowsError(try SparseOutlierLinear(inner, indices: [3, 12], values: [1, 2]))
        XCTAssertThrowsError(try SparseOutlierLinear(inner, indices: [3], values: [1, 2]))
    }
}
