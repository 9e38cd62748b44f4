import Foundation

/// The names of a Mamba mixer's tensors within a layer (projections without ".weight").
struct StateSpaceNaming: Sendable {
    var input, convolution, selection, timeStep, output: String
    /// Mamba-2's per-head Δ bias (a vector) and gated norm (".weight" included).
    var timeStepBias: String
    var norm: String
    /// A's tensor: HF stores A_log (A = −exp(A_log)), llama.cpp A itself.
    var a: String
    var aIsLogarithm: Bool
    var d: String

    static let gguf = StateSpaceNaming(input: "ssm_in", convolution: "ssm_conv1d", selection: "ssm_x", timeStep: "ssm_dt", output: "ssm_out",
                                       timeStepBias: "ssm_dt.bias", norm: "ssm_norm.weight", a: "ssm_a", aIsLogarithm: false, d: "ssm_d")
    static let huggingFace = StateSpaceNaming(input: "mixer.in_proj", convolution: "mixer.conv1d", selection: "mixer.x_proj", timeStep: "mixer.dt_proj",
                                              output: "mixer.out_proj", timeStepBias: "mixer.dt_bias", norm: "mixer.norm.weight",
                                              a: "mixer.A_log", aIsLogarithm: true, d: "mixer.D")
}

/// Mamba (`mamba`, GGUF `mamba`): every block is RMSNorm, then the selective-scan mixer, then the residual;
/// no attention, no MLP, a fixed-size recurrent state per sequence instead of a KV cache.
extension ModelFamily {
    static let mamba = ModelFamily(
        huggingFaceTypes: ["mamba"], ggufArchitectures: ["mamba"], convertsTo: { _ in "mamba" },
        huggingFaceNames: {
            var n = TensorNaming.huggingFace
            n.embedding = "backbone.embeddings.weight"; n.finalNorm = "backbone.norm_f.weight"; n.output = "lm_head"
            n.layerPrefix = { "backbone.layers.\($0)." }; n.attentionNorm = "norm.weight"
            n.stateSpace = .huggingFace
            return n
        }(),
        ggufNames: .gguf,
        readHuggingFace: { reader, c in
            let hidden = c.hiddenSize
            let expand = try reader.int("expand") ?? 2
            // transformers sets intermediate_size = expand × hidden whatever the file says.
            var layout = StateSpaceLayout(innerSize: expand * hidden,
                                          stateSize: try reader.int("state_size") ?? 16, convolutionKernel: try reader.int("conv_kernel") ?? 4,
                                          timeStepRank: (hidden + 15) / 16)
            // "auto" (the default) is ⌈hidden / 16⌉.
            if let rank = reader.present("time_step_rank"), (rank as? String) != "auto" {
                guard let r = try reader.int("time_step_rank") else { throw reader.wrongType("time_step_rank", "an integer or \"auto\"") }
                layout.timeStepRank = r
            }
            try reader.adoptStateSpace(layout, in: &c, tiedByDefault: true)
        },
        readGGUF: { keys, c in
            if keys.bool("ssm.dt_b_c_rms") == true {
                throw PivotError.unsupported(file: keys.gguf.path, "Falcon-Mamba's RMS norms on Δ, B and C (mamba.ssm.dt_b_c_rms) are not implemented")
            }
            c.adoptStateSpace(try StateSpaceLayout(gguf: keys))
        },
        ggufMetadata: { c, arch in
            guard let s = c.stateSpace else { return [] }
            return s.ggufMetadata(arch: arch) + [.bool("\(arch).ssm.dt_b_c_rms", false)]
        },
        unconvertible: { c in
            guard let s = c.stateSpace else { return nil }
            if s.innerSize != 2 * c.hiddenSize { return "llama.cpp's mamba supports an expansion factor of 2 only (inner \(s.innerSize), hidden \(c.hiddenSize))" }
            if !s.convolutionBias { return "llama.cpp's mamba requires the convolution's bias" }
            if s.projectionBias { return "llama.cpp's mamba has no biases on in_proj/out_proj (use_bias)" }
            return nil
        },
        hasAttention: false)
}

