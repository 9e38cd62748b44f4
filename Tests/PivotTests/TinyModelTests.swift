import Foundation
import XCTest
import Pivot
import PivotKernels

/// A tiny random Qwen2-shaped model (attention bias, GQA, rotate-half RoPE, untied head) written as a
/// HuggingFace folder, run by the engine and by a plain reference forward pass written here.
final class TinyModelTests: XCTestCase {
    let hidden = 64, ffn = 96, layers = 2, heads = 4, kvHeads = 2, vocab = 300, headDim = 16
    let theta: Float = 10000, eps: Float = 1e-6

    func testQwen2ShapedModelMatchesPlainReference() throws {
        var g = SplitMix64(seed: 5)
        func random(_ n: Int, _ scale: Float = 0.2) -> [Float] { (0..<n).map { _ in Float.random(in: -scale...scale, using: &g) } }
        var weights: [String: [Float]] = [:]
        var shapes: [String: [Int]] = [:]
        func add(_ name: String, _ shape: [Int], _ values: [Float]) { weights[name] = values; shapes[name] = shape }
        add("model.embed_tokens.weight", [vocab, hidden], random(vocab * hidden, 1))
        add("model.norm.weight", [hidden], random(hidden).map { 1 + $0 })
        add("lm_head.weight", [vocab, hidden], random(vocab * hidden))
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            add(p + "input_layernorm.weight", [hidden], random(hidden).map { 1 + $0 })
            add(p + "post_attention_layernorm.weight", [hidden], random(hidden).map { 1 + $0 })
            for (n, o) in [("q", heads * headDim), ("k", kvHeads * headDim), ("v", kvHeads * headDim)] {
                add(p + "self_attn.\(n)_proj.weight", [o, hidden], random(o * hidden))
                add(p + "self_attn.\(n)_proj.bias", [o], random(o))
            }
            add(p + "self_attn.o_proj.weight", [hidden, heads * headDim], random(hidden * heads * headDim))
            add(p + "mlp.gate_proj.weight", [ffn, hidden], random(ffn * hidden))
            add(p + "mlp.up_proj.weight", [ffn, hidden], random(ffn * hidden))
            add(p + "mlp.down_proj.weight", [hidden, ffn], random(hidden * ffn))
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-tiny-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try SafetensorsWriter.write(weights.keys.sorted().map { .init(name: $0, shape: shapes[$0]!, floats: weights[$0]!) },
                                    to: folder.appendingPathComponent("model.safetensors").path)
        let config: [String: Any] = ["model_type": "qwen2", "hidden_size": hidden, "intermediate_size": ffn,
                                     "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kvHeads,
                                     "rope_theta": Double(theta), "rms_norm_eps": Double(eps), "max_position_embeddings": 128,
                                     "tie_word_embeddings": false, "vocab_size": vocab]
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
        var vocabulary: [String: Int] = [:]
        for b in 0..<256 { vocabulary[String(ByteLevel.byteToScalar[b])] = b }
        let tokenizer: [String: Any] = ["model": ["type": "BPE", "vocab": vocabulary, "merges": [String]()],
                                        "added_tokens": [["id": 299, "content": "<|im_end|>", "special": true]],
                                        "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                                            ["type": "Split", "pattern": ["Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]],
                                            ["type": "ByteLevel"]]]]
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: folder.appendingPathComponent("tokenizer.json"))
        try JSONSerialization.data(withJSONObject: ["eos_token": "<|im_end|>"]).write(to: folder.appendingPathComponent("tokenizer_config.json"))

        let model = try LoadedModel.load(path: folder.path)
        XCTAssertTrue(model.config.attentionBias)
        XCTAssertFalse(model.config.tiedEmbeddings)
        XCTAssertEqual(model.tokenizer.kind, .byteLevel(.llama3(maxDigits: 1)))
        XCTAssertEqual(model.tokenizer.encode("hi<|im_end|>"), [104, 105, 299])

        let tokens = [5, 77, 200, 13, 250, 9, 42]
        let expected = referenceLogits(tokens, weights)
        // Prefill in one batch, then the same sequence token by token through the cache.
        let state = ForwardState(config: model.config, maxTokens: 16, allLogits: true, pool: ThreadPool(threads: 2))
        let all = model.transformer.forward(tokens, cache: model.makeCache(capacity: 32, maxBatch: 16), state: state, logits: .all)
        let cache = model.makeCache(capacity: 32, maxBatch: 16)
        for t in 0..<tokens.count {
            for v in 0..<vocab { XCTAssertEqual(all.row(t)[v], expected[t][v], accuracy: 1e-4, "prefill position \(t)") }
            let step = model.transformer.forward(token: tokens[t], cache: cache, state: state)
            for v in 0..<vocab { XCTAssertEqual(step.row(0)[v], expected[t][v], accuracy: 1e-4, "decode position \(t)") }
        }
    }

    /// llama2.c-style forward pass over plain arrays, HF layout (rotate-half RoPE), with biases.
    func referenceLogits(_ tokens: [Int], _ w: [String: [Float]]) -> [[Float]] {
        func matvec(_ name: String, _ x: [Float], rows: Int) -> [Float] {
            let m = w[name]!, cols = x.count
            return (0..<rows).map { r in (0..<cols).reduce(Float(0)) { $0 + m[r * cols + $1] * x[$1] } }
        }
        func norm(_ x: [Float], _ weight: String) -> [Float] {
            let rms = (x.reduce(0) { $0 + $1 * $1 } / Float(x.count) + eps).squareRoot()
            return x.indices.map { x[$0] / rms * w[weight]![$0] }
        }
        func rope(_ v: inout [Float], _ pos: Int) {
            for h in 0..<(v.count / headDim) { for i in 0..<(headDim / 2) {
                let f = Float(pos) / powf(theta, Float(2 * i) / Float(headDim))
                let a = h * headDim + i, b = a + headDim / 2
                let (x0, x1) = (v[a], v[b])
                v[a] = x0 * cosf(f) - x1 * sinf(f); v[b] = x0 * sinf(f) + x1 * cosf(f)
            } }
        }
        var keys = [[[Float]]](repeating: [], count: layers), values = keys
        var out: [[Float]] = []
        for (pos, token) in tokens.enumerated() {
            var x = Array(w["model.embed_tokens.weight"]![(token * hidden)..<((token + 1) * hidden)])
            for l in 0..<layers {
                let p = "model.layers.\(l)."
                let h = norm(x, p + "input_layernorm.weight")
                var q = zip(matvec(p + "self_attn.q_proj.weight", h, rows: heads * headDim), w[p + "self_attn.q_proj.bias"]!).map(+)
                var k = zip(matvec(p + "self_attn.k_proj.weight", h, rows: kvHeads * headDim), w[p + "self_attn.k_proj.bias"]!).map(+)
                let v = zip(matvec(p + "self_attn.v_proj.weight", h, rows: kvHeads * headDim), w[p + "self_attn.v_proj.bias"]!).map(+)
                rope(&q, pos); rope(&k, pos)
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
                let h2 = norm(x, p + "post_attention_layernorm.weight")
                let gate = matvec(p + "mlp.gate_proj.weight", h2, rows: ffn), up = matvec(p + "mlp.up_proj.weight", h2, rows: ffn)
                let act = (0..<ffn).map { gate[$0] / (1 + expf(-gate[$0])) * up[$0] }
                x = zip(x, matvec(p + "mlp.down_proj.weight", act, rows: hidden)).map(+)
            }
            out.append(matvec("lm_head.weight", norm(x, "model.norm.weight"), rows: vocab))
        }
        return out
    }
}
