import PivotKernels

/// How a checkpoint lays out one block's attention input projections.
enum QKVLayout: Sendable {
    /// Three tensors (q, k, v names).
    case separate
    /// One tensor, rows [q; k; v] (Phi-3, and llama.cpp's attn_qkv).
    case stacked(String)
    /// One tensor, rows per key/value group: its query heads, then its key head and value head
    /// (HF GPT-NeoX, one query head per group; HF Falcon-40B's new decoder architecture).
    case grouped(String)
}

/// How a checkpoint names its routed experts.
enum ExpertNaming: Sendable {
    /// One tensor per expert and projection: `{prefix}{e}.{gate|up|down}.weight` (HF checkpoints).
    case perExpert(prefix: String, gate: String, up: String, down: String)
    /// One [experts, out, in] tensor per projection (llama.cpp's `ffn_*_exps`).
    case stacked(gate: String, up: String, down: String)
}

extension QKVLayout {
    /// Rows of Q, K and V in a fused tensor (nil for separate tensors). Stacked: [q; k; v]. Grouped:
    /// group g holds its r = heads/kvHeads query heads, then its key head, then its value head.
    func rows(_ c: ModelConfig) -> (q: [Int], k: [Int], v: [Int])? {
        switch self {
        case .separate:
            return nil
        case .stacked:
            return (Array(0..<c.queryWidth), Array(c.queryWidth..<c.queryWidth + c.kvWidth),
                    Array(c.queryWidth + c.kvWidth..<c.queryWidth + 2 * c.kvWidth))
        case .grouped:
            let d = c.headDim, r = c.headCount / c.kvHeadCount
            func head(_ slot: Int) -> [Int] { (0..<d).map { slot * d + $0 } }
            var q: [Int] = [], k: [Int] = [], v: [Int] = []
            for g in 0..<c.kvHeadCount {
                let base = g * (r + 2)
                for j in 0..<r { q += head(base + j) }
                k += head(base + r); v += head(base + r + 1)
            }
            return (q, k, v)
        }
    }

    /// The fused tensor's name (nil for separate tensors).
    var fusedName: String? {
        switch self {
        case .separate: nil
        case .stacked(let name), .grouped(let name): name
        }
    }
}

/// The names of a mixture's tensors within a layer (without ".weight").
struct MixtureNaming: Sendable {
    var router: String
    var experts: ExpertNaming
    var sharedGate: String, sharedUp: String, sharedDown: String
    /// hidden → 1 gate of the shared expert.
    var sharedExpertGate: String

    static let gguf = MixtureNaming(router: "ffn_gate_inp", experts: .stacked(gate: "ffn_gate_exps", up: "ffn_up_exps", down: "ffn_down_exps"),
                                    sharedGate: "ffn_gate_shexp", sharedUp: "ffn_up_shexp", sharedDown: "ffn_down_shexp",
                                    sharedExpertGate: "ffn_gate_inp_shexp")
}

/// The tensor names of one checkpoint family; everything else about building the model is shared.
struct TensorNaming: Sendable {
    var embedding: String
    var finalNorm: String
    /// Untied output head, without ".weight".
    var output: String
    /// Prefix of layer i's tensors.
    var layerPrefix: @Sendable (Int) -> String
    var attentionNorm, query, key, value, attentionOutput, mlpNorm, gate, up, down: String
    /// Q/K norm weights (Qwen3, Gemma 3 per head; OLMo 2 over the projection).
    var queryNorm, keyNorm: String
    /// Per-head Q/K norms stored one tensor per head, `{stem}{h}.weight` (HF StableLM); nil: one tensor
    /// of [heads, headDim] under `queryNorm`/`keyNorm` (llama.cpp).
    var perHeadNormStems: (query: String, key: String)? = nil
    var qkv: QKVLayout = .separate
    /// gate and up as one tensor, gate's rows first (Phi-3's gate_up_proj; llama.cpp's phi3 ffn_up).
    var fusedGateUp: String? = nil
    /// Norms of the attention and MLP outputs (Gemma 2/3, OLMo 2).
    var postAttentionNorm: String? = nil
    var postMLPNorm: String? = nil
    var mixture: MixtureNaming = .gguf
    /// A state-space block's tensors (Mamba).
    var stateSpace: StateSpaceNaming = .gguf

