/// How weights are rounded (`pivot quantize --method`); what each method needs is a property of the
/// method, asked in one place, never a string compared across the pipeline.
public enum QuantizeMethod: String, Sendable, CaseIterable, Codable {
    /// Round to nearest with ggml's scale search.
    case rtn
    /// The same search weighted by an importance matrix (a file, or computed from calibration text).
    case imatrix
    /// GPTQ: Hessians from calibration text, rounding error pushed onto the columns not yet quantized.
    case gptq
    /// LLM-MQ: gradient-weighted allocation of types under a bit budget, then GPTQ rounding.
    case mq

    /// The input Hessians of every projection (GPTQ's rounding, or LSI's error weighting).
    func needsHessians(lsi: Bool) -> Bool { roundsWithGPTQ || lsi }
    /// Rounds with GPTQ's column-by-column error feedback.
    var roundsWithGPTQ: Bool { self == .gptq || self == .mq }
    /// Weighs each tensor's error by the loss gradients (a float backward pass).
    var usesGradients: Bool { self == .mq }
    /// The method when none is named: imatrix when an importance matrix or calibration text is given.
    public static func `default`(calibrated: Bool) -> QuantizeMethod { calibrated ? .imatrix : .rtn }
}
