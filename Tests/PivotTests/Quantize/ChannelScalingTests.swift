import Foundation
import XCTest
import Pivot
import PivotKernels

/// AWQ and SmoothQuant: folding their scales leaves the float model's outputs unchanged, and AWQ's
/// search lowers a projection's quantized output error against plain rounding.
final class ChannelScalingTests: XCTestCase {
    /// A tiny model with Q/K/V biases, GQA 4/2 and outlier channels in its norms, converted to F32 GGUF.
    func tinyModel() throws -> (folder: URL, path: String) {
        var tiny = TinyModel()
        tiny.qkvBias = true
        tiny.randomize(seed: 21)
        for l in 0..<tiny.layers {
            tiny.amplify("model.layers.\(l).input_layernorm.weight", indices: [3, 17, 40], by: 12)
            tiny.amplify("model.layers.\(l).post_attention_layernorm.weight", indices: [5, 33], by: 10)
        }
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        let path = folder.appendingPathComponent("f32.gguf").path
        try HuggingFaceConverter.convert(folder: folder.path, to: path, floatType: .f32)
        return (folder, path)
    }

    /// A calibration text of one sentence repeated 40 times, written into `folder`.
    func calibrationText(in folder: URL, repeating sentence: String) throws -> String {
        let path = folder.appendingPathComponent("calibration.txt").path
        try String(repeating: sentence, count: 40).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func logits(_ model: LoadedModel, _ tokens: [Int], pool: ThreadPool) -> [Float] {
        let state = ForwardState(config: model.config, maxTokens: tokens.count, allLogits: true, execution: Execution(pool: pool, precision: .float))
        let out = model.transformer.forward(tokens, cache: model.makeCache(capacity: tokens.count, maxBatch: tokens.count), state: state, logits: .all)
        return (0..<tokens.count).flatMap { t in (0..<model.config.vocabularySize).map { out.row(t)[$0] } }
    }

    func testFoldedScalesLeaveTheFloatModelUnchanged() throws {
        let (folder, path) = try tinyModel()
        defer { try? FileManager.default.removeItem(at: folder) }
        let pool = ThreadPool(threads: 2)
        let model = try LoadedModel.load(path: path)
        let calibration = (0..<512).map { ($0 * 37 + 11) % 290 }
        let hessians = try HessianCollector.collect(model: model, tokens: calibration, contextLength: 64, pool: pool)
        XCTAssertTrue(hessians.values.allSatisfy(\.hasActivationStatistics))
        let tokens = [5, 77, 200, 13, 250, 9, 42, 100, 31, 7, 180, 66]
        let expected = logits(model, tokens, pool: pool)
        let largest = expected.map(abs).max()!
        let source = try GGUFFile(path: path)
        let formats = Dictionary(uniqueKeysWithValues: hessians.keys.map { ($0, BlockFormat.q4_0) })
        for scaling in [ChannelScaling.awq(clip: false), .smooth(alpha: 0.5)] {
            let scaled = try scaling.apply(source: source, hessians: hessians, formats: formats, pool: pool)
            let out = folder.appendingPathComponent("scaled.gguf").path
            try scaled.writeFloat(to: out)
            let written = try GGUFFile(path: out)
            // The scales are real: the first norm moved by more than rounding.
            let before = try XCTUnwrap(source.tensors["blk.0.attn_norm.weight"]).toFloats()
            let after = try XCTUnwrap(written.tensors["blk.0.attn_norm.weight"]).toFloats()
            XCTAssertGreaterThan(zip(before, after).map { abs($0 / $1 - 1) }.max()!, 0.05, "\(scaling.name) left attn_norm as it was")
            let scaledModel = try LoadedModel.load(path: out)
            let got = logits(scaledModel, tokens, pool: pool)
            let worst = zip(got, expected).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst / largest, 1e-5, "\(scaling.name): largest logit change relative to the largest logit")
            // IntactKV from the unscaled model: its values are brought into the file's V / s space, so they
            // equal what the scaled model itself stores.
            XCTAssertNotNil(ValueScales.read(path: out), "the v scales are in the metadata")
            let prefix = Array(tokens.prefix(4))
            let pivots = try IntactPivots(base: model, for: scaledModel, pivots: prefix.count)
            _ = prefix.withUnsafeBufferPointer { pivots.prepare(tokens: $0, at: 0, pool: pool) }
            let own = DenseKVCache(shape: AttentionShape(scaledModel.config), capacity: 8, maxBatch: 8)
            _ = scaledModel.transformer.forward(prefix, cache: own, state: ForwardState(config: scaledModel.config, maxTokens: 8, allLogits: false,
                                                                                          execution: Execution(pool: pool, precision: .float)))
            var valueError: Float = 0, valueSize: Float = 0
            for layer in 0..<scaledModel.config.layerCount { for head in 0..<scaledModel.config.kvHeadCount { for p in 0..<prefix.count {
                let a = pivots.entry(layer: layer, kvHead: head, position: p).value, b = own.entry(layer: layer, kvHead: head, position: p).value
                for i in 0..<scaledModel.config.headDim { valueError = max(valueError, abs(a[i] - b[i])); valueSize = max(valueSize, abs(b[i])) }
            } } }
            XCTAssertLessThan(valueError / valueSize, 1e-5, "\(scaling.name): IntactKV's converted values")
        }
    }

