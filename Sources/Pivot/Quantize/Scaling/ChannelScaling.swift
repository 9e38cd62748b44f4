/// Per-channel scaling folded into the float model before rounding. A projection reads y = W·x =
/// (W·diag(s))·(x / s); the division is folded into what produces x — an RMSNorm's weight, or the rows
/// of attn_v (for attn_output) and ffn_up (for ffn_down) — so the float model's outputs do not change,
/// the file stays a standard GGUF with no new tensors, and only the weights the quantizer sees move.
public enum ChannelScaling: Sendable, Equatable {
    /// AWQ (Lin et al. 2023): s = mean|x|^α normalised by √(max·min), α searched over a grid of 20
    /// (0, 0.05 … 0.95) to minimise the projections' output error under each tensor's own quantizer;
    /// with `clip`, each block's clipping range is then searched the same way (1.0 … 0.55 of its max).
    case awq(clip: Bool)
    /// SmoothQuant (Xiao et al. 2022): s = max|x|^α / max|W|^(1−α), migrating activation outliers into
    /// the weights so per-token activation quantization (`--act-bits`) loses less.
    case smooth(alpha: Double)

    /// The name `--method` and reports use.
    public var name: String {
        switch self {
        case .awq: "awq"
        case .smooth(let alpha): "smooth(α \(alpha))"
        }
    }

    /// `--method` values: a rounding method alone ("gptq"), or a scaling with its rounding ("awq",
    /// "awq+gptq", "awq+mq", "smooth", "smooth+gptq"). A scaling alone rounds with the importance
    /// matrix of its own calibration; AWQ clips only then (GPTQ's error feedback would keep the
    /// clipped weights as its target, so clipping before it only adds error).
    public static func parseMethod(_ text: String, alpha: Double = 0.5) -> (method: QuantizeMethod, scaling: ChannelScaling?)? {
        let parts = text.lowercased().split(separator: "+", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 1, let method = QuantizeMethod(rawValue: parts[0]) { return (method, nil) }
        guard (1...2).contains(parts.count) else { return nil }
        let rounding = parts.count == 2 ? QuantizeMethod(rawValue: parts[1]) : .imatrix
        guard let rounding, rounding != .rtn else { return nil }
        switch parts[0] {
        case "awq": return (rounding, .awq(clip: !rounding.roundsWithGPTQ))
        case "smooth", "smoothquant": return (rounding, .smooth(alpha: alpha))
        default: return nil
        }
    }

    /// `parseMethod` for a user's input: an unknown method, or an α given to anything but SmoothQuant, is one
    /// clear error naming the option (`methodOption`, `alphaOption`: "--method" on the command line,
    /// "method" in a matrix spec).
    public static func resolveMethod(_ text: String, alpha: Double?, methodOption: String, alphaOption: String) throws
        -> (method: QuantizeMethod, scaling: ChannelScaling?) {
        guard let parsed = parseMethod(text, alpha: alpha ?? 0.5) else {
            throw PivotError.invalidArgument("unknown \(methodOption) '\(text)' (known: \(methodNames.joined(separator: ", ")))")
        }
        if alpha != nil, case .smooth = parsed.scaling {} else if alpha != nil {
            throw PivotError.invalidArgument("\(alphaOption) applies to \(methodOption) smooth (SmoothQuant) only; AWQ searches its α")
        }
        return parsed
    }

    /// Every value `--method` takes.
    public static let methodNames = QuantizeMethod.allCases.map(\.rawValue) + ["awq", "awq+gptq", "awq+mq", "smooth", "smooth+gptq", "smooth+mq"]
}
