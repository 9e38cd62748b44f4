import Foundation
import PivotKernels

/// HF folder → GGUF as llama.cpp's `convert_hf_to_gguf.py` writes it: llama.cpp's metadata keys and
/// tensor names, Llama/Mistral Q/K rows permuted for pairwise RoPE (Qwen keeps the rotate-half
/// order), the byte-level BPE vocabulary with merges, token types, BOS/EOS and the chat template.
/// Projections are written in `floatType` (F32, F16 or BF16), norms and biases F32; quantized types
/// go through `QuantizePipeline` from that file.
public enum HuggingFaceConverter {
    /// Writes `folder`'s model to `output`; returns the tensor count.
    @discardableResult
    public static func convert(folder: String, to output: String, floatType: TensorType = .f16) throws -> Int {
        guard [.f32, .f16, .bf16].contains(floatType) else { throw PivotError.invalidArgument("convert writes F32, F16 or BF16 projections") }
        let model = try LoadedModel.load(path: folder)
        let c = model.config
        let configJSON = try HuggingFaceLoader.readJSON((folder as NSString).appendingPathComponent("config.json"))
        let modelType = configJSON["model_type"] as? String ?? "llama"
        let arch: String
        switch modelType {
        case "llama", "mistral", "smollm3": arch = "llama"
        case "qwen2", "qwen3": arch = modelType
        default: throw PivotError.unsupported(file: folder, "model_type '\(modelType)' for GGUF conversion (supported: llama, mistral, qwen2, qwen3)")
        }
        if c.ropeLayers != nil { throw PivotError.unsupported(file: folder, "layers without RoPE (no_rope_layers) have no GGUF key llama.cpp reads") }
        let metadata = try self.metadata(model: model, arch: arch, folder: folder, floatType: floatType)

        let store = try SafetensorsStore(directory: folder)
        var owners: [[UInt8]] = []
        var tensors: [(name: String, type: TensorType, shape: [Int], index: Int)] = []
        func add(_ hfName: String, as ggufName: String, permuteHeads: Int? = nil, keepF32: Bool = false, required: Bool = true) throws {
            guard let t = store.tensor(named: hfName) else {
                if required { throw PivotError.malformed(file: folder, "tensor '\(hfName)' is missing") }
                return
            }
            var values = t.toFloats()
            if let heads = permuteHeads { values = permuteForPairwiseRoPE(values, heads: heads, rows: t.shape[0], columns: t.shape[1]) }
            let type: TensorType = keepF32 || t.shape.count == 1 ? .f32 : floatType
            owners.append(type.littleEndianBytes(of: values))
            tensors.append((ggufName, type, t.shape, owners.count - 1))
        }
        try add("model.embed_tokens.weight", as: "token_embd.weight")
        if !c.tiedEmbeddings { try add("lm_head.weight", as: "output.weight") }
        try add("model.norm.weight", as: "output_norm.weight")
        if case .llama3 = c.ropeScaling {
            owners.append(TensorType.f32.littleEndianBytes(of: try frequencyFactors(c)))
            tensors.append(("rope_freqs.weight", .f32, [c.headDim / 2], owners.count - 1))
        }
        let pairwise = arch == "llama"
        for i in 0..<c.layerCount {
            let p = "model.layers.\(i).", b = "blk.\(i)."
            try add(p + "input_layernorm.weight", as: b + "attn_norm.weight")
            try add(p + "self_attn.q_proj.weight", as: b + "attn_q.weight", permuteHeads: pairwise ? c.headCount : nil)
            try add(p + "self_attn.k_proj.weight", as: b + "attn_k.weight", permuteHeads: pairwise ? c.kvHeadCount : nil)
            try add(p + "self_attn.v_proj.weight", as: b + "attn_v.weight")
            try add(p + "self_attn.o_proj.weight", as: b + "attn_output.weight")
            if c.attentionBias {
                for (hf, gg) in [("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v")] {
                    try add(p + "self_attn.\(hf)_proj.bias", as: b + gg + ".bias", required: true)
                }
            }
            if c.outputBias { try add(p + "self_attn.o_proj.bias", as: b + "attn_output.bias") }
            if c.queryKeyNorm {
                try add(p + "self_attn.q_norm.weight", as: b + "attn_q_norm.weight")
                try add(p + "self_attn.k_norm.weight", as: b + "attn_k_norm.weight")
            }
            try add(p + "post_attention_layernorm.weight", as: b + "ffn_norm.weight")
            try add(p + "mlp.gate_proj.weight", as: b + "ffn_gate.weight")
            try add(p + "mlp.up_proj.weight", as: b + "ffn_up.weight")
            try add(p + "mlp.down_proj.weight", as: b + "ffn_down.weight")
        }
        try withBuffers(owners) { buffers in
            try GGUFWriter.write(metadata: metadata, tensors: tensors.map {
                GGUFWriter.Tensor(name: $0.name, ggmlType: $0.type.ggmlType, shape: $0.shape, bytes: buffers[$0.index])
            }, to: output)
        }
        return tensors.count
    }