    /// A layer whose inputs have a few channels 20× the rest (AWQ's salient channels), at 4 bits, against
    /// the same quantizer (importance-weighted by E[x²]) without scales.
    func testAWQScalesLowerTheOutputErrorOfPlainRounding() {
        let rows = 64, columns = 256, tokens = 512
        var g = SplitMix64(seed: 9)
        let weights = (0..<(rows * columns)).map { _ in Float.random(in: -1...1, using: &g) }
        let salient: Set<Int> = [7, 70, 130, 200]
        let inputs = (0..<(tokens * columns)).map { i in Float.random(in: -1...1, using: &g) * (salient.contains(i % columns) ? 20 : 1) }
        // Measured: 0.83 (Q4_0) and 0.955 (Q4_K, whose sub-block scales already adapt) of the unscaled error,
        // both with the same importance-weighted quantizer.
        for (format, bound) in [(BlockFormat.q4_0, 0.9), (.q4_K, 0.98)] {
            let result = ChannelScaling.awqScales(weights: weights, rows: rows, columns: columns, format: format, inputs: inputs,
                                                  tokens: tokens, pool: ThreadPool(threads: 2))
            // Independently: ‖(Q(W·s)/s − W)·x‖² averaged over tokens, with the quantizer's public row API.
            func error(_ scales: [Float]) -> Double {
                let importance = (0..<columns).map { j in (0..<tokens).reduce(Float(0)) { $0 + inputs[$1 * columns + j] * inputs[$1 * columns + j] } / Float(tokens) / (scales[j] * scales[j]) }
                var restored = [Float](repeating: 0, count: rows * columns)
                var bytes = [UInt8](repeating: 0, count: format.rowBytes(columns))
                for r in 0..<rows {
                    let row = (0..<columns).map { weights[r * columns + $0] * scales[$0] }
                    bytes.withUnsafeMutableBytes { b in row.withUnsafeBufferPointer { x in importance.withUnsafeBufferPointer { imp in
                        format.quantizeRow(x.baseAddress!, count: columns, into: b.baseAddress!, importance: imp.baseAddress!)
                    } } }
                    restored.withUnsafeMutableBufferPointer { out in bytes.withUnsafeBytes { b in
                        format.dequantizeRow(b.baseAddress!, count: columns, into: out.baseAddress! + r * columns)
                    } }
                    for j in 0..<columns { restored[r * columns + j] = restored[r * columns + j] / scales[j] - weights[r * columns + j] }
                }
                var total = 0.0
                for t in 0..<tokens { for r in 0..<rows {
                    var s = 0.0
                    for j in 0..<columns { s += Double(restored[r * columns + j]) * Double(inputs[t * columns + j]) }
                    total += s * s
                } }
                return total / Double(tokens)
            }
            let plain = error([Float](repeating: 1, count: columns)), scaled = error(result.scales)
            XCTAssertGreaterThan(result.alpha, 0, "\(format.name): the search kept α = 0")
            XCTAssertLessThan(scaled, bound * plain, "\(format.name): AWQ's scales should lower the output error of the same quantizer")
            // The search's own figures (through E[x·xᵀ]) agree with the direct ones.
            XCTAssertEqual(result.unscaledError, plain, accuracy: plain * 1e-3)
            XCTAssertEqual(result.error, scaled, accuracy: scaled * 1e-3)
        }
    }

