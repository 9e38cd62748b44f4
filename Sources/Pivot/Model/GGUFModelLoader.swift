import Foundation
import PivotKernels

extension ModelConfig {
    /// Reads `{arch}.*` keys from GGUF metadata (llama.cpp's names): the common numbers here, the
    /// family's own through `ModelFamily.readGGUF`.
    public init(gguf: GGUFFile) throws {
        let m = gguf.metadata
        guard let arch = m["general.architecture"]?.string else {
            throw PivotError.malformed(file: gguf.path, "missing general.architecture")
        }
        guard let family = ModelFamily.gguf(arch) else {
            throw PivotError.unsupported(file: gguf.path, "architecture '\(arch)' (supported: \(ModelFamily.ggufArchitectures.joined(separator: ", ")))")
        }
        let keys = GGUFKeys(gguf: gguf, arch: arch)
        let hidden = try keys.requiredInt("embedding_length")
        let heads = try keys.requiredInt("attention.head_count")
        let vocab = m["tokenizer.ggml.tokens"]?.array?.count ?? gguf.tensor(named: "token_embd.weight")?.shape.first ?? 0
        let headDim = keys.int("attention.key_length") ?? (heads > 0 ? hidden / heads : 0)
        // What the first block holds, under the family's names.
        let names = family.ggufNames, first = names.layerPrefix(0)
        let queryName = names.qkv.fusedName ?? names.query
        func has(_ name: String) -> Bool { gguf.tensor(named: first + name) != nil }
        self.init(
            architecture: arch,
            vocabularySize: vocab,
            hiddenSize: hidden,
            intermediateSize: try keys.requiredInt("feed_forward_length"),
            layerCount: try keys.requiredInt("block_count"),
            headCount: heads,
            kvHeadCount: keys.int("attention.head_count_kv") ?? heads,
            headDim: headDim,
            contextLength: keys.int("context_length") ?? 2048,
            ropeTheta: Float(keys.double("rope.freq_base") ?? 10000),
            rmsNormEpsilon: Float(keys.double("attention.layer_norm_rms_epsilon") ?? keys.double("attention.layer_norm_epsilon") ?? 1e-5),
            ropeInterleaved: false,
            tiedEmbeddings: gguf.tensor(named: "output.weight") == nil,
            attentionBias: has(queryName + ".bias"),
            outputBias: has(names.attentionOutput + ".bias"),
            ropeScaling: try Self.ropeScaling(gguf, arch: arch),
            queryKeyNorm: has(names.queryNorm))
        if let rotated = keys.int("rope.dimension_count"), rotated != headDim { variant.rotaryDimensions = rotated }
        capContextForLongRoPE()
        try validateCounts(file: gguf.path, attention: family.hasAttention)
        try family.readGGUF(keys, &self)
        try validate(file: gguf.path)
    }

    /// `rope_freqs.weight` (Llama-3.1 files) or `{arch}.rope.scaling.type` linear; others are refused.
    static func ropeScaling(_ gguf: GGUFFile, arch: String) throws -> RoPEScaling {
        if let factors = gguf.tensor(named: "rope_freqs.weight") { return .frequencyFactors(factors.toFloats()) }
        if let short = gguf.tensor(named: "rope_factors_short.weight") {
            // Phi-3.5/Phi-4-mini's LongRoPE, as llama.cpp's converter stores it.
            guard let long = gguf.tensor(named: "rope_factors_long.weight"), long.shape == short.shape, short.shape.count == 1,
                  let original = gguf.metadata["\(arch).rope.scaling.original_context_length"]?.int, original > 0 else {
                throw PivotError.malformed(file: gguf.path, "LongRoPE needs rope_factors_short/long of one shape and \(arch).rope.scaling.original_context_length")
            }
            let context = gguf.metadata["\(arch).context_length"]?.int ?? original
            let attention = gguf.metadata["\(arch).rope.scaling.attn_factor"]?.double
                ?? RoPEScaling.longRoPEAttentionFactor(scale: Double(context) / Double(original), originalContext: original)
            return .longRoPE(short: short.toFloats(), long: long.toFloats(), originalContext: original, attentionFactor: attention, context: context)
        }
        let type = gguf.metadata["\(arch).rope.scaling.type"]?.string ?? "none"
        switch type {
        case "none": return .none
        case "linear":
            guard let factor = gguf.metadata["\(arch).rope.scaling.factor"]?.double, factor > 0 else {
                throw PivotError.malformed(file: gguf.path, "\(arch).rope.scaling.factor missing for linear RoPE scaling")
            }
            return .linear(factor: factor)
        default:
            throw PivotError.unsupported(file: gguf.path, "\(arch).rope.scaling.type '\(type)' (supported: none, linear)")
        }
    }
}

extension ModelConfig {
    /// LongRoPE runs with its short factors, exact up to the original context: the context stops there.
    mutating func capContextForLongRoPE() {
        if case .longRoPE(_, _, let original, _, _) = ropeScaling { contextLength = min(contextLength, original) }
    }

    /// The frequency factors a rotary count must match (LongRoPE's, llama.cpp's rope_freqs), if any.
    var ropeFactorCount: Int? {
        switch ropeScaling {
        case .frequencyFactors(let f): f.count
        case .longRoPE(let short, _, _, _, _): short.count
        default: nil
        }
    }
}

/// Maps llama.cpp tensor names onto the forward pass's weights.
enum GGUFModelLoader {
    static func load(_ gguf: GGUFFile, quantizeTo: BlockFormat? = nil) throws -> Transformer {
        let config = try ModelConfig(gguf: gguf)
        let family = ModelFamily.gguf(config.architecture)!
        return try WeightLoader.build(config: config, store: gguf, names: family.ggufNames(for: config), quantizeTo: quantizeTo)
    }
}
