import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a GGUF file in another type, with llama.cpp's per-tensor rules, readable by llama.cpp.",
        discussion: """
        Types: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")). ggml's quantizers and llama.cpp's mixes: the \
        output is byte-identical to llama-quantize's for the same input (and importance matrix). The mixes give attn_v, \
        ffn_down and attn_output more bits in chosen layers (Q4_K_M: Q6_K for attn_v and ffn_down in the first and last \
        eighth of the layers and every third between); the output head (here the tied embedding) gets Q6_K, or Q8_0 in \
        a Q8_0 file; a K-quant on rows that are not a multiple of 256 falls back to a block-32 type (Q2_K, Q3_K → Q4_0, \
        Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), as llama.cpp does — on a 576-wide model that is every projection but \
        ffn_down. Norms stay F32. An already quantized input is dequantized first (a note says so: the errors compound); \
        a HuggingFace folder is converted to an F32 GGUF first (`pivot convert`'s code).
        Importance: --imatrix reads a matrix (llama-imatrix's or `pivot imatrix`'s); --calib computes one from a text first.
        Methods: rtn (round to nearest with ggml's scale search), imatrix (the same search weighted by the importance \
        matrix), gptq (GPTQ: each projection's Hessian Σxxᵀ from --calib, 1% dampening, act-order, blocks of 128; \
        scales chosen first by the imatrix search, then every weight's level chosen while the rounding error is pushed \
        onto the columns not yet quantized), mq (--bpw: LLM-MQ's gradient-weighted allocation, then GPTQ rounding), \
        awq (AWQ: per layer, scales s = mean|x|^α for the inputs of q/k/v, attn_output, gate/up and ffn_down, α searched \
        over 20 values for the least output error under each tensor's own type; then each block's clipping range searched \
        the same way; imatrix rounding; awq+gptq scales without clipping, then GPTQ), smooth (SmoothQuant: s = \
        max|x|^α / max|W|^(1−α) at the same four inputs, for --act-bits runs). Scales are folded into attn_norm/ffn_norm \
        and the rows of attn_v/ffn_up (per KV group under GQA): the float model's outputs are unchanged and the file \
        stays standard.
        Pivot's extension types \(BlockFormat.extensionFormats.map(\.name).joined(separator: ", ")) (2/3/4 bits in groups of \
        32/64/128 weights with an f16 scale and minimum; 2.25–4.5 bits per weight) go where GGUF has nothing below 4 bits \
        (rows that are not a multiple of 256). --type takes them for a uniform file; --bpw uses them only when no standard \
        assignment fits the budget. Files holding them (or --outliers) run in Pivot only, and the tool says so; \
        --standard-only keeps every method to types llama.cpp loads.
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "Input .gguf file or HuggingFace folder (or a name looked up like every verb's -m).")
    var input: String?

    @Option(name: [.customShort("o"), .customLong("output")], help: "Output .gguf file (written under a temporary name, then renamed).")
    var output: String

    @Option(help: "Target file type: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")).")
    var type: QuantizeFileType

    @Option(help: "Quantization method: rtn, imatrix, gptq, mq (= --bpw allocation + GPTQ rounding); awq (activation-aware scales and clipping, imatrix rounding), awq+gptq, awq+mq; smooth (SmoothQuant scales, --alpha), smooth+gptq, smooth+mq. AWQ and SmoothQuant need --calib; their scales are folded into the norms and the v/up rows, so files stay standard (default: imatrix when --imatrix or --calib is given, else rtn).")
    var method: String?

    @Option(parsing: .unconditional, help: "SmoothQuant's migration strength α in s = max|x|^α / max|W|^(1−α), 0-1 (default 0.5; --method smooth only).")
    var alpha: Double?

    @Flag(help: "No mix: every projection and the output head get the base type (then the block-size fallback), as llama-quantize --pure.")
    var pure = false

    @Option(name: [.customShort("t"), .customLong("threads")], parsing: .unconditional, help: "Worker threads, 1-256 (default: all cores).")
    var threads: Int?

    @OptionGroup(title: "Calibration") var calibrationFlags: QuantizeCalibrationOptions
    @OptionGroup(title: "Calibration chunks") var calibration: CalibrationOptions
    @OptionGroup(title: "Mixed precision, outliers and LSI") var allocation: AllocationOptions

    /// The job these flags describe.
    func job() throws -> QuantizeJob {
        let calibrated = calibrationFlags.imatrix != nil || calibrationFlags.calib != nil
        var parsed: (method: QuantizeMethod, scaling: ChannelScaling?) = (.default(calibrated: calibrated), nil)
        if let method { parsed = try ChannelScaling.resolveMethod(method, alpha: alpha, methodOption: "--method", alphaOption: "--alpha") }
        else if alpha != nil { throw PivotError.invalidArgument("--alpha applies to --method smooth (SmoothQuant) only; AWQ searches its α") }
        var job = QuantizeJob(input: input ?? "", output: output, fileType: type, method: parsed.method)
        job.scaling = parsed.scaling
        job.importanceFile = calibrationFlags.imatrix
        job.calibrationText = calibrationFlags.calib
        job.chunkLength = calibration.chunkLength
        job.chunks = calibration.chunks
        job.calibrationCache = calibrationFlags.calibCache
        job.gradientChunks = calibrationFlags.gradientChunks
        job.actOrder = !calibrationFlags.noActOrder
        job.bitsPerWeight = allocation.bpw
        job.budgetScope = allocation.bpwScope
        job.standardOnly = allocation.standardOnly
        job.outlierPercent = allocation.outliers
        job.lsi = allocation.lsi
        job.pure = pure
        return job
    }

    func validate() throws {
        if let threads { try checkRange("--threads", threads, 1...256) }
        do { try job().validate() } catch PivotError.invalidArgument(let message) { throw ValidationError(message) }
        try OutputPath.check(output, flag: "--output")
    }

    func run() throws {
        guard let path = ModelLocator.resolve(input) else { throw ModelLocator.notFound(input) }
        var job = try job()
        job.input = path
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        var bar: ProgressBar?
        var stage = ""
        let events = QuantizeJob.Events(note: { writeErr($0 + "\n") }, progress: { label, done, total, item in
            if bar == nil || stage != label { bar?.finish(); bar = ProgressBar(total: total, label: label); stage = label }
            bar?.update(done, suffix: item)
            if done == total { bar?.finish(); bar = nil }
        })
        let summary = try job.run(pool: pool, events: events)
        bar?.finish()
        if let (types, achieved) = summary.allocation, let target = job.bitsPerWeight { printAllocation(types, achieved: achieved, target: target) }
        summary.scalingLines.forEach { print($0) }
        summary.lsiLines.forEach { print($0) }
        var counts: [String: Int] = [:]
        for c in summary.choices { counts["\(c.to)", default: 0] += 1 }
        let size = (try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        let source = try GGUFFile(path: output)
        let weights = summary.choices.reduce(0) { $0 + (source.tensors[$1.name]?.elementCount ?? 0) }
        let sizes = String(format: "%.2f MiB, %.2f bits per weight, %.3f bits per projection weight", Double(size) / 1_048_576,
                           Double(size * 8) / Double(weights), projectionBits(source))
        print("\(output): \(sizes), "
              + counts.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
              + (summary.usedGPTQ ? ", GPTQ" : summary.usedImportance ? ", with an importance matrix" : "")
              + String(format: " (%.1f s)", summary.seconds))
    }

    /// Bits per weight of the block projections (blk.N.*.weight matrices) in a written file, their outlier tensors included.
    func projectionBits(_ file: GGUFFile) -> Double {
        var bytes = 0, weights = 0
        for (name, t) in file.tensors where TensorName(name).layer != nil {
            if t.shape.count == 2 && name.hasSuffix(".weight") { bytes += t.byteCount; weights += t.elementCount }
            if name.hasSuffix(SparseOutlierLinear.indexSuffix) || name.hasSuffix(SparseOutlierLinear.valueSuffix) { bytes += t.byteCount }
        }
        return weights > 0 ? Double(bytes * 8) / Double(weights) : 0
    }

    /// The allocation as one line per role: the type of each layer's tensor, then counts.
    func printAllocation(_ types: [String: BlockFormat], achieved: Double, target: Double) {
        print(String(format: "mixed precision: %.4f bits per weight (budget %.4f)", achieved, target))
        for role in ProjectionRole.allCases {
            let layers = types.keys.compactMap { name -> Int? in
                let parsed = TensorName(name)
                return parsed.role == role ? parsed.layer : nil
            }.sorted()
            guard !layers.isEmpty else { continue }
            print("  \(role.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) " + layers.map { types[role.tensorName(layer: $0)]!.name }.joined(separator: " "))
        }
    }
}

/// Where quantization's statistics come from.
struct QuantizeCalibrationOptions: ParsableArguments {
    @Option(help: "Importance matrix file (GGUF, from llama-imatrix or `pivot imatrix`).")
    var imatrix: String?

    @Option(help: "Calibration text: compute the importance matrix (or GPTQ's Hessians) from it before quantizing (e.g. shared/data/calibration.txt).")
    var calib: String?

    @Option(name: .customLong("calib-cache"), help: "GPTQ/MQ: keep the calibration Hessians (and MQ's gradients) in this file and reuse them on later runs with the same model, text and chunking (~0.8 GB for this model; recomputed when they do not match).")
    var calibCache: String?

    @Option(name: .customLong("gradient-chunks"), parsing: .unconditional, help: "--method mq: calibration chunks for the loss gradients that weigh each tensor's error (default 8; each is a float forward and backward pass).")
    var gradientChunks = 8

    @Flag(name: .customLong("no-act-order"), help: "GPTQ: natural column order, each block's scales chosen when reached (default: act-order, scales chosen first).")
    var noActOrder = false
}

/// Allocation under a bit budget, sparse outliers and LSI.
struct AllocationOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Mixed precision: bits per weight of the tensor data (all tensors; the metadata, ~1.8 MB here, not counted); each block projection gets the standard type that minimizes the model's total sensitivity under this budget, solved exactly (--method mq: Σ|gradient|·|Q(W)−W| from --gradient-chunks windows; otherwise Σ E[x²]·(Q(W)−W)²). --type sets the other tensors. Needs --calib or --imatrix.")
    var bpw: Double?

    @Option(name: .customLong("bpw-scope"), help: "What --bpw counts: 'file' (every tensor's data, default) or 'projections' (the allocated block projections and their outliers only: bits per projection weight, the papers' measure; the embedding and norms then follow --type).")
    var bpwScope: MixedPrecision.BudgetScope = .file

    @Flag(name: .customLong("standard-only"), help: "Only types llama.cpp loads: --bpw never falls back to Pivot's group-wise types (an error if the budget needs them), and an extension --type is refused.")
    var standardOnly = false

    @Option(parsing: .unconditional, help: "Sparse FP16 outliers: keep this percent of each projection's weights (the most sensitive) exactly, beside the quantized tensor (0.5 = 0.5%). Counted in --bpw. Such files run only in Pivot (llama.cpp refuses their extra tensors); 0 (default) keeps files standard.")
    var outliers: Double = 0

    @Flag(help: "LSI: learn increments of each projection's top 32 singular values that lower its quantized output error on the calibration inputs (straight-through estimator, Adam, 30 steps), before the final quantization (imatrix, GPTQ or MQ rounding); files stay standard. Needs --calib.")
    var lsi = false
}

extension QuantizeMethod: ExpressibleByArgument {}

extension QuantizeFileType: ExpressibleByArgument {
    public init?(argument: String) {
        guard let type = QuantizeFileType.named(argument) else { return nil }
        self = type
    }
    public static var allValueStrings: [String] { all.map(\.name) }
}
