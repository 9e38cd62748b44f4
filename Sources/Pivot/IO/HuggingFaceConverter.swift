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
        guard let family = ModelFamily.huggingFace(c.architecture), let arch = family.convertsTo(c) else {
            throw PivotError.unsupported(file: folder, "model_type '\(c.architecture)' for GGUF conversion")
        }
        if let why = family.unconvertible(c) { throw PivotError.unsupported(file: folder, "GGUF conversion: " + why) }
        if c.ropeLayers != nil { throw PivotError.unsupported(file: folder, "layers without RoPE (no_rope_layers) have no GGUF key llama.cpp reads") }
        let metadata = try self.metadata(model: model, arch: arch, folder: folder, floatType: floatType)
            + family.ggufMetadata(c, arch)

        let store = try SafetensorsStore(directory: folder)
        let hf = family.huggingFaceNames(for: c), gg = family.ggufNames(for: c)
        var owners: [[UInt8]] = []
        var tensors: [(name: String, type: TensorType, shape: [Int], index: Int)] = []
        func floats(_ name: String) throws -> (values: [Float], shape: [Int]) { try Self.floats(store, name, folder: folder) }
        /// `type` nil: the float type, but for vectors (norms, biases, the shared-expert gate) and routers, which
        /// stay F32 as llama.cpp's converter keeps them.
        func emit(_ name: String, _ values: [Float], _ shape: [Int], as type: TensorType?) {
            let type: TensorType = type ?? (shape.count == 1 || name.hasSuffix(gg.mixture.router + ".weight") ? .f32 : floatType)
            owners.append(type.littleEndianBytes(of: values))
            tensors.append((name, type, shape, owners.count - 1))
        }
        func emit(_ name: String, _ values: [Float], _ shape: [Int]) { emit(name, values, shape, as: nil) }
        func add(_ hfName: String, as ggufName: String, permuteHeads: Int? = nil, offset: Float = 0) throws {
            var (values, shape) = try floats(hfName)
            if let heads = permuteHeads { values = permuteForPairwiseRoPE(values, heads: heads, rows: shape[0], columns: shape[1]) }
            if offset != 0 { values = values.map { $0 + offset } }
            emit(ggufName, values, shape)
        }
        /// A norm (with its bias in LayerNorm families); Gemma's stored w becomes the scale 1 + w, as llama.cpp's converter writes it.
        func norm(_ hfName: String, as ggufName: String) throws {
            try add(hfName, as: ggufName, offset: family.huggingFaceNormOffset)
            let bias = TensorNaming.bias(of: hfName)
            if c.variant.norm == .layer, store.tensor(named: bias) != nil { try add(bias, as: TensorNaming.bias(of: ggufName)) }
        }
        try add(hf.embedding, as: gg.embedding)
        if !c.tiedEmbeddings { try add(hf.output + ".weight", as: gg.output + ".weight") }
        try norm(hf.finalNorm, as: gg.finalNorm)
        if case .llama3 = c.ropeScaling {
            owners.append(TensorType.f32.littleEndianBytes(of: try frequencyFactors(c)))
            tensors.append(("rope_freqs.weight", .f32, [c.rotaryDimensions / 2], owners.count - 1))
        }
        if case let .longRoPE(short, long, _, _, _) = c.ropeScaling {
            emit("rope_factors_long.weight", long, [long.count], as: .f32)
            emit("rope_factors_short.weight", short, [short.count], as: .f32)
        }
        let pairwise = arch == "llama"
        for i in 0..<c.layerCount {
            let p = hf.layerPrefix(i), b = gg.layerPrefix(i)
            if c.variant.inputNorms { try norm(p + hf.attentionNorm, as: b + gg.attentionNorm) }
            if let layout = c.stateSpace {
                try convertStateSpace(layout, hf: hf.stateSpace, gg: gg.stateSpace, prefix: p, to: b, store: store, folder: folder) { emit($0, $1, $2, as: $3) }
                continue
            }
            // Q, K, V (and their biases) as separate row blocks, whatever the checkpoint's layout.
            for suffix in c.attentionBias ? [".weight", ".bias"] : [".weight"] {
                let parts = try attentionRows(store: store, prefix: p, layout: hf.qkv, names: hf, suffix: suffix, config: c, folder: folder)
                let q = pairwise && suffix == ".weight" ? permuteForPairwiseRoPE(parts.q, heads: c.headCount, rows: c.queryWidth, columns: c.hiddenSize) : parts.q
                let k = pairwise && suffix == ".weight" ? permuteForPairwiseRoPE(parts.k, heads: c.kvHeadCount, rows: c.kvWidth, columns: c.hiddenSize) : parts.k
                let columns = suffix == ".weight" ? [c.hiddenSize] : []
                if let fused = gg.qkv.fusedName {
                    // llama.cpp's attn_qkv is always [q; k; v].
                    emit(b + fused + suffix, q + k + parts.v, [c.queryWidth + 2 * c.kvWidth] + columns)
                } else {
                    emit(b + gg.query + suffix, q, [c.queryWidth] + columns)
                    emit(b + gg.key + suffix, k, [c.kvWidth] + columns)
                    emit(b + gg.value + suffix, parts.v, [c.kvWidth] + columns)
                }
            }
            try add(p + hf.attentionOutput + ".weight", as: b + gg.attentionOutput + ".weight")
            if c.outputBias { try add(p + hf.attentionOutput + ".bias", as: b + gg.attentionOutput + ".bias") }
            if c.queryKeyNorm, let stems = hf.perHeadNormStems {
                // StableLM's per-head norms, stacked as llama.cpp's [heads, headDim] tensors.
                for (stem, target, heads) in [(stems.query, gg.queryNorm, c.headCount), (stems.key, gg.keyNorm, c.kvHeadCount)] {
                    emit(b + target, try (0..<heads).flatMap { try floats(p + stem + "\($0).weight").values }, [heads, c.headDim])
                }
            } else if c.queryKeyNorm {
                try norm(p + hf.queryNorm, as: b + gg.queryNorm)
                try norm(p + hf.keyNorm, as: b + gg.keyNorm)
            }
            if c.variant.outputNorms, let post = hf.postAttentionNorm, let ggPost = gg.postAttentionNorm {
                try norm(p + post, as: b + ggPost)
            }
            if c.variant.inputNorms && !c.variant.sharedNorm { try norm(p + hf.mlpNorm, as: b + gg.mlpNorm) }
            if c.variant.outputNorms, let post = hf.postMLPNorm, let ggPost = gg.postMLPNorm { try norm(p + post, as: b + ggPost) }
            let biases = c.variant.mlpBias ? [".weight", ".bias"] : [".weight"]
            if let layout = c.experts, layout.routes(layer: i) {
                try convertMixture(layout, hf: hf.mixture, gg: gg.mixture, prefix: p, to: b, config: c, store: store, folder: folder, emit: emit)
                continue
            }
            if c.variant.gatedMLP {
                for suffix in biases {
                    let columns = suffix == ".weight" ? [c.hiddenSize] : []
                    let gate: [Float], up: [Float]
                    if let fused = hf.fusedGateUp {
                        let both = try floats(p + fused + suffix).values
                        let half = both.count / 2
                        (gate, up) = (Array(both[..<half]), Array(both[half...]))
                    } else {
                        (gate, up) = (try floats(p + hf.gate + suffix).values, try floats(p + hf.up + suffix).values)
                    }
                    if let fused = gg.fusedGateUp {
                        emit(b + fused + suffix, gate + up, [2 * c.intermediateSize] + columns)
                    } else {
                        emit(b + gg.gate + suffix, gate, [c.intermediateSize] + columns)
                        emit(b + gg.up + suffix, up, [c.intermediateSize] + columns)
                    }
                }
            } else {
                for suffix in biases { try add(p + hf.up + suffix, as: b + gg.up + suffix) }
            }
            for suffix in biases { try add(p + hf.down + suffix, as: b + gg.down + suffix) }
        }
        try withBuffers(owners) { buffers in
            try GGUFWriter.write(metadata: metadata, tensors: tensors.map {
                GGUFWriter.Tensor(name: $0.name, ggmlType: $0.type.ggmlType, shape: $0.shape, bytes: buffers[$0.index])
            }, to: output)
        }
        return tensors.count
    }

    /// A layer's router, experts stacked into llama.cpp's [experts, out, in] tensors, and shared expert.
    static func convertMixture(_ layout: ExpertLayout, hf: MixtureNaming, gg: MixtureNaming, prefix p: String, to b: String, config c: ModelConfig,
                               store: TensorStore, folder: String, emit: (String, [Float], [Int]) -> Void) throws {
        func read(_ name: String) throws -> [Float] { try floats(store, name, folder: folder).values }
        emit(b + gg.router + ".weight", try read(p + hf.router + ".weight"), [layout.count, c.hiddenSize])
        guard case .perExpert(let stem, let g, let u, let d) = hf.experts, case .stacked(let gg1, let gg2, let gg3) = gg.experts else {
            throw PivotError.unsupported(file: folder, "expert tensors in this layout")
        }
        let w = layout.intermediateSize
        for (name, target, shape) in [(g, gg1, [layout.count, w, c.hiddenSize]), (u, gg2, [layout.count, w, c.hiddenSize]), (d, gg3, [layout.count, c.hiddenSize, w])] {
            var stacked: [Float] = []
            for e in 0..<layout.count { stacked += try read(p + stem + "\(e)." + name + ".weight") }
            emit(b + target + ".weight", stacked, shape)
        }
        if let sw = layout.sharedIntermediateSize {
            emit(b + gg.sharedGate + ".weight", try read(p + hf.sharedGate + ".weight"), [sw, c.hiddenSize])
            emit(b + gg.sharedUp + ".weight", try read(p + hf.sharedUp + ".weight"), [sw, c.hiddenSize])
            emit(b + gg.sharedDown + ".weight", try read(p + hf.sharedDown + ".weight"), [c.hiddenSize, sw])
            // llama.cpp's shared-expert gate is a vector of the hidden width.
            emit(b + gg.sharedExpertGate + ".weight", try read(p + hf.sharedExpertGate + ".weight"), [c.hiddenSize])
        }
    }

    /// One layer's Q, K and V rows (`.weight` or `.bias`) from separate tensors or either fused layout.
    static func attentionRows(store: TensorStore, prefix p: String, layout: QKVLayout, names: TensorNaming, suffix: String,
                              config c: ModelConfig, folder: String) throws -> (q: [Float], k: [Float], v: [Float]) {
        func read(_ name: String) throws -> [Float] { try floats(store, p + name + suffix, folder: folder).values }
        guard let fused = layout.fusedName, let rows = layout.rows(c) else {
            return (try read(names.query), try read(names.key), try read(names.value))
        }
        // A fused tensor's rows regrouped into q, k and v.
        let all = try read(fused), columns = suffix == ".weight" ? c.hiddenSize : 1
        func gather(_ ids: [Int]) -> [Float] { ids.flatMap { all[($0 * columns)..<(($0 + 1) * columns)] } }
        return (gather(rows.q), gather(rows.k), gather(rows.v))
    }

    /// A tensor of the folder as floats, or the error naming it.
    static func floats(_ store: TensorStore, _ name: String, folder: String) throws -> (values: [Float], shape: [Int]) {
        guard let t = store.tensor(named: name) else { throw PivotError.malformed(file: folder, "tensor '\(name)' is missing") }
        return (t.toFloats(), t.shape)
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
        let base = RoPEScaling.none.frequencies(headDim: c.rotaryDimensions, theta: Double(c.ropeTheta)).0
        let scaled = c.ropeScaling.frequencies(headDim: c.rotaryDimensions, theta: Double(c.ropeTheta)).0
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
        // LongRoPE caps Pivot's context at the original one; the file keeps the trained context, as llama.cpp's converter writes it.
        var trainedContext = c.contextLength
        if case let .longRoPE(_, _, _, _, context) = c.ropeScaling { trainedContext = context }
        var m: [GGUFMetadataEntry] = [
            str("general.architecture", arch), str("general.type", "model"),
            str("general.name", (folder as NSString).lastPathComponent),
            u32("\(arch).block_count", c.layerCount), u32("\(arch).context_length", trainedContext),
            u32("\(arch).embedding_length", c.hiddenSize), u32("\(arch).feed_forward_length", c.intermediateSize),
            u32("\(arch).attention.head_count", c.headCount), u32("\(arch).attention.head_count_kv", c.kvHeadCount),
            f32("\(arch).rope.freq_base", Double(c.ropeTheta)),
            f32(c.variant.norm == .layer ? "\(arch).attention.layer_norm_epsilon" : "\(arch).attention.layer_norm_rms_epsilon", Double(c.rmsNormEpsilon)),
            u32("general.file_type", floatType == .f32 ? 0 : floatType == .f16 ? 1 : 32),
            u32("\(arch).vocab_size", c.vocabularySize), u32("\(arch).rope.dimension_count", c.rotaryDimensions),
        ]
        if c.headCount > 0 && c.headDim * c.headCount != c.hiddenSize {
            m += [u32("\(arch).attention.key_length", c.headDim), u32("\(arch).attention.value_length", c.headDim)]
        }
        switch c.ropeScaling {
        case .none, .llama3: break
        case .linear(let factor): m += [str("\(arch).rope.scaling.type", "linear"), f32("\(arch).rope.scaling.factor", factor)]
        case let .longRoPE(_, _, original, attention, _):
            // llama.cpp reads rope_factors_long/short for these architectures only.
            guard ["phi3", "llama"].contains(arch) else {
                throw PivotError.unsupported(file: folder, "LongRoPE for GGUF conversion of \(arch) (llama.cpp reads its factors for phi3 and llama)")
            }
            m += [f32("\(arch).rope.scaling.attn_factor", attention), u32("\(arch).rope.scaling.original_context_length", original)]
        default: throw PivotError.unsupported(file: folder, "this RoPE scaling (\(c.ropeScaling)) for GGUF conversion (supported: none, linear, llama3, longrope)")
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
        // Embedding rows past the tokenizer's tokens (Qwen2's 151936 for 151665, Mamba's multiples of 8 or 16) get
        // llama.cpp's "[PAD{i}]" tokens of type UNUSED, so that the token list covers the embedding.
        let padding = (t.tokens.count..<max(t.tokens.count, c.vocabularySize)).map { "[PAD\($0)]" }
        m += [
            GGUFMetadataEntry("tokenizer.ggml.add_bos_token", .bool(t.addBOS), type: 7),
            str("tokenizer.ggml.model", "gpt2"), str("tokenizer.ggml.pre", preName),
            GGUFMetadataEntry("tokenizer.ggml.tokens", .array((t.tokens + padding).map { .string($0) }), type: 9, itemType: 8),
            GGUFMetadataEntry("tokenizer.ggml.token_type", .array(t.tokens.map { .int(specials.contains($0) ? 3 : 1) } + padding.map { _ in .int(5) }),
                              type: 9, itemType: 5),
            GGUFMetadataEntry("tokenizer.ggml.merges", .array(merges.map { .string($0) }), type: 9, itemType: 8),
        ]
        if let bos = t.bos { m.append(u32("tokenizer.ggml.bos_token_id", bos)) }
        if let eos = t.eos ?? t.stopTokens.min() { m.append(u32("tokenizer.ggml.eos_token_id", eos)) }
        if let template = t.chatTemplate { m.append(str("tokenizer.chat_template", template)) }
        return m
    }
}