    /// The bias beside a ".weight" tensor (a LayerNorm's or a projection's).
    static func bias(of weightName: String) -> String { String(weightName.dropLast("weight".count)) + "bias" }

    /// llama.cpp's GGUF names.
    static let gguf = TensorNaming(
        embedding: "token_embd.weight", finalNorm: "output_norm.weight", output: "output", layerPrefix: { "blk.\($0)." },
        attentionNorm: "attn_norm.weight", query: ProjectionRole.query.rawValue, key: ProjectionRole.key.rawValue,
        value: ProjectionRole.value.rawValue, attentionOutput: ProjectionRole.attentionOutput.rawValue,
        mlpNorm: "ffn_norm.weight", gate: ProjectionRole.gate.rawValue, up: ProjectionRole.up.rawValue, down: ProjectionRole.down.rawValue,
        queryNorm: "attn_q_norm.weight", keyNorm: "attn_k_norm.weight",
        postAttentionNorm: "post_attention_norm.weight", postMLPNorm: "post_ffw_norm.weight")

    /// HuggingFace transformers' Llama/Mistral/Qwen2 names.
    static let huggingFace = TensorNaming(
        embedding: "model.embed_tokens.weight", finalNorm: "model.norm.weight", output: "lm_head", layerPrefix: { "model.layers.\($0)." },
        attentionNorm: "input_layernorm.weight", query: "self_attn.q_proj", key: "self_attn.k_proj", value: "self_attn.v_proj",
        attentionOutput: "self_attn.o_proj", mlpNorm: "post_attention_layernorm.weight", gate: "mlp.gate_proj",
        up: "mlp.up_proj", down: "mlp.down_proj", queryNorm: "self_attn.q_norm.weight", keyNorm: "self_attn.k_norm.weight")
}

