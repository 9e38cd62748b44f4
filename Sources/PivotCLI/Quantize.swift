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
        onto the columns not yet quantized), mq (--bpw: LLM-MQ's gradient-weighted allocation, then GPTQ rounding).
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
    var type: String

    @Option(help: "Importance matrix file (GGUF, from llama-imatrix or `pivot imatrix`).")
    var imatrix: String?

    @Option(help: "Calibration text: compute the importance matrix from it before quantizing (e.g. shared/data/calibration.txt).")
    var calib: String?

    @OptionGroup var calibration: CalibrationOptions

    @Option(help: "Quantization method: rtn, imatrix, gptq, or mq (= --bpw allocation + GPTQ rounding) (default: imatrix when --imatrix or --calib is given, else rtn).")
    var method: String?

    @Option(help: "Mixed precision: bits per weight of the tensor data (all tensors; the metadata, ~1.8 MB here, not counted); each block projection gets the standard type that minimizes the model's total sensitivity under this budget, solved exactly (--method mq: Σ|gradient|·|Q(W)−W| from --gradient-chunks windows; otherwise Σ E[x²]·(Q(W)−W)²). --type sets the other tensors. Needs --calib or --imatrix.")
    var bpw: Double?

    @Option(name: .customLong("bpw-scope"), help: "What --bpw counts: 'file' (every tensor's data, default) or 'projections' (the allocated block projections and their outliers only: bits per projection weight, the papers' measure; the embedding and norms then follow --type).")
    var bpwScope: MixedPrecision.BudgetScope = .file

    @Flag(name: .customLong("standard-only"), help: "Only types llama.cpp loads: --bpw never falls back to Pivot's group-wise types (an error if the budget needs them), and an extension --type is refused.")
    var standardOnly = false

    @Option(help: "Sparse FP16 outliers: keep this percent of each projection's weights (the most sensitive) exactly, beside the quantized tensor (0.5 = 0.5%). Counted in --bpw. Such files run only in Pivot (llama.cpp refuses their extra tensors); 0 (default) keeps files standard.")
    var outliers: Double = 0

    @Flag(help: "LSI: learn increments of each projection's top 32 singular values that lower its quantized output error on the calibration inputs (straight-through estimator, Adam, 30 steps), before the final quantization (imatrix, GPTQ or MQ rounding); files stay standard. Needs --calib.")
    var lsi = false

    @Option(name: .customLong("calib-cache"), help: "GPTQ/MQ: keep the calibration Hessians (and MQ's gradients) in this file and reuse them on later runs with the same model, text and chunking (~0.8 GB for this model; recomputed when they do not match).")
    var calibCache: String?

    @Option(name: .customLong("gradient-chunks"), help: "--method mq: calibration chunks for the loss gradients that weigh each tensor's error (default 8; each is a float forward and backward pass).")
    var gradientChunks = 8

    @Flag(name: .customLong("no-act-order"), help: "GPTQ: natural column order, each block's scales chosen when reached (default: act-order, scales chosen first).")
    var noActOrder = false

    @Flag(help: "No mix: every projection and the output head get the base type (then the block-size fallback), as llama-quantize --pure.")
    var pure = false

    @Option(name: [.customShort("t"), .customLong("threads")], help: "Worker threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        guard QuantizeFileType.named(type) != nil else {
            throw ValidationError("unknown --type '\(type)' (available: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")))")
        }
        guard imatrix == nil || calib == nil else { throw ValidationError("give --imatrix or --calib, not both") }
        switch method {
        case nil: break
        case "rtn": guard imatrix == nil && calib == nil else { throw ValidationError("--method rtn uses no calibration; drop --imatrix / --calib") }
        case "imatrix": guard imatrix != nil || calib != nil else { throw ValidationError("--method imatrix needs --imatrix FILE or --calib TEXT") }
        case "gptq": guard calib != nil else { throw ValidationError("--method gptq needs --calib TEXT (its Hessians come from running the model on it)") }
        case "mq": guard calib != nil, bpw != nil else { throw ValidationError("--method mq needs --calib TEXT and --bpw X") }
        default: throw ValidationError("unknown --method '\(method!)' (available: rtn, imatrix, gptq, mq)")
        }
        if let bpw {
            guard bpw > 1, bpw < 33 else { throw ValidationError("--bpw must be between 1 and 33 bits per weight") }
            guard imatrix != nil || calib != nil else { throw ValidationError("--bpw allocates by calibrated sensitivity: give --calib TEXT (or --imatrix FILE)") }
        }
        if lsi && (calib == nil || method == "rtn") { throw ValidationError("--lsi needs --calib TEXT (its error is weighed by the calibration Hessians) and --method imatrix, gptq or mq") }
        guard outliers >= 0, outliers < 50 else { throw ValidationError("--outliers is a percent between 0 and 50") }
        if outliers > 0 && imatrix == nil && calib == nil { throw ValidationError("--outliers chooses weights by calibrated sensitivity: give --calib TEXT (or --imatrix FILE)") }
        if noActOrder && method != "gptq" && method != "mq" { throw ValidationError("--no-act-order applies to --method gptq or mq only") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if standardOnly, QuantizeFileType.named(type)!.isExtension {
            throw ValidationError("--type \(type) is a Pivot extension type; --standard-only allows only types llama.cpp loads")
        }
        if standardOnly && outliers > 0 { throw ValidationError("--outliers adds tensors llama.cpp refuses; drop it or --standard-only") }
        try calibration.check()
    }

    func run() throws {
        guard var path = ModelLocator.resolve(input) else { throw PivotError.fileNotFound(input ?? ModelLocator.defaultModelName) }
        var isDirectory: ObjCBool = false
        let intermediate = output + ".f32.tmp"
        defer { try? FileManager.default.removeItem(atPath: intermediate) }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue {
            // A HuggingFace folder: through `pivot convert`'s code to an F32 GGUF first.
            writeErr("\(path) is a HuggingFace folder: converting it to F32 GGUF first\n")
            try HuggingFaceConverter.convert(folder: path, to: intermediate, floatType: .f32)
            path = intermediate
        }
        let fileType = QuantizeFileType.named(type)!
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        let source = try GGUFFile(path: path)
        let quantizedTypes = Set(source.tensors.values.compactMap { t -> String? in if case .block(let f) = t.type { return f.name }; return nil })
        if !quantizedTypes.isEmpty {
            writeErr("note: \(path) is already quantized (\(quantizedTypes.sorted().joined(separator: ", "))); its weights are dequantized and requantized, which compounds the error\n")
        }
        if let bpw {
            // Before the calibration passes (minutes): a budget no allocation can reach fails now.
            try MixedPrecision.checkReachable(source, fileType: fileType, bitsPerWeight: bpw, outliers: outliers > 0 ? OutlierPlan(fraction: outliers / 100) : nil,
                                              scope: bpwScope, extensions: !standardOnly)
        }
        var importance: ImportanceMatrix?
        var gptq: GPTQPlan?
        var lsiHessians: GPTQPlan?
        var gradients: [String: [Float]]?
        if let imatrix { importance = try ImportanceMatrix.load(path: imatrix) }
        if let calib {
            // One model and one tokenization serve the Hessians, the importance matrix and the gradients.
            let loaded = try LoadedModel.load(path: path)
            if method == "gptq" || method == "mq" || lsi {
                let tokens = try calibration.tokens(loaded, file: calib)
                let key = CalibrationCache.key(model: path, calibration: calib, chunks: min(calibration.chunks ?? 128, tokens.count / calibration.chunkLength),
                                               chunkLength: calibration.chunkLength)
                let wantsGradients = method == "mq"
                let cached = try calibCache.flatMap { try CalibrationCache.load(path: $0, key: key, gradientChunks: wantsGradients ? gradientChunks : nil) }
                if cached != nil { writeErr("\(calibCache!): reusing the cached Hessians\(cached?.gradients != nil ? " and gradients" : "")\n") }
                let hessians = try cached?.hessians ?? calibration.collectHessians(loaded, tokens: tokens, file: calib, pool: pool)
                var loss: Double?
                if wantsGradients {
                    if let known = cached?.gradients { gradients = known; loss = cached?.loss }
                    else { (gradients, loss) = try gradientMagnitudes(source: source, tokens: tokens, pool: pool) }
                }
                if let calibCache, cached == nil || (wantsGradients && cached?.gradients == nil) {
                    try CalibrationCache.save(path: calibCache, key: key, contents: .init(hessians: hessians, gradients: gradients, loss: loss),
                                              gradientChunks: wantsGradients ? gradientChunks : nil)
                    writeErr("\(calibCache): calibration saved for later runs\n")
                }
                let plan = GPTQPlan(hessians: hessians, actOrder: !noActOrder)
                importance = plan.importance
                if method == "gptq" || method == "mq" { gptq = plan } else { lsiHessians = plan }
            } else {
                importance = try calibration.collect(loaded, file: calib, pool: pool)
            }
        }
        var overrides: [String: BlockFormat] = [:]
        let outlierPlan = outliers > 0 ? OutlierPlan(fraction: outliers / 100, gradients: gradients) : nil
        if outlierPlan != nil {
            writeErr("note: --outliers \(outliers) keeps sparse FP16 weights in extra tensors: the file runs in Pivot only (llama.cpp refuses it); --outliers 0 keeps files standard\n")
        }
        if fileType.isExtension {
            writeErr("note: \(fileType.name) is a Pivot extension type: the file runs in Pivot only (llama.cpp stops at the unknown tensor type)\n")
        }
        if let bpw, let importance {
            let sensitivityBar = ProgressBar(total: source.tensorOrder.count, label: "sensitivity")
            let (types, achieved) = try MixedPrecision.plan(source, fileType: fileType, bitsPerWeight: bpw, importance: importance.values,
                                                               gradients: gradients, outliers: outlierPlan, scope: bpwScope, extensions: !standardOnly,
                                                               pool: pool) { done, total, name in
                sensitivityBar.update(done, suffix: name)
            }
            sensitivityBar.finish()
            overrides = types
            gradients = nil
            printAllocation(types, achieved: achieved, target: bpw)
            let extensionTypes = Set(types.values.filter(\.isExtension).map(\.name))
            if !extensionTypes.isEmpty {
                writeErr("note: no standard assignment fits --bpw \(bpw); Pivot's extension types \(extensionTypes.sorted().joined(separator: ", ")) are used: the file runs in Pivot only (--standard-only refuses this)\n")
            }
        }
        var lsiLines: [String] = []
        let bar = ProgressBar(total: source.tensorOrder.count, label: "quantize")
        let start = Date()
        let choices = try QuantizePipeline.run(input: path, output: output, fileType: fileType, importance: importance, pure: pure,
                                               gptq: gptq, lsiHessians: lsiHessians, overrides: overrides, outliers: outlierPlan,
                                               lsi: lsi ? SingularValueCompensation() : nil, pool: pool, progress: { done, _, name in
            bar.update(done, suffix: name)
        }, report: { lsiLines.append($0) })
        bar.finish()
        lsiLines.forEach { print($0) }
        var counts: [String: Int] = [:]
        for c in choices { counts["\(c.to)", default: 0] += 1 }
        let size = (try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        let weights = choices.reduce(0) { $0 + (source.tensors[$1.name]?.elementCount ?? 0) }
        let sizes = String(format: "%.2f MiB, %.2f bits per weight, %.3f bits per projection weight", Double(size) / 1_048_576,
                           Double(size * 8) / Double(weights), try projectionBits(output))
        print("\(output): \(sizes), "
              + counts.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
              + (gptq != nil ? ", GPTQ" : importance != nil ? ", with an importance matrix" : "")
              + String(format: " (%.1f s)", Date().timeIntervalSince(start)))
    }

    /// Bits per weight of the block projections (blk.N.*.weight matrices) in a written file, their outlier tensors included.
    func projectionBits(_ path: String) throws -> Double {
        let file = try GGUFFile(path: path)
        var bytes = 0, weights = 0
        for (name, t) in file.tensors where name.hasPrefix("blk.") {
            if t.shape.count == 2 && name.hasSuffix(".weight") { bytes += t.byteCount; weights += t.elementCount }
            if name.hasSuffix(SparseOutlierLinear.indexSuffix) || name.hasSuffix(SparseOutlierLinear.valueSuffix) { bytes += t.byteCount }
        }
        return weights > 0 ? Double(bytes * 8) / Double(weights) : 0
    }

    /// The allocation as one line per role: the type of each layer's tensor, then counts.
    func printAllocation(_ types: [String: BlockFormat], achieved: Double, target: Double) {
        print(String(format: "mixed precision: %.4f bits per weight (budget %.4f)", achieved, target))
        for role in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            let layers = types.keys.compactMap { name -> Int? in
                guard name.hasSuffix(".\(role).weight") else { return nil }
                return Int(name.dropFirst(4).prefix { $0.isNumber })
            }.sorted()
            guard !layers.isEmpty else { continue }
            print("  \(role.padding(toLength: 12, withPad: " ", startingAt: 0)) " + layers.map { types["blk.\($0).\(role).weight"]!.name }.joined(separator: " "))
        }
    }

    /// LLM-MQ's gradient magnitudes from the first --gradient-chunks windows of the calibration tokens.
    func gradientMagnitudes(source: GGUFFile, tokens: [Int], pool: ThreadPool) throws -> ([String: [Float]], Double) {
        guard gradientChunks >= 1 else { throw ValidationError("--gradient-chunks must be at least 1") }
        let model = try GradientModel(gguf: source)
        let length = calibration.chunkLength
        let windows = (0..<min(gradientChunks, tokens.count / length)).map { Array(tokens[($0 * length)..<(($0 + 1) * length)]) }
        let bar = ProgressBar(total: windows.count, label: "gradients")
        let (magnitudes, loss) = model.gradientMagnitudes(windows: windows, pool: pool) { done, _ in bar.update(done) }
        bar.finish()
        writeErr(String(format: "calibration loss %.4f (PPL %.3f) over %d windows of %d tokens, float\n", loss, exp(loss), windows.count, length))
        return (magnitudes, Double(loss))
    }
}
