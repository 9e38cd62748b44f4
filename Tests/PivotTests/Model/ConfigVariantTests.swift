import Foundation
import XCTest
import Pivot
import PivotKernels

/// Every config.json form transformers writes or wrote. Each test builds a tiny folder whose output
/// depends on the key under test, so ignoring the key fails the comparison with the reference.
final class ConfigVariantTests: XCTestCase {
    func tiny(_ adjust: (inout TinyModel) -> Void = { _ in }) -> TinyModel {
        var model = TinyModel()
        adjust(&model)
        model.randomize()
        return model
    }

    func load(_ model: TinyModel, _ config: [String: Any], extraFiles: [String: Any] = [:]) throws -> LoadedModel {
        try model.load(config: config, extraFiles: extraFiles)
    }

    func assertLoadFails(_ model: TinyModel, _ config: [String: Any], mentioning words: [String], line: UInt = #line) {
        XCTAssertThrowsError(try load(model, config), line: line) { error in
            for word in words { XCTAssertTrue("\(error)".contains(word), "error should name \(word): \(error)", line: line) }
        }
    }

    /// transformers 5 moves θ into `rope_parameters`; a legacy top-level `rope_theta` must give the same model.
    func testRopeParametersOfTransformers5() throws {
        let model = tiny { $0.theta = 500_000 }
        var current = model.baseConfig
        current["rope_parameters"] = ["rope_theta": 500_000.0, "rope_type": "default"]
        try model.assertEngineMatchesReference(config: current)
        XCTAssertEqual(try load(model, current).config.ropeTheta, 500_000)
        var legacy = model.baseConfig
        legacy["rope_theta"] = 500_000.0
        legacy["rope_scaling"] = NSNull()
        try model.assertEngineMatchesReference(config: legacy)
    }

    func testLinearScalingLegacyTypeKey() throws {
        let base = (0..<8).map { pow(10000.0, -Double(2 * $0) / 16) }
        let model = tiny { $0.inverseFrequencies = base.map { $0 / 4 } }
        var config = model.baseConfig
        config["rope_theta"] = 10000.0
        config["rope_scaling"] = ["type": "linear", "factor": 4.0]
        try model.assertEngineMatchesReference(config: config)
    }

    /// Llama-3.1's scaling with a small original context so all three frequency bands occur.
    func testLlama3Scaling() throws {
        let factor = 8.0, low = 1.0, high = 4.0, original = 64.0
        // Wavelengths 2π/f: 6.3 (kept), 19.9 and 62.8 (ramped), 199 and longer (divided by 8).
        let expected = (0..<8).map { i -> Double in
            let f = pow(10000.0, -Double(2 * i) / 16), wavelength = 2 * Double.pi / f
            if wavelength < original / high { return f }
            if wavelength > original / low { return f / factor }
            let smooth = (original / wavelength - low) / (high - low)
            return (1 - smooth) * f / factor + smooth * f
        }
        let model = tiny { $0.inverseFrequencies = expected }
        var config = model.baseConfig
        config["rope_parameters"] = ["rope_type": "llama3", "rope_theta": 10000.0, "factor": factor, "low_freq_factor": low,
                                     "high_freq_factor": high, "original_max_position_embeddings": Int(original)]
        try model.assertEngineMatchesReference(config: config)
    }

    /// YaRN: ramp between interpolation and extrapolation over correction dimensions, cos/sin × (0.1 ln s + 1).
    func testYarnScaling() throws {
        let factor = 4.0, original = 32.0, d = 16.0
        func correction(_ rotations: Double) -> Double { d * log(original / (rotations * 2 * .pi)) / (2 * log(10000.0)) }
        let lowDim = max(0, correction(32).rounded(.down)), highDim = min(d - 1, correction(1).rounded(.up))
        let expected = (0..<8).map { i -> Double in
            let f = pow(10000.0, -Double(2 * i) / d)
            let extrapolation = 1 - min(1, max(0, (Double(i) - lowDim) / (highDim - lowDim)))
            return f / factor * (1 - extrapolation) + f * extrapolation
        }
        let model = tiny { $0.inverseFrequencies = expected; $0.attentionFactor = 0.1 * log(factor) + 1 }
        var config = model.baseConfig
        config["rope_parameters"] = ["rope_type": "yarn", "rope_theta": 10000.0, "factor": factor,
                                     "original_max_position_embeddings": Int(original)]
        try model.assertEngineMatchesReference(config: config)
    }

