import Foundation
import XCTest
import Pivot
import PivotKernels

/// A tiny random Llama-family model written as a HuggingFace folder, with a plain reference
/// forward pass (llama2.c style, HF rotate-half RoPE) that implements each config variant
/// independently of the engine: explicit head_dim, scaled RoPE frequencies, Qwen3 q/k norm,
/// SmolLM3 layers without RoPE, Q/K/V biases, tied or untied head.
struct TinyModel {
    var hidden = 64, ffn = 96, layers = 2, heads = 4, kvHeads = 2, vocab = 300
    var headDim = 16
    var theta = 10000.0
    /// The reference's inverse frequencies; nil: θ^(-2i/d).
    var inverseFrequencies: [Double]?
    var attentionFactor = 1.0
    var qkvBias = false
    var qkNorm = false
    var ropeLayers: [Bool]?
    var tied = false
    let eps: Float = 1e-6

    private(set) var weights: [String: [Float]] = [:]
    private(set) var shapes: [String: [Int]] = [:]

    /// Random weights for the current shape settings.
    mutating func randomize(seed: UInt64 = 5) {
        var g = SplitMix64(seed: seed)
        func random(_ n: Int, _ scale: Float = 0.2) -> [Float] { (0..<n).map { _ in Float.random(in: -scale...scale, using: &g) } }
        func add(_ name: String, _ shape: [Int], _ values: [Float]) { weights[name] = values; shapes[name] = shape }
        weights = [:]; shapes = [:]
        add("model.embed_tokens.weight", [vocab, hidden], random(vocab * hidden, 1))
        add("model.norm.weight", [hidden], random(hidden).map { 1 + $0 })
        if !tied { add("lm_head.weight", [vocab, hidden], random(vocab * hidden)) }
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            add(p + "input_layernorm.weight", [hidden], random(hidden).map { 1 + $0 })
            add(p + "post_attention_layernorm.weight", [hidden], random(hidden).map { 1 + $0 })
            for (n, o) in [("q", heads * headDim), ("k", kvHeads * headDim), ("v", kvHeads * headDim)] {
                add(p + "self_attn.\(n)_proj.weight", [o, hidden], random(o * hidden))
                if qkvBias { add(p + "self_attn.\(n)_proj.bias", [o], random(o)) }
            }
            if qkNorm {
                add(p + "self_attn.q_norm.weight", [headDim], random(headDim, 0.5).map { 1 + $0 })
                add(p + "self_attn.k_norm.weight", [headDim], random(headDim, 0.5).map { 1 + $0 })
            }
            add(p + "self_attn.o_proj.weight", [hidden, heads * headDim], random(hidden * heads * headDim))
            add(p + "mlp.gate_proj.weight", [ffn, hidden], random(ffn * hidden))
            add(p + "mlp.up_proj.weight", [ffn, hidden], random(ffn * hidden))
            add(p + "mlp.down_proj.weight", [hidden, ffn], random(hidden * ffn))
        }
    }

    /// Multiplies chosen entries of a weight (outlier channels, as real models have in their norms).
    mutating func amplify(_ name: String, indices: [Int], by factor: Float) {
        for i in indices { weights[name]![i] *= factor }
    }

    /// The config.json keys that describe the shape; variants add or replace keys.
    var baseConfig: [String: Any] {
        ["model_type": "llama", "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
         "num_attention_heads": heads, "num_key_value_heads": kvHeads, "rms_norm_eps": Double(eps),
         "max_position_embeddings": 128, "tie_word_embeddings": tied, "vocab_size": vocab]
    }

    /// Writes safetensors, config.json, a byte-level tokenizer.json and any extra JSON/text files.
    func writeFolder(config: [String: Any], extraFiles: [String: Any] = [:]) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-tiny-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try SafetensorsWriter.write(weights.keys.sorted().map { .init(name: $0, shape: shapes[$0]!, floats: weights[$0]!) },
                                    to: folder.appendingPathComponent("model.safetensors").path)
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
        var vocabulary: [String: Int] = [:]
        for b in 0..<256 { vocabulary[String(ByteLevel.byteToScalar[b])] = b }
        let tokenizer: [String: Any] = ["model": ["type": "BPE", "vocab": vocabulary, "merges": [String]()],
                                        "added_tokens": [["id": vocab - 1, "content": "<|im_end|>", "special": true]],
                                        "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                                            ["type": "Split", "pattern": ["Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]],
                                            ["type": "ByteLevel"]]]]
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: folder.appendingPathComponent("tokenizer.json"))
        var files = extraFiles
        if files["tokenizer_config.json"] == nil { files["tokenizer_config.json"] = ["eos_token": "<|im_end|>"] }
        for (name, content) in files {
            let url = folder.appendingPathComponent(name)
            if let text = content as? String { try text.write(to: url, atomically: true, encoding: .utf8) }
            else { try JSONSerialization.data(withJSONObject: content).write(to: url) }
        }
        return folder
    }

    /// A random tiny model (`hidden` × `ffn`) converted to an F32 GGUF inside its folder, for the
    /// quantization and training tests; remove `folder` when done.
    static func floatGGUF(hidden: Int, ffn: Int, seed: UInt64) throws -> (tiny: TinyModel, folder: URL, path: String) {
        var tiny = TinyModel()
        tiny.hidden = hidden; tiny.ffn = ffn
        tiny.randomize(seed: seed)
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        let path = folder.appendingPathComponent("f32.gguf").path
        try HuggingFaceConverter.convert(folder: folder.path, to: path, floatType: .f32)
        return (tiny, folder, path)
    }

    /// The model loaded from a folder written with `config` (the folder is removed afterwards:
    /// float weights are copied at load).
    func load(config: [String: Any], extraFiles: [String: Any] = [:]) throws -> LoadedModel {
        let folder = try writeFolder(config: config, extraFiles: extraFiles)
        defer { try? FileManager.default.removeItem(at: folder) }
        return try LoadedModel.load(path: folder.path)
    }

    /// Loads `config` through the engine and checks prefill and token-by-token decode against the reference.
    func assertEngineMatchesReference(config: [String: Any], extraFiles: [String: Any] = [:],
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try load(config: config, extraFiles: extraFiles)
        let tokens = [5, 77, 200, 13, 250, 9, 42, 100, 31, 7, 180, 66]
        let expected = referenceLogits(tokens)
        let state = ForwardState(config: model.config, maxTokens: 16, allLogits: true, execution: Execution(pool: ThreadPool(threads: 2)))
        let all = model.transformer.forward(tokens, cache: model.makeCache(capacity: 32, maxBatch: 16), state: state, logits: .all)
        let cache = model.makeCache(capacity: 32, maxBatch: 16)
        for t in 0..<tokens.count {
            var worst: Float = 0
            let step = model.transformer.forward(token: tokens[t], cache: cache, state: state)
            for v in 0..<vocab { worst = max(worst, abs(all.row(t)[v] - expected[t][v]), abs(step.row(0)[v] - expected[t][v])) }
            XCTAssertLessThan(worst, 1e-4, "position \(t): largest logit difference", file: file, line: line)
        }
    }

    func referenceLogits(_ tokens: [Int]) -> [[Float]] {
        let w = weights
        func matvec(_ name: String, _ x: [Float], rows: Int) -> [Float] {
            let m = w[name]!, cols = x.count
            return (0..<rows).map { r in (0..<cols).reduce(Float(0)) { $0 + m[r * cols + $1] * x[$1] } }
        }
        func norm(_ x: [Float], _ weight: [Float]) -> [Float] {
            let rms = (x.reduce(0) { $0 + $1 * $1 } / Float(x.count) + eps).squareRoot()
            return x.indices.map { x[$0] / rms * weight[$0] }
        }
        func headNorm(_ v: inout [Float], _ weight: String) {
            for h in 0..<(v.count / headDim) {
                let range = (h * headDim)..<((h + 1) * headDim)
                v.replaceSubrange(range, with: norm(Array(v[range]), w[weight]!))
            }
        }
        let inverse = inverseFrequencies ?? (0..<(headDim / 2)).map { pow(theta, -Double(2 * $0) / Double(headDim)) }
        func rope(_ v: inout [Float], _ pos: Int) {
            for h in 0..<(v.count / headDim) { for i in 0..<(headDim / 2) {
                let f = Double(pos) * inverse[i]
                let c = Float(cos(f) * attentionFactor), s = Float(sin(f) * attentionFactor)
                let a = h * headDim + i, b = a + headDim / 2
                let (x0, x1) = (v[a], v[b])
                v[a] = x0 * c - x1 * s; v[b] = x0 * s + x1 * c
            } }
        }
        func project(_ p: String, _ n: String, _ x: [Float], rows: Int) -> [Float] {
            let y = matvec(p + "self_attn.\(n)_proj.weight", x, rows: rows)
            return qkvBias ? zip(y, w[p + "self_attn.\(n)_proj.bias"]!).map(+) : y
        }
        var keys = [[[Float]]](repeating: [], count: layers), values = keys
        var out: [[Float]] = []
        for (pos, token) in tokens.enumerated() {
            var x = Array(w["model.embed_tokens.weight"]![(token * hidden)..<((token + 1) * hidden)])
            for l in 0..<layers {
                let p = "model.layers.\(l)."
                let h = norm(x, w[p + "input_layernorm.weight"]!)
                var q = project(p, "q", h, rows: heads * headDim), k = project(p, "k", h, rows: kvHeads * headDim)
                let v = project(p, "v", h, rows: kvHeads * headDim)
                if qkNorm { headNorm(&q, p + "self_attn.q_norm.weight"); headNorm(&k, p + "self_attn.k_norm.weight") }
                if ropeLayers?[l] ?? true { rope(&q, pos); rope(&k, pos) }
                keys[l].append(k); values[l].append(v)
                var attention = [Float](repeating: 0, count: heads * headDim)
                for head in 0..<heads {
                    let kv = head / (heads / kvHeads)
                    var s = (0...pos).map { j in (0..<headDim).reduce(Float(0)) { $0 + q[head * headDim + $1] * keys[l][j][kv * headDim + $1] } / Float(headDim).squareRoot() }
                    let m = s.max()!
                    s = s.map { expf($0 - m) }
                    let total = s.reduce(0, +)
                    for i in 0..<headDim { attention[head * headDim + i] = (0...pos).reduce(Float(0)) { $0 + s[$1] / total * values[l][$1][kv * headDim + i] } }
                }
                x = zip(x, matvec(p + "self_attn.o_proj.weight", attention, rows: hidden)).map(+)
                let h2 = norm(x, w[p + "post_attention_layernorm.weight"]!)
                let gate = matvec(p + "mlp.gate_proj.weight", h2, rows: ffn), up = matvec(p + "mlp.up_proj.weight", h2, rows: ffn)
                let act = (0..<ffn).map { gate[$0] / (1 + expf(-gate[$0])) * up[$0] }
                x = zip(x, matvec(p + "mlp.down_proj.weight", act, rows: hidden)).map(+)
            }
            out.append(matvec(tied ? "model.embed_tokens.weight" : "lm_head.weight", norm(x, w["model.norm.weight"]!), rows: vocab))
        }
        return out
    }
}