/// Builds the forward pass from a tensor store, checking every shape against the config.
enum WeightLoader {
    /// `quantizeTo`: float (F32/F16/BF16) projection weights, and a tied output head, are quantized to
    /// this format as they load (ggml's quantizers, K-quants with llama.cpp's block-32 fallback on rows
    /// that are not a multiple of 256); already quantized tensors and the embedding lookup stay as stored.
    /// `normOffset` is added to every norm weight (Gemma's HF checkpoints store w for a scale of 1 + w).
    static func build(config c: ModelConfig, store: TensorStore, names: TensorNaming, quantizeTo: BlockFormat? = nil,
                      normOffset: Float = 0) throws -> Transformer {
        func maybeQuantized(_ t: TensorData) -> TensorData {
            guard let requested = quantizeTo, !t.type.isBlock, t.shape.count == 2 else { return t }
            // A K-quant on rows that are not whole super-blocks takes llama.cpp's block-32 fallback.
            let format = QuantizeRecipe.fallback(requested, columns: t.shape[1])
            guard t.shape[1] % format.elementsPerBlock == 0 else { return t }
            let quantized = t.quantized(to: format)
            // The float source is not read again (but for a tied embedding's lookups, re-read on demand).
            (t.owner as? MappedFile)?.releasePages(t.data, count: t.byteCount)
            return quantized
        }
        let d = c.hiddenSize
        let layerNorm = c.variant.norm == .layer
        func vector(_ name: String, _ count: Int, offset: Float = 0) throws -> FloatBuffer {
            let buffer = FloatBuffer(count: count)
            try store.require(name, shape: [count]).copyFloats(into: buffer.pointer)
            if offset != 0 { for i in 0..<count { buffer.pointer[i] += offset } }
            return buffer
        }
        /// A norm's weight (plus its bias for LayerNorm families, where the checkpoint has one).
        func norm(_ name: String, _ count: Int) throws -> NormWeights {
            let bias = layerNorm ? try vector(TensorNaming.bias(of: name), count) : nil
            return NormWeights(weight: try vector(name, count, offset: normOffset), bias: bias)
        }
        func operator_(_ weight: TensorData, name: String, bias: TensorData?) throws -> LinearOperator {
            var op = makeLinear(maybeQuantized(weight))
            if let index = store.tensor(named: name + ".weight" + SparseOutlierLinear.indexSuffix) {
                // Pivot's sparse FP16 outliers beside the quantized weight.
                guard let value = store.tensor(named: name + ".weight" + SparseOutlierLinear.valueSuffix), index.type == .f32,
                      index.shape.count == 1, value.shape == index.shape else {
                    throw PivotError.unsupported(file: store.path, "'\(name).weight' has outlier indices without matching F32 indices / values")
                }
                op = try SparseOutlierLinear(op, indices: index.toFloats().map { Int($0) }, values: value.toFloats())
            }
            guard let bias else { return op }
            return BiasedLinear(op, bias: bias.toFloats())
        }
        func linear(_ name: String, out: Int, in inFeatures: Int, bias: Bool = false) throws -> LinearOperator {
            let weight = try store.require(name + ".weight", shape: [out, inFeatures])
            return try operator_(weight, name: name, bias: bias ? try store.require(name + ".bias", shape: [out]) : nil)
        }
        /// Row ranges of one fused tensor (and its bias) as separate operators.
        func split(_ name: String, parts: [[Int]], in inFeatures: Int, bias: Bool) throws -> [LinearOperator] {
            let rows = parts.reduce(0) { $0 + $1.count }
            let weight = try store.require(name + ".weight", shape: [rows, inFeatures])
            let biasTensor = bias ? try store.require(name + ".bias", shape: [rows]) : nil
            return try parts.map { try operator_(weight.gatheringRows($0), name: name, bias: biasTensor?.gatheringRows($0)) }
        }
        /// A layer's router, experts and shared expert.
        func mixture(prefix p: String, layout: ExpertLayout) throws -> MixtureOfExperts {
            let m = names.mixture, width = layout.intermediateSize
            var experts: [Expert] = []
            switch m.experts {
            case .perExpert(let stem, let g, let u, let dn):
                for e in 0..<layout.count {
                    experts.append(Expert(gate: try linear(p + stem + "\(e)." + g, out: width, in: d), up: try linear(p + stem + "\(e)." + u, out: width, in: d),
                                          down: try linear(p + stem + "\(e)." + dn, out: d, in: width)))
                }
            case .stacked(let g, let u, let dn):
                let gates = try store.require(p + g + ".weight", shape: [layout.count, width, d])
                let ups = try store.require(p + u + ".weight", shape: [layout.count, width, d])
                let downs = try store.require(p + dn + ".weight", shape: [layout.count, d, width])
                for e in 0..<layout.count {
                    experts.append(Expert(gate: makeLinear(maybeQuantized(gates.matrix(e))), up: makeLinear(maybeQuantized(ups.matrix(e))),
                                          down: makeLinear(maybeQuantized(downs.matrix(e)))))
                }
            }
            var shared: Expert?, sharedGate: LinearOperator?
            if let w = layout.sharedIntermediateSize {
                shared = Expert(gate: try linear(p + m.sharedGate, out: w, in: d), up: try linear(p + m.sharedUp, out: w, in: d),
                                down: try linear(p + m.sharedDown, out: d, in: w))
                // llama.cpp stores the shared gate as a vector.
                let gateTensor = try store.tensor(named: p + m.sharedExpertGate + ".weight").map { t -> TensorData in
                    guard t.shape == [d] || t.shape == [1, d] else {
                        throw PivotError.shapeMismatch(file: store.path, tensor: p + m.sharedExpertGate + ".weight", expected: [1, d], found: t.shape)
                    }
                    return TensorData(name: t.name, type: t.type, shape: [1, d], data: t.data, byteCount: t.byteCount, owner: t.owner)
                }
                guard let gateTensor else { throw PivotError.missingTensor(file: store.path, p + m.sharedExpertGate + ".weight") }
                sharedGate = makeLinear(gateTensor)
            }
            return MixtureOfExperts(router: try linear(p + m.router, out: layout.count, in: d), experts: experts, shared: shared,
                                    sharedGate: sharedGate, layout: layout, activation: c.variant.activation)
        }
        let embedding = try store.require(names.embedding, shape: [c.vocabularySize, d])
        let headDim = c.headDim
        var layers: [DecoderLayer] = []
        for i in 0..<c.layerCount {
            let p = names.layerPrefix(i)
            if let layout = c.stateSpace {
                let mixer = try StateSpaceLoading.mixer(store: store, names: names.stateSpace, prefix: p, layout: layout, hidden: d,
                                                        epsilon: c.rmsNormEpsilon, linear: { try linear($0, out: $1, in: $2, bias: $3) })
                layers.append(DecoderLayer(stateSpaceNorm: try norm(p + names.attentionNorm, d), mixer: mixer))
                continue
            }
            let query, key, value: LinearOperator
            if let fused = names.qkv.fusedName, let rows = names.qkv.rows(c) {
                let ops = try split(p + fused, parts: [rows.q, rows.k, rows.v], in: d, bias: c.attentionBias)
                (query, key, value) = (ops[0], ops[1], ops[2])
            } else {
                query = try linear(p + names.query, out: c.queryWidth, in: d, bias: c.attentionBias)
                key = try linear(p + names.key, out: c.kvWidth, in: d, bias: c.attentionBias)
                value = try linear(p + names.value, out: c.kvWidth, in: d, bias: c.attentionBias)
            }
            var gate: LinearOperator?, up: LinearOperator?, down: LinearOperator?
            var experts: MixtureOfExperts?
            if let layout = c.experts, layout.routes(layer: i) {
                experts = try mixture(prefix: p, layout: layout)
            } else if let fused = names.fusedGateUp {
                let ops = try split(p + fused, parts: [Array(0..<c.intermediateSize), Array(c.intermediateSize..<2 * c.intermediateSize)],
                                    in: d, bias: c.variant.mlpBias)
                (gate, up) = (ops[0], ops[1])
            } else {
                gate = c.variant.gatedMLP ? try linear(p + names.gate, out: c.intermediateSize, in: d, bias: c.variant.mlpBias) : nil
                up = try linear(p + names.up, out: c.intermediateSize, in: d, bias: c.variant.mlpBias)
            }
            if experts == nil { down = try linear(p + names.down, out: d, in: c.intermediateSize, bias: c.variant.mlpBias) }
            let (qNormWidth, kNormWidth) = c.variant.queryKeyNormSpansHeads ? (c.queryWidth, c.kvWidth) : (headDim, headDim)
            /// A head's own Q/K norm weights, stacked [heads × headDim], no bias.
            func headNorms(_ name: String, stem: String?, heads: Int) throws -> NormWeights {
                let buffer = FloatBuffer(count: heads * headDim)
                if let stem {
                    for h in 0..<heads { try store.require(p + stem + "\(h).weight", shape: [headDim]).copyFloats(into: buffer.pointer + h * headDim) }
                } else {
                    try store.require(p + name, shape: [heads, headDim]).copyFloats(into: buffer.pointer)
                }
                return NormWeights(weight: buffer)
            }
            let perHead = c.variant.queryKeyNormPerHeadWeights
            let inputNorms = c.variant.inputNorms, outputNorms = c.variant.outputNorms
            layers.append(DecoderLayer(
                attentionNorm: inputNorms ? try norm(p + names.attentionNorm, d) : NormWeights(weight: FloatBuffer(count: 1)),
                query: query, key: key, value: value,
                attentionOutput: try linear(p + names.attentionOutput, out: d, in: c.queryWidth, bias: c.outputBias),
                mlpNorm: inputNorms && !c.variant.sharedNorm ? try norm(p + names.mlpNorm, d) : NormWeights(weight: FloatBuffer(count: 1)),
                gate: gate, up: up, down: down, experts: experts,
                queryNorm: !c.queryKeyNorm ? nil : perHead ? try headNorms(names.queryNorm, stem: names.perHeadNormStems?.query, heads: c.headCount)
                    : try norm(p + names.queryNorm, qNormWidth),
                keyNorm: !c.queryKeyNorm ? nil : perHead ? try headNorms(names.keyNorm, stem: names.perHeadNormStems?.key, heads: c.kvHeadCount)
                    : try norm(p + names.keyNorm, kNormWidth),
                postAttentionNorm: outputNorms ? try norm(p + (names.postAttentionNorm ?? ""), d) : nil,
                postMLPNorm: outputNorms ? try norm(p + (names.postMLPNorm ?? ""), d) : nil))
        }
        let output = c.tiedEmbeddings ? makeLinear(maybeQuantized(embedding)) : try linear(names.output, out: c.vocabularySize, in: d)
        return Transformer(config: c, embedding: Embedding(embedding), layers: layers,
                           finalNorm: try norm(names.finalNorm, d), output: output)
    }
}