    func testExplicitHeadDim() throws {
        let model = tiny { $0.headDim = 24 }  // 4 heads × 24 ≠ hidden 64
        var config = model.baseConfig
        config["head_dim"] = 24
        try model.assertEngineMatchesReference(config: config)
        assertLoadFails(model, model.baseConfig, mentioning: ["q_proj"])
    }

    func testTiedEmbeddings() throws {
        let model = tiny { $0.tied = true }
        var config = model.baseConfig
        try model.assertEngineMatchesReference(config: config)
        config["tie_word_embeddings"] = nil
        XCTAssertTrue(try load(model, config).config.tiedEmbeddings, "no key and no lm_head: tied")
        config["tie_word_embeddings"] = false
        assertLoadFails(model, config, mentioning: ["lm_head.weight"])
    }

    /// Qwen3: per-head RMSNorm of Q and K before RoPE, explicit head_dim, no biases.
    func testQwen3QueryKeyNorm() throws {
        let model = tiny { $0.qkNorm = true; $0.headDim = 24 }
        var config = model.baseConfig
        config["model_type"] = "qwen3"
        config["head_dim"] = 24
        config["rope_theta"] = 1_000_000.0
        var reference = model
        reference.theta = 1_000_000
        try reference.assertEngineMatchesReference(config: config)
    }

    /// SmolLM3 leaves RoPE out of every 4th layer (`no_rope_layers` 0).
    func testSmolLM3NoRopeLayers() throws {
        let model = tiny { $0.layers = 4; $0.ropeLayers = [true, true, true, false] }
        var config = model.baseConfig
        config["model_type"] = "smollm3"
        try model.assertEngineMatchesReference(config: config)  // derived from no_rope_layer_interval's default 4
        config["no_rope_layers"] = [1, 1, 1, 0]
        try model.assertEngineMatchesReference(config: config)
        config["no_rope_layers"] = [1, 0]
        assertLoadFails(model, config, mentioning: ["no_rope_layers"])
    }

    func testEOSListsAndGenerationConfig() throws {
        let model = tiny()
        var config = model.baseConfig
        config["eos_token_id"] = [296, 297]
        let loaded = try load(model, config, extraFiles: [
            "generation_config.json": ["eos_token_id": 298, "temperature": 0.6, "top_p": 0.9, "do_sample": true]])
        XCTAssertEqual(loaded.tokenizer.stopTokens, [296, 297, 298, 299])
        XCTAssertEqual(loaded.generationDefaults, GenerationDefaults(temperature: 0.6, topK: nil, topP: 0.9))
        let greedy = try load(model, model.baseConfig, extraFiles: ["generation_config.json": ["do_sample": false, "temperature": 0.7]])
        XCTAssertEqual(greedy.generationDefaults.temperature, 0)
    }

    /// transformers 5 writes the template to chat_template.jinja instead of tokenizer_config.json.
    func testChatTemplateJinjaFile() throws {
        let model = tiny()
        let llama3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        XCTAssertEqual(try load(model, model.baseConfig, extraFiles: ["chat_template.jinja": llama3]).chatTemplate, .llama3)
        XCTAssertEqual(try load(model, model.baseConfig, extraFiles: [
            "tokenizer_config.json": ["eos_token": "<|im_end|>", "chat_template": "[INST] {{ m }} [/INST]"]]).chatTemplate, .llama2)
    }

    func testDeclaredDType() throws {
        let model = tiny()
        var config = model.baseConfig
        config["torch_dtype"] = "bfloat16"
        XCTAssertEqual(try load(model, config).config.declaredDType, "bfloat16")
        config["torch_dtype"] = nil
        config["dtype"] = "float16"
        XCTAssertEqual(try load(model, config).config.declaredDType, "float16")
        config["dtype"] = "float8_e4m3fn"
        assertLoadFails(model, config, mentioning: ["dtype", "float8_e4m3fn"])
    }