    /// llama.cpp's `permute`: within each head, row 2i+j (pairwise) takes HF row j·d/2 + i (halves).
    static func permuteForPairwiseRoPE(_ w: [Float], heads: Int, rows: Int, columns: Int) -> [Float] {
        var out = w
        let d = rows / heads
        for h in 0..<heads {
            for i in 0..<(d / 2) {
                for j in 0..<2 {
                    let pairwise = h * d + 2 * i + j, halves = h * d + j * (d / 2) + i
                    for k in 0..<columns { out[pairwise * columns + k] = w[halves * columns + k] }
                }
            }
        }
        return out
    }

    /// Per rotary pair, base frequency over scaled frequency: `rope_freqs.weight` (Llama 3.1/3.2).
    static func frequencyFactors(_ c: ModelConfig) throws -> [Float] {
        let base = RoPEScaling.none.frequencies(headDim: c.headDim, theta: Double(c.ropeTheta)).0
        let scaled = c.ropeScaling.frequencies(headDim: c.headDim, theta: Double(c.ropeTheta)).0
        return zip(base, scaled).map { Float($0 / $1) }
    }

    private static func withBuffers(_ owners: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) throws -> Void) throws {
        var pointers: [UnsafeRawBufferPointer] = []
        func nest(_ i: Int) throws {
            if i == owners.count { try body(pointers); return }
            try owners[i].withUnsafeBytes { pointers.append($0); try nest(i + 1) }
        }
        try nest(0)
    }
}

extension HuggingFaceConverter {
    /// llama.cpp's metadata for `model` (keys as `convert_hf_to_gguf.py` writes them).
    static func metadata(model: LoadedModel, arch: String, folder: String, floatType: TensorType) throws -> [GGUFMetadataEntry] {
        let c = model.config, t = model.tokenizer
        func u32(_ key: String, _ v: Int) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .uint(UInt64(v)), type: 4) }
        func f32(_ key: String, _ v: Double) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .float(v), type: 6) }
        func str(_ key: String, _ v: String) -> GGUFMetadataEntry { GGUFMetadataEntry(key, .string(v), type: 8) }
        var m: [GGUFMetadataEntry] = [
            str("general.architecture", arch), str("general.type", "model"),
            str("general.name", (folder as NSString).lastPathComponent),
            u32("\(arch).block_count", c.layerCount), u32("\(arch).context_length", c.contextLength),
            u32("\(arch).embedding_length", c.hiddenSize), u32("\(arch).feed_forward_length", c.intermediateSize),
            u32("\(arch).attention.head_count", c.headCount), u32("\(arch).attention.head_count_kv", c.kvHeadCount),
            f32("\(arch).rope.freq_base", Double(c.ropeTheta)),
            f32("\(arch).attention.layer_norm_rms_epsilon", Double(c.rmsNormEpsilon)),
            u32("general.file_type", floatType == .f32 ? 0 : floatType == .f16 ? 1 : 32),
            u32("\(arch).vocab_size", c.vocabularySize), u32("\(arch).rope.dimension_count", c.headDim),
        ]
        if c.headDim * c.headCount != c.hiddenSize {
            m += [u32("\(arch).attention.key_length", c.headDim), u32("\(arch).attention.value_length", c.headDim)]
        }
        switch c.ropeScaling {
        case .none, .llama3: break
        case .linear(let factor): m += [str("\(arch).rope.scaling.type", "linear"), f32("\(arch).rope.scaling.factor", factor)]
        default: throw PivotError.unsupported(file: folder, "this RoPE scaling (\(c.ropeScaling)) for GGUF conversion (supported: none, linear, llama3)")
        }
        guard case .byteLevel(let pre) = t.kind else {
            throw PivotError.unsupported(file: folder, "SentencePiece tokenizers for GGUF conversion (byte-level BPE only)")
        }
        let preName: String
        switch pre {
        case .gpt2(let digits): preName = digits ? "smollm" : "gpt-2"
        case .llama3(let digits): preName = digits == 3 ? "llama-bpe" : "qwen2"
        }
        let specials = Set(t.specialTokens)
        let merges = t.merges.sorted { $0.value.rank < $1.value.rank }.map { key, _ in
            "\(t.tokens[Int(key >> 32)]) \(t.tokens[Int(key & 0xFFFF_FFFF)])"
        }
        m += [
            GGUFMetadataEntry("tokenizer.ggml.add_bos_token", .bool(t.addBOS), type: 7),
            str("tokenizer.ggml.model", "gpt2"), str("tokenizer.ggml.pre", preName),
            GGUFMetadataEntry("tokenizer.ggml.tokens", .array(t.tokens.map { .string($0) }), type: 9, itemType: 8),
            GGUFMetadataEntry("tokenizer.ggml.token_type", .array(t.tokens.map { .int(specials.contains($0) ? 3 : 1) }), type: 9, itemType: 5),
            GGUFMetadataEntry("tokenizer.ggml.merges", .array(merges.map { .string($0) }), type: 9, itemType: 8),
        ]
        if let bos = t.bos { m.append(u32("tokenizer.ggml.bos_token_id", bos)) }
        if let eos = t.eos ?? t.stopTokens.min() { m.append(u32("tokenizer.ggml.eos_token_id", eos)) }
        if let template = t.chatTemplate { m.append(str("tokenizer.chat_template", template)) }
        return m
    }
}