/// Mamba-2 (`mamba2`, GGUF `mamba2`): Mamba's block with the structured scan (heads, groups, a gated
/// group RMSNorm); the same tensor names but for Δ's bias and the norm.
extension ModelFamily {
    static let mamba2 = ModelFamily(
        huggingFaceTypes: ["mamba2"], ggufArchitectures: ["mamba2"], convertsTo: { _ in "mamba2" },
        huggingFaceNames: ModelFamily.mamba.huggingFaceNames, ggufNames: .gguf,
        readHuggingFace: { reader, c in
            let hidden = c.hiddenSize
            guard let heads = try reader.int("num_heads") else { throw PivotError.malformed(file: reader.file, "missing 'num_heads'") }
            let headDim = try reader.int("head_dim") ?? 64, expand = try reader.int("expand") ?? 2
            guard heads > 0, headDim > 0, heads * headDim == expand * hidden else {
                throw PivotError.malformed(file: reader.file, "num_heads \(heads) × head_dim \(headDim) must equal expand \(expand) × hidden_size \(hidden)")
            }
            var layout = StateSpaceLayout(innerSize: heads * headDim, stateSize: try reader.int("state_size") ?? 128,
                                          convolutionKernel: try reader.int("conv_kernel") ?? 4, timeStepRank: heads)
            layout.heads = heads
            layout.groups = try reader.int("n_groups") ?? 8
            try reader.requireUnlimitedTimeStep()
            try reader.adoptStateSpace(layout, in: &c, tiedByDefault: false)
        },
        readGGUF: { keys, c in
            var layout = try StateSpaceLayout(gguf: keys)
            layout.heads = layout.timeStepRank
            layout.groups = try keys.requiredInt("ssm.group_count")
            c.adoptStateSpace(layout)
        },
        ggufMetadata: { c, arch in
            guard let s = c.stateSpace else { return [] }
            return s.ggufMetadata(arch: arch) + [.u32("\(arch).ssm.group_count", s.groups)]
        },
        unconvertible: { c in
            guard let s = c.stateSpace else { return nil }
            if !s.convolutionBias { return "llama.cpp's mamba2 requires the convolution's bias" }
            if s.projectionBias { return "llama.cpp's mamba2 has no biases on in_proj/out_proj (use_bias)" }
            return nil
        },
        hasAttention: false)
}

extension ConfigReader {
    /// Mamba-2's `time_step_limit` clamps Δ; only the default (0, ∞), which clamps nothing, is implemented.
    /// ∞ comes as transformers 5's {"__float__": "Infinity"} (or Python's bare Infinity, rewritten so on reading).
    func requireUnlimitedTimeStep() throws {
        guard let value = present("time_step_limit") else { return }
        func number(_ v: Any) -> Double? {
            if let n = v as? NSNumber { return n.doubleValue }
            if let object = v as? [String: Any], let text = object["__float__"] as? String { return text == "Infinity" ? .infinity : text == "-Infinity" ? -.infinity : .nan }
            return nil
        }
        guard let pair = value as? [Any], pair.count == 2, let low = number(pair[0]), let high = number(pair[1]) else {
            throw wrongType("time_step_limit", "a pair of numbers")
        }
        guard low <= 0, high == .infinity else {
            throw unsupported("time_step_limit", "clamping Δ to [\(low), \(high)] is not implemented (only the default (0, ∞))")
        }
    }
}

extension StateSpaceLayout {
    /// The sizes llama.cpp's `{arch}.ssm.*` keys give (`time_step_rank`: Δ's rank, or Mamba-2's heads),
    /// the biases from the first block's tensors.
    init(gguf keys: GGUFKeys) throws {
        self.init(innerSize: try keys.requiredInt("ssm.inner_size"), stateSize: try keys.requiredInt("ssm.state_size"),
                  convolutionKernel: try keys.requiredInt("ssm.conv_kernel"), timeStepRank: try keys.requiredInt("ssm.time_step_rank"))
        projectionBias = keys.has(tensor: "blk.0.ssm_in.bias")
        convolutionBias = keys.has(tensor: "blk.0.ssm_conv1d.bias")
    }

    /// The `{arch}.ssm.*` keys llama.cpp's converters write for both Mamba families.
    func ggufMetadata(arch: String) -> [GGUFMetadataEntry] {
        [.u32("\(arch).ssm.conv_kernel", convolutionKernel), .u32("\(arch).ssm.inner_size", innerSize),
         .u32("\(arch).ssm.state_size", stateSize), .u32("\(arch).ssm.time_step_rank", heads ?? timeStepRank)]
    }
}

extension ModelConfig {
    /// A state-space model: its mixer's sizes, and no MLP.
    mutating func adoptStateSpace(_ layout: StateSpaceLayout) {
        stateSpace = layout
        intermediateSize = 0
    }
}

extension ConfigReader {
    /// What both Mamba families' config.json say alike: the biases, SiLU, the head's tying (whose default
    /// differs); the state does not grow with the sequence, so, as llama.cpp's converter, an arbitrarily
    /// large context.
    func adoptStateSpace(_ layout: StateSpaceLayout, in c: inout ModelConfig, tiedByDefault: Bool) throws {
        var layout = layout
        layout.projectionBias = try bool("use_bias") ?? false
        layout.convolutionBias = try bool("use_conv_bias") ?? true
        if try activation(["hidden_act"], default: .silu) != .silu {
            throw unsupported("hidden_act", "\(c.architecture)'s mixer is implemented with SiLU")
        }
        c.adoptStateSpace(layout)
        c.tiedEmbeddings = try bool("tie_word_embeddings") ?? tiedByDefault
        c.contextLength = 1 << 20
    }
}

