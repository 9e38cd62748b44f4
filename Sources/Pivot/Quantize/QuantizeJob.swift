import Foundation
import PivotKernels

/// One `pivot quantize` run as a value: what goes in, how it is rounded and allocated, what comes out.
/// `validate` holds every rule of which option goes with which method; `run` does the work (the CLI
/// only maps flags to this and draws progress).
public struct QuantizeJob: Sendable {
    public var input: String
    public var output: String
    public var fileType: QuantizeFileType
    public var method: QuantizeMethod
    /// Channel scales folded in before rounding (AWQ, SmoothQuant); nil: none.
    public var scaling: ChannelScaling?
    /// An importance matrix file (llama-imatrix's or `pivot imatrix`'s).
    public var importanceFile: String?
    /// Calibration text, run through the model in chunks of `chunkLength` (at most `chunks`).
    public var calibrationText: String?
    public var chunkLength = 512
    public var chunks: Int?
    /// Bits per weight under which types are allocated (nil: the file type's mix).
    public var bitsPerWeight: Double?
    public var budgetScope: MixedPrecision.BudgetScope = .file
    /// Only types llama.cpp loads.
    public var standardOnly = false
    /// Percent of each projection's weights kept as sparse FP16 corrections (0: none).
    public var outlierPercent: Double = 0
    public var lsi = false
    public var calibrationCache: String?
    public var gradientChunks = 8
    public var actOrder = true
    /// llama-quantize --pure: no mix.
    public var pure = false

    public init(input: String, output: String, fileType: QuantizeFileType, method: QuantizeMethod) {
        self.input = input; self.output = output; self.fileType = fileType; self.method = method
    }

    /// Which options go together; one message naming the flags.
    public func validate() throws {
        func fail(_ message: String) -> PivotError { .invalidArgument(message) }
        if importanceFile != nil && calibrationText != nil { throw fail("give --imatrix or --calib, not both") }
        let calibrated = importanceFile != nil || calibrationText != nil
        switch method {
        case .rtn: if calibrated { throw fail("--method rtn uses no calibration; drop --imatrix / --calib") }
        case .imatrix: if !calibrated { throw fail("--method imatrix needs --imatrix FILE or --calib TEXT") }
        case .gptq: if calibrationText == nil { throw fail("--method gptq needs --calib TEXT (its Hessians come from running the model on it)") }
        case .mq: if calibrationText == nil || bitsPerWeight == nil { throw fail("--method mq needs --calib TEXT and --bpw X") }
        }
        if let scaling {
            if calibrationText == nil { throw fail("--method \(scaling.name) needs --calib TEXT (its scales come from the activations on it)") }
            if case .awq = scaling, fileType.base == nil {
                throw fail("--method awq searches scales for a quantized type's rounding; --type \(fileType.name) is not quantized (--method smooth may write float files)")
            }
            if case .smooth(let alpha) = scaling, !(0...1).contains(alpha) { throw fail("--alpha must be between 0 and 1 (got \(alpha))") }
            // The outlier selection weighs weights by gradients of the unscaled model; not combined yet.
            if outlierPercent > 0 { throw fail("--outliers does not combine with --method \(scaling.name) yet (its gradients are the unscaled model's)") }
        }
        if let bitsPerWeight {
            guard bitsPerWeight > 1, bitsPerWeight < 33 else { throw fail("--bpw must be between 1 and 33 bits per weight (got \(bitsPerWeight))") }
            if !calibrated { throw fail("--bpw allocates by calibrated sensitivity: give --calib TEXT (or --imatrix FILE)") }
        }
        if lsi && (calibrationText == nil || method == .rtn) {
            throw fail("--lsi needs --calib TEXT (its error is weighed by the calibration Hessians) and --method imatrix, gptq or mq")
        }
        guard outlierPercent >= 0, outlierPercent < 50 else { throw fail("--outliers is a percent between 0 and 50 (got \(outlierPercent))") }
        if outlierPercent > 0 && !calibrated { throw fail("--outliers chooses weights by calibrated sensitivity: give --calib TEXT (or --imatrix FILE)") }
        if !actOrder && !method.roundsWithGPTQ { throw fail("--no-act-order applies to --method gptq or mq only") }
        if standardOnly && fileType.isExtension { throw fail("--type \(fileType.name) is a Pivot extension type; --standard-only allows only types llama.cpp loads") }
        if standardOnly && outlierPercent > 0 { throw fail("--outliers adds tensors llama.cpp refuses; drop it or --standard-only") }
        guard (16...8192).contains(chunkLength) else { throw fail("--calib-ctx must be between 16 and 8192 (got \(chunkLength))") }
        guard gradientChunks >= 1 else { throw fail("--gradient-chunks must be at least 1 (got \(gradientChunks))") }
    }

    /// What the run reports as it goes: one-line notes, and progress of each long stage.
    public struct Events {
        public var note: (String) -> Void
        public var progress: (_ stage: String, _ done: Int, _ total: Int, _ item: String) -> Void
        public init(note: @escaping (String) -> Void = { _ in }, progress: @escaping (String, Int, Int, String) -> Void = { _, _, _, _ in }) {
            self.note = note; self.progress = progress
        }
    }

    /// What was written.
    public struct Summary {
        public var choices: [QuantizePipeline.Choice]
        /// The allocation under --bpw (tensor → type) and the bits it reached.
        public var allocation: (types: [String: BlockFormat], bitsPerWeight: Double)?
        public var lsiLines: [String]
        /// What AWQ / SmoothQuant chose, one line per site kind.
        public var scalingLines: [String]
        public var usedGPTQ: Bool
        public var usedImportance: Bool
        public var seconds: Double
    }

    /// The calibration products one run needs, computed (or read from the cache) once.
    struct Calibration {
        var importance: ImportanceMatrix?
        var hessians: GPTQPlan?
        var gradients: [String: [Float]]?
    }
}