    /// What the forward pass cannot do is refused by name, never silently defaulted.
    func testUnknownKeysAreErrorsNamingTheKey() throws {
        let model = tiny()
        var config = model.baseConfig
        config["rope_parameters"] = ["rope_type": "longrope", "rope_theta": 10000.0]
        assertLoadFails(model, config, mentioning: ["rope_type", "longrope"])
        config["rope_parameters"] = ["rope_type": "linear"]
        assertLoadFails(model, config, mentioning: ["factor"])
        config["rope_parameters"] = nil
        config["rope_scaling"] = ["rope_type": "dynamic", "factor": 2.0]
        assertLoadFails(model, config, mentioning: ["rope_scaling.rope_type", "dynamic"])
        config["rope_scaling"] = nil
        config["hidden_act"] = "gelu"
        assertLoadFails(model, config, mentioning: ["hidden_act", "gelu"])
        config["hidden_act"] = "silu"
        config["layer_types"] = ["full_attention", "sliding_attention"]
        assertLoadFails(model, config, mentioning: ["layer_types", "sliding_attention"])
        config["layer_types"] = nil
        config["model_type"] = "rwkv"
        assertLoadFails(model, config, mentioning: ["model_type", "rwkv"])
        config["model_type"] = "llama"
        config["rope_theta"] = "big"
        assertLoadFails(model, config, mentioning: ["rope_theta"])
    }
}

/// Float checkpoints quantized in memory as they load.
final class QuantizeOnLoadTests: XCTestCase {
    /// eval and kld load through `RunConfiguration.load`, which now applies quantize-on-load (they ignored it before),
    /// and a matrix row names it as `quantize_on_load`.
    func testRunConfigurationQuantizesOnLoad() throws {
        var tiny = TinyModel()
        tiny.randomize(seed: 32)
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        defer { try? FileManager.default.removeItem(at: folder) }
        let json = #"{"name": "q8", "model": "\#(folder.path)", "quantize_on_load": "q8_0", "kv_type": "f16"}"#
        let configuration = try JSONDecoder().decode(RunConfiguration.self, from: Data(json.utf8))
        XCTAssertEqual(configuration.quantizeOnLoad, .q8_0)
        let loaded = try configuration.load(pool: Shared.pool)
        XCTAssertEqual(Set(loaded.transformer.layers.flatMap { $0.linears.map(\.formatName) }), ["Q8_0"])
        XCTAssertEqual(loaded.kvCache.spec, .f16)
        let plain = try RunConfiguration(name: "float", model: folder.path).load(pool: Shared.pool)
        XCTAssertEqual(Set(plain.transformer.layers.flatMap { $0.linears.map(\.formatName) }), ["F32"])
        let bad = #"{"name": "x", "quantize_on_load": "q9_k"}"#
        XCTAssertThrowsError(try JSONDecoder().decode(RunConfiguration.self, from: Data(bad.utf8)))
    }

    func testFloatFolderQuantizedOnLoadStaysCloseToFloat() throws {
        var tiny = TinyModel()
        tiny.randomize(seed: 31)
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        defer { try? FileManager.default.removeItem(at: folder) }
        let float = try LoadedModel.load(path: folder.path)
        let q8 = try LoadedModel.load(path: folder.path, quantizeOnLoad: .q8_0)
        XCTAssertEqual(Set(q8.transformer.layers.flatMap { $0.linears.map(\.formatName) }), ["Q8_0"])
        XCTAssertEqual(q8.transformer.output.formatName, "Q8_0")
        let tokens = [5, 77, 200, 13, 250, 9, 42]
        func logits(_ m: LoadedModel) -> [Float] {
            let state = ForwardState(config: m.config, maxTokens: 16, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
            let row = m.transformer.forward(tokens, cache: m.makeCache(capacity: 32, maxBatch: 16), state: state).row(0)
            return Array(UnsafeBufferPointer(start: row, count: m.config.vocabularySize))
        }
        let a = logits(float), b = logits(q8)
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(worst, 0, "the weights really were quantized")
        XCTAssertLessThan(worst, 0.05, "Q8_0 moves logits of this model by little")
        // K-quants on load: Q4_K where rows are whole super-blocks, llama.cpp's Q5_0 fallback elsewhere.
        let q4k = try LoadedModel.load(path: folder.path, quantizeOnLoad: .q4_K)
        for op in q4k.transformer.layers.flatMap(\.linears) {
            XCTAssertEqual(op.formatName, op.inFeatures % 256 == 0 ? "Q4_K" : "Q5_0", "\(op.inFeatures) columns")
        }
        let c = logits(q4k), worstK = zip(a, c).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(worstK, worst, "4-5 bits lose more than 8")
        XCTAssertLessThan(worstK, 0.5)
    }
}
