/// The block projections under llama.cpp's GGUF role names: the one spelling of them in the project.
public enum ProjectionRole: String, CaseIterable, Sendable {
    case query = "attn_q", key = "attn_k", value = "attn_v", attentionOutput = "attn_output"
    case gate = "ffn_gate", up = "ffn_up", down = "ffn_down"
    /// A state-space block's projections (Mamba's in_proj, x_proj, dt_proj, out_proj).
    case stateInput = "ssm_in", stateSelection = "ssm_x", stateTimeStep = "ssm_dt", stateOutput = "ssm_out"

    /// "blk.N.attn_q.weight".
    public func tensorName(layer: Int) -> String { "blk.\(layer).\(rawValue).weight" }

    /// The projection whose input this one reads too (q/k/v read the same normed input, as do gate/up).
    public var sharedInput: ProjectionRole {
        switch self {
        case .key, .value: .query
        case .up: .gate
        default: self
        }
    }
}

/// A GGUF tensor name parsed once: "blk.12.attn_q.weight" is layer 12, role attn_q; "token_embd.weight"
/// has neither.
public struct TensorName: Sendable, Equatable {
    public let layer: Int?
    /// Set for the weight of a block projection.
    public let role: ProjectionRole?

    public init(_ name: String) {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[0] == "blk", let layer = Int(parts[1]) else { layer = nil; role = nil; return }
        self.layer = layer
        role = parts.count == 4 && parts[3] == "weight" ? ProjectionRole(rawValue: String(parts[2])) : nil
    }
}