    /// `pivot quantize --method awq / awq+gptq / smooth` end to end: the files hold exactly the tensors
    /// (names, shapes, types) of the plain imatrix file, so llama.cpp reads them as it reads that one, and they run.
    func testScaledFilesStayStandardAndRun() throws {
        let (folder, path) = try tinyModel()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = try calibrationText(in: folder, repeating: "The quick brown fox jumps over the lazy dog while the model counts its tokens. ")
        let pool = ThreadPool(threads: 2)
        func quantize(_ method: String) throws -> GGUFFile {
            let (rounding, scaling) = try XCTUnwrap(ChannelScaling.parseMethod(method))
            var job = QuantizeJob(input: path, output: folder.appendingPathComponent("\(method).gguf").path,
                                  fileType: try XCTUnwrap(QuantizeFileType.named("Q4_0")), method: rounding)
            job.scaling = scaling
            job.calibrationText = text
            job.chunkLength = 64
            job.chunks = 8
            let summary = try job.run(pool: pool)
            XCTAssertEqual(summary.scalingLines.isEmpty, scaling == nil, method)
            return try GGUFFile(path: job.output)
        }
        let plain = try quantize("imatrix")
        for method in ["awq", "awq+gptq", "smooth"] {
            let file = try quantize(method)
            XCTAssertEqual(file.tensorOrder, plain.tensorOrder, method)
            for name in plain.tensorOrder {
                XCTAssertEqual(file.tensors[name]!.type, plain.tensors[name]!.type, "\(method) \(name)")
                XCTAssertEqual(file.tensors[name]!.shape, plain.tensors[name]!.shape, "\(method) \(name)")
            }
            let model = try LoadedModel.load(path: file.path)
            let out = logits(model, [5, 77, 200, 13], pool: pool)
            XCTAssertTrue(out.allSatisfy(\.isFinite), method)
        }
        XCTAssertEqual(ChannelScaling.parseMethod("awq+gptq")?.scaling, .awq(clip: false), "GPTQ rounding: no clipping")
        XCTAssertEqual(ChannelScaling.parseMethod("awq")?.scaling, .awq(clip: true))
        XCTAssertEqual(ChannelScaling.parseMethod("smooth", alpha: 0.7)?.scaling, .smooth(alpha: 0.7))
        XCTAssertNil(ChannelScaling.parseMethod("awq+rtn"))
        XCTAssertNil(ChannelScaling.parseMethod("gptq+awq"))
    }

    /// A matrix configuration's `quantize` key: the method's file is made once into the cache folder and reused.
    func testMatrixConfigurationNamesAMethod() throws {
        let (folder, path) = try tinyModel()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = try calibrationText(in: folder, repeating: "Channels move between the norm and the weights without changing a single output. ")
        let previous = ProcessInfo.processInfo.environment["PIVOT_CACHE"]
        setenv("PIVOT_CACHE", folder.appendingPathComponent("cache").path, 1)
        defer { if let previous { setenv("PIVOT_CACHE", previous, 1) } else { unsetenv("PIVOT_CACHE") } }
        let json = #"{"name": "sq", "model": "\#(path)", "act_bits": 8, "quantize": {"type": "Q4_0", "method": "smooth", "alpha": 0.6, "calib": "\#(text)", "calib_ctx": 64}}"#
        let configuration = try JSONDecoder().decode(RunConfiguration.self, from: Data(json.utf8))
        XCTAssertEqual(configuration.quantize, QuantizeSpec(type: "Q4_0", method: "smooth", alpha: 0.6, calib: text, calibContext: 64))
        let pool = ThreadPool(threads: 2)
        let model = try configuration.load(pool: pool)
        XCTAssertTrue(logits(model, [1, 2, 3], pool: pool).allSatisfy(\.isFinite))
        let made = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("cache/quantized").path).filter { $0.contains("Q4_0-smooth") }
        XCTAssertEqual(made.count, 1, "one file for the method")
        let file = folder.appendingPathComponent("cache/quantized/" + made[0]).path
        let written = try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date
        _ = try configuration.load(pool: pool)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date, written, "reused, not made again")
        var tooLong = configuration
        tooLong.quantize?.calibContext = 512
        XCTAssertThrowsError(try tooLong.load(pool: pool), "a chunk longer than the model's context is an error, not a crash")
        for bad in [#"{"type": "Q4_0", "method": "awq+rtn", "calib": "x"}"#, #"{"type": "Q9_0"}"#, #"{"type": "F16", "method": "awq", "calib": "x"}"#,
                    #"{"type": "Q4_0", "method": "awq", "alpha": 0.5, "calib": "x"}"#] {
            let spec = try JSONDecoder().decode(QuantizeSpec.self, from: Data(bad.utf8))
            XCTAssertThrowsError(try spec.validate(), bad)
        }
    }
}
