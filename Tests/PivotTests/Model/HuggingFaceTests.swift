import Foundation
import XCTest
import Pivot
import PivotKernels

/// Converts the real GGUF model into a HuggingFace folder as transformers 5 writes it (sharded
/// safetensors, F16 projections, Q/K un-permuted to the rotate-half layout, tokenizer.json,
/// `rope_parameters` instead of `rope_theta`, `chat_template.jinja`) and checks it runs identically.
final class HuggingFaceTests: XCTestCase {
    func testHuggingFaceFolderMatchesGGUF() throws {
        let model = try Shared.model()
        let gguf = try GGUFFile(path: model.path)
        let c = model.config
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-hf-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        // Weights: GGUF llama Q/K rows are permuted for pairwise RoPE; HF's are not.
        func unpermute(_ w: [Float], heads: Int, rows: Int, columns: Int) -> [Float] {
            var out = w
            let d = rows / heads
            for h in 0..<heads { for i in 0..<(d / 2) { for j in 0..<2 {
                let hf = h * d + j * (d / 2) + i, gg = h * d + 2 * i + j
                for k in 0..<columns { out[hf * columns + k] = w[gg * columns + k] }
            } } }
            return out
        }
        var shards: [[SafetensorsWriter.Entry]] = [[], []]
        var weightMap: [String: String] = [:]
        func add(_ name: String, _ tensor: TensorData, dtype: String, heads: Int? = nil) {
            var values = tensor.toFloats()
            if let heads { values = unpermute(values, heads: heads, rows: tensor.shape[0], columns: tensor.shape[1]) }
            let shard = name.contains("layers.") && Int(name.split(separator: ".")[2])! >= c.layerCount / 2 ? 1 : 0
            shards[shard].append(.init(name: name, shape: tensor.shape, floats: values, dtype: dtype))
            weightMap[name] = "model-0000\(shard + 1)-of-00002.safetensors"
        }
        add("model.embed_tokens.weight", gguf.tensors["token_embd.weight"]!, dtype: "F32")
        add("model.norm.weight", gguf.tensors["output_norm.weight"]!, dtype: "F32")
        let names = [("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
                     ("attn_output", "self_attn.o_proj"), ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                     ("ffn_down", "mlp.down_proj"), ("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")]
        for i in 0..<c.layerCount {
            for (g, h) in names {
                let heads = g == "attn_q" ? c.headCount : g == "attn_k" ? c.kvHeadCount : nil
                add("model.layers.\(i).\(h).weight", gguf.tensors["blk.\(i).\(g).weight"]!, dtype: g == "attn_v" && i % 2 == 1 ? "F16" : "F32", heads: heads)
            }
        }
        for (index, entries) in shards.enumerated() {
            try SafetensorsWriter.write(entries, to: folder.appendingPathComponent("model-0000\(index + 1)-of-00002.safetensors").path)
        }
        let index: [String: Any] = ["metadata": ["total_size": 0], "weight_map": weightMap]
        try JSONSerialization.data(withJSONObject: index).write(to: folder.appendingPathComponent("model.safetensors.index.json"))
        let config: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.hiddenSize,
            "intermediate_size": c.intermediateSize, "num_hidden_layers": c.layerCount, "num_attention_heads": c.headCount,
            "num_key_value_heads": c.kvHeadCount, "rms_norm_eps": Double(c.rmsNormEpsilon),
            "rope_parameters": ["rope_theta": Double(c.ropeTheta), "rope_type": "default"], "dtype": "bfloat16",
            "max_position_embeddings": c.contextLength, "tie_word_embeddings": true, "vocab_size": c.vocabularySize,
        ]
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))

        // Tokenizer: the same vocabulary and merges, SmolLM's pre-tokenizer, special tokens as added tokens.
        let tokens = gguf.metadata["tokenizer.ggml.tokens"]!.array!.map { $0.string! }
        let types = gguf.metadata["tokenizer.ggml.token_type"]!.array!.map { $0.int! }
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { vocab[t] = i }
        let added = types.enumerated().filter { $0.element == 3 }.map { ["id": $0.offset, "content": tokens[$0.offset], "special": true] as [String: Any] }
        let tokenizer: [String: Any] = [
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                ["type": "Digits", "individual_digits": true],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]]],
            "model": ["type": "BPE", "vocab": vocab, "merges": gguf.metadata["tokenizer.ggml.merges"]!.array!.map { $0.string! }],
        ]
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: folder.appendingPathComponent("tokenizer.json"))
        let tokenizerConfig: [String: Any] = ["bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false]
        try JSONSerialization.data(withJSONObject: tokenizerConfig).write(to: folder.appendingPathComponent("tokenizer_config.json"))
        try gguf.metadata["tokenizer.chat_template"]!.string!.write(to: folder.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)

        let hf = try LoadedModel.load(path: folder.path)
        XCTAssertEqual(hf.config.ropeInterleaved, false)
        XCTAssertEqual(hf.config.ropeTheta, 100_000, "rope_parameters.rope_theta, not the 10000 default")
        XCTAssertEqual(hf.config.layerCount, c.layerCount)
        XCTAssertEqual(hf.chatTemplate, model.chatTemplate)
        let prompts = ["The capital of France is", "Once upon a time, there was a little robot who", "def fibonacci(n):\n    "]
        let floatState = ForwardState(config: c, maxTokens: 32, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
        for text in prompts {
            let ids = model.tokenizer.encode(text)
            XCTAssertEqual(hf.tokenizer.encode(text), ids, "tokenizer.json encodes like the GGUF vocabulary")
            XCTAssertEqual(hf.tokenizer.decode(ids), text)
            let expected = Array(UnsafeBufferPointer(start: model.transformer.forward(ids, cache: model.makeCache(capacity: 64, maxBatch: 32),
                                                                                     state: floatState).row(0), count: c.vocabularySize))
            let state = ForwardState(config: hf.config, maxTokens: 32, allLogits: false, execution: Execution(pool: Shared.pool))
            let logits = hf.transformer.forward(ids, cache: hf.makeCache(capacity: 64, maxBatch: 32), state: state)
            let row = Array(UnsafeBufferPointer(start: logits.row(0), count: c.vocabularySize))
            XCTAssertEqual(Array(row.indices.sorted { row[$0] > row[$1] }.prefix(10)), Array(expected.indices.sorted { expected[$0] > expected[$1] }.prefix(10)))
            var worst: Float = 0
            for i in 0..<c.vocabularySize { worst = max(worst, abs(row[i] - expected[i])) }
            // F16-rounded v_proj in half the layers is the only difference.
            XCTAssertLessThan(worst, 1e-2, "largest logit difference for \(text.debugDescription)")
        }
        if let reference = try? Shared.reference() {
            XCTAssertEqual(hf.tokenizer.encode(reference.chat_template_text), reference.chat_template_ids)
        }
        // `pivot convert`: the folder back to GGUF. The vocabulary, merges, token types and template are the
        // original file's; the Q/K permutation round-trips, so the logits are the folder's.
        let converted = folder.appendingPathComponent("converted.gguf").path
        try HuggingFaceConverter.convert(folder: folder.path, to: converted, floatType: .f32)
        let back = try GGUFFile(path: converted)
        for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"] {
            XCTAssertEqual("\(back.metadata[key]!)", "\(gguf.metadata[key]!)", key)
        }
        for key in ["tokenizer.ggml.pre", "tokenizer.ggml.model", "tokenizer.chat_template", "general.architecture"] {
            XCTAssertEqual(back.metadata[key]?.string, gguf.metadata[key]?.string, key)
        }
        for key in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "llama.block_count", "llama.attention.head_count_kv",
                    "llama.rope.dimension_count", "llama.context_length", "llama.vocab_size"] {
            XCTAssertEqual(back.metadata[key]?.int, gguf.metadata[key]?.int, key)
        }
        XCTAssertEqual(back.metadata["llama.rope.freq_base"]?.double, gguf.metadata["llama.rope.freq_base"]?.double)
        XCTAssertEqual(back.tensors["blk.3.attn_k.weight"]!.toFloats(), gguf.tensors["blk.3.attn_k.weight"]!.toFloats(), "Q/K permuted back exactly")
        let reloaded = try LoadedModel.load(path: converted)
        XCTAssertEqual(reloaded.config, model.config)
        let ids = model.tokenizer.encode(prompts[1])
        XCTAssertEqual(reloaded.tokenizer.encode(prompts[1]), ids)
        let state = ForwardState(config: c, maxTokens: 32, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
        let expected = Array(UnsafeBufferPointer(start: hf.transformer.forward(ids, cache: hf.makeCache(capacity: 64, maxBatch: 32), state: state).row(0), count: c.vocabularySize))
        let row = Array(UnsafeBufferPointer(start: reloaded.transformer.forward(ids, cache: reloaded.makeCache(capacity: 64, maxBatch: 32), state: state).row(0), count: c.vocabularySize))
        var worst: Float = 0
        for i in 0..<c.vocabularySize { worst = max(worst, abs(row[i] - expected[i])) }
        XCTAssertLessThan(worst, 1e-3, "converted GGUF against the folder it came from")

        // Damage: a missing tensor in the index is reported by name.
        var broken = weightMap
        broken["model.layers.0.mlp.up_proj.weight"] = nil
        broken["model.layers.99.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
        try JSONSerialization.data(withJSONObject: ["weight_map": broken]).write(to: folder.appendingPathComponent("model.safetensors.index.json"))
        XCTAssertThrowsError(try LoadedModel.load(path: folder.path)) { XCTAssertTrue("\($0)".contains("model.layers.99.mlp.up_proj.weight"), "\($0)") }
    }
}
