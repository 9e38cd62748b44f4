/// Mixtral and Qwen2-MoE: Llama-style attention, routed SwiGLU experts instead of the MLP
/// (`MixtureOfExperts`). llama.cpp stores Mixtral as arch `llama` with `llama.expert_count`.
extension ModelFamily {
    static let mixtral = ModelFamily(
        huggingFaceTypes: ["mixtral"], ggufArchitectures: [], convertsTo: { _ in "llama" },
        huggingFaceNames: {
            var n = TensorNaming.huggingFace
            n.mixture = MixtureNaming(router: "block_sparse_moe.gate",
                                      experts: .perExpert(prefix: "block_sparse_moe.experts.", gate: "w1", up: "w3", down: "w2"),
                                      sharedGate: "", sharedUp: "", sharedDown: "", sharedExpertGate: "")
            return n
        }(),
        ggufNames: .gguf,
        readHuggingFace: { reader, c in
            try ModelFamily.llama.readHuggingFace(reader, &c)
            guard let count = try reader.int("num_local_experts") ?? reader.int("num_experts") else {
                throw PivotError.malformed(file: reader.file, "missing 'num_local_experts'")
            }
            c.experts = ExpertLayout(count: count, used: try reader.requiredInt("num_experts_per_tok"), intermediateSize: c.intermediateSize)
        },
        readGGUF: { _, _ in },
        ggufMetadata: { c, arch in c.expertMetadata(arch) })

    static let qwen2MoE = ModelFamily(
        huggingFaceTypes: ["qwen2_moe"], ggufArchitectures: ["qwen2moe"], convertsTo: { _ in "qwen2moe" },
        huggingFaceNames: {
            var n = TensorNaming.huggingFace
            n.mixture = MixtureNaming(router: "mlp.gate", experts: .perExpert(prefix: "mlp.experts.", gate: "gate_proj", up: "up_proj", down: "down_proj"),
                                      sharedGate: "mlp.shared_expert.gate_proj", sharedUp: "mlp.shared_expert.up_proj",
                                      sharedDown: "mlp.shared_expert.down_proj", sharedExpertGate: "mlp.shared_expert_gate")
            return n
        }(),
        ggufNames: .gguf,
        readHuggingFace: { reader, c in
            c.variant.activation = try reader.activation(["hidden_act"], default: .silu)
            if try reader.bool("use_sliding_window") == true { throw reader.unsupported("use_sliding_window", "sliding-window attention is not implemented for qwen2_moe") }
            c.attentionBias = try reader.bool("qkv_bias") ?? true
            var layout = ExpertLayout(count: try reader.requiredInt("num_experts"), used: try reader.requiredInt("num_experts_per_tok"),
                                      intermediateSize: try reader.requiredInt("moe_intermediate_size"))
            if let shared = try reader.int("shared_expert_intermediate_size"), shared > 0 { layout.sharedIntermediateSize = shared }
            layout.normalizeWeights = try reader.bool("norm_topk_prob") ?? false
            let step = try reader.int("decoder_sparse_step") ?? 1
            guard step >= 1 else { throw reader.unsupported("decoder_sparse_step", "must be at least 1") }
            let listed = reader.present("mlp_only_layers")
            guard listed == nil || listed is [Int] else { throw reader.wrongType("mlp_only_layers", "a list of layer indices") }
            let dense = Set((listed as? [Int]) ?? [])
            let sparse = (0..<c.layerCount).map { !dense.contains($0) && ($0 + 1) % step == 0 }
            if sparse.contains(false) { layout.sparseLayers = sparse }
            c.experts = layout
        },
        readGGUF: { keys, c in
            c.ropeInterleaved = false
            guard var layout = try c.expertLayout(keys) else { throw PivotError.malformed(file: keys.gguf.path, "missing qwen2moe.expert_count") }
            layout.intermediateSize = keys.int("expert_feed_forward_length") ?? c.intermediateSize / max(layout.used, 1)
            layout.sharedIntermediateSize = keys.int("expert_shared_feed_forward_length") ?? c.intermediateSize
            // llama.cpp leaves Qwen2-MoE's top-k weights unnormalized; Pivot's own key keeps norm_topk_prob.
            layout.normalizeWeights = keys.bool("expert_weights_norm") ?? false
            c.experts = layout
        },
        ggufMetadata: { c, arch in
            guard let e = c.experts else { return [] }
            return c.expertMetadata(arch) + [.u32("\(arch).expert_feed_forward_length", e.intermediateSize)]
                + (e.sharedIntermediateSize.map { [.u32("\(arch).expert_shared_feed_forward_length", $0)] } ?? [])
                + (e.normalizeWeights ? [.bool("\(arch).expert_weights_norm", true)] : [])
        },
        unconvertible: { c in
            c.experts?.sparseLayers?.contains(false) == true ? "llama.cpp's qwen2moe has no dense layers (mlp_only_layers / decoder_sparse_step)" : nil
        })
}

extension ModelConfig {
    /// `{arch}.expert_count` / `expert_used_count` (nil when the file has no experts).
    func expertLayout(_ keys: GGUFKeys) throws -> ExpertLayout? {
        guard let count = keys.int("expert_count"), count > 0 else { return nil }
        guard let used = keys.int("expert_used_count") else { throw PivotError.malformed(file: keys.gguf.path, "missing \(keys.arch).expert_used_count") }
        return ExpertLayout(count: count, used: used, intermediateSize: intermediateSize)
    }

    func expertMetadata(_ arch: String) -> [GGUFMetadataEntry] {
        guard let e = experts else { return [] }
        return [.u32("\(arch).expert_count", e.count), .u32("\(arch).expert_used_count", e.used)]
    }
}
