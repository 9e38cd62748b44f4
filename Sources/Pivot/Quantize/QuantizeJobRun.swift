import Foundation
import PivotKernels

extension QuantizeJob {
    /// Quantizes `input` into `output`: a HuggingFace folder is converted to F32 GGUF first; calibration
    /// (importance matrix, Hessians, gradients) runs as the method needs, or is read from the cache;
    /// `--bpw` allocates types; then every tensor is written.
    @discardableResult
    public func run(pool: ThreadPool, events: Events = Events()) throws -> Summary {
        try validate()
        var path = input
        var isDirectory: ObjCBool = false
        let intermediate = output + ".f32.tmp"
        defer { try? FileManager.default.removeItem(atPath: intermediate) }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue {
            events.note("\(path) is a HuggingFace folder: converting it to F32 GGUF first")
            try HuggingFaceConverter.convert(folder: path, to: intermediate, floatType: .f32)
            path = intermediate
        }
        let source = try GGUFFile(path: path)
        let quantizedTypes = Set(source.tensors.values.compactMap { t -> String? in if case .block(let f) = t.type { return f.name }; return nil })
        if !quantizedTypes.isEmpty {
            events.note("note: \(path) is already quantized (\(quantizedTypes.sorted().joined(separator: ", "))); its weights are dequantized and requantized, which compounds the error")
        }
        let outliers = outlierPercent > 0 ? OutlierPlan(fraction: outlierPercent / 100) : nil
        if let bitsPerWeight {
            // Before the calibration passes (minutes): a budget no allocation can reach fails now.
            try MixedPrecision.checkReachable(source, fileType: fileType, bitsPerWeight: bitsPerWeight, outliers: outliers,
                                              scope: budgetScope, extensions: !standardOnly)
        }
        if scaling != nil || method.usesGradients {
            // Before the calibration passes too: scaling and gradients rewrite or differentiate Llama blocks only.
            try ModelConfig(gguf: source).requireLlamaBlock(for: scaling != nil ? "AWQ/SmoothQuant scaling" : "the gradient-weighted method")
        }
        var calibration = try calibrate(modelPath: path, source: source, pool: pool, events: events)
        if outliers != nil {
            events.note("note: --outliers \(outlierPercent) keeps sparse FP16 weights in extra tensors: the file runs in Pivot only (llama.cpp refuses it); --outliers 0 keeps files standard")
        }
        if fileType.isExtension {
            events.note("note: \(fileType.name) is a Pivot extension type: the file runs in Pivot only (llama.cpp stops at the unknown tensor type)")
        }
        let outlierPlan = outliers.map { OutlierPlan(fraction: $0.fraction, gradients: calibration.gradients) }
        var allocation: (types: [String: BlockFormat], bitsPerWeight: Double)?
        if let bitsPerWeight, let importance = calibration.importance {
            allocation = try MixedPrecision.plan(source, fileType: fileType, bitsPerWeight: bitsPerWeight, importance: importance.values,
                                                 gradients: calibration.gradients, outliers: outlierPlan, scope: budgetScope,
                                                 extensions: !standardOnly, pool: pool) { done, total, name in
                events.progress("sensitivity", done, total, name)
            }
            calibration.gradients = nil
            let extensionTypes = Set(allocation!.types.values.filter(\.isExtension).map(\.name))
            if !extensionTypes.isEmpty {
                events.note("note: no standard assignment fits --bpw \(bitsPerWeight); Pivot's extension types \(extensionTypes.sorted().joined(separator: ", ")) are used: the file runs in Pivot only (--standard-only refuses this)")
            }
        }
        var scalingLines: [String] = []
        var scaled: ScaledModel?
        if let scaling, let hessians = calibration.hessians {
            // Under --bpw the types were allocated on the unscaled weights; the scales are searched for those types.
            var formats: [String: BlockFormat] = [:]
            for choice in try QuantizePipeline.plan(source, fileType: fileType, hasImportance: true, pure: pure) {
                if case .block(let format) = choice.to { formats[choice.name] = format }
            }
            formats.merge(allocation?.types ?? [:]) { $1 }
            let model = try scaling.apply(source: source, hessians: hessians.hessians, formats: formats, pool: pool) { done, total in
                events.progress(scaling.name, done, total, "")
            }
            calibration.hessians = GPTQPlan(hessians: model.hessians, actOrder: actOrder)
            calibration.importance = calibration.hessians!.importance
            scalingLines = model.summary
            scaled = model
        }
        var lsiLines: [String] = []
        let start = Date()
        let gptq = method.roundsWithGPTQ ? calibration.hessians : nil
        let choices = try QuantizePipeline.run(input: path, output: output, fileType: fileType, importance: calibration.importance, pure: pure,
                                               rewritten: scaled?.tensors.views() ?? [:], metadata: scaled.map { [$0.valueScales.metadata] } ?? [],
                                               gptq: gptq, lsiHessians: gptq == nil && lsi ? calibration.hessians : nil,
                                               overrides: allocation?.types ?? [:], outliers: outlierPlan,
                                               lsi: lsi ? SingularValueCompensation() : nil, pool: pool, progress: { done, total, name in
            events.progress("quantize", done, total, name)
        }, report: { lsiLines.append($0) })
        withExtendedLifetime(scaled) {}
        return Summary(choices: choices, allocation: allocation, lsiLines: lsiLines, scalingLines: scalingLines, usedGPTQ: gptq != nil,
                       usedImportance: calibration.importance != nil, seconds: Date().timeIntervalSince(start))
    }

    /// The importance matrix, Hessians and gradients the method needs: one model load and one
    /// tokenization serve them all; Hessians and gradients come from `calibrationCache` when it matches.
    func calibrate(modelPath path: String, source: GGUFFile, pool: ThreadPool, events: Events) throws -> Calibration {
        var result = Calibration()
        if let importanceFile { result.importance = try ImportanceMatrix.load(path: importanceFile) }
        guard let calib = calibrationText else { return result }
        let loaded = try LoadedModel.load(path: path)
        guard chunkLength <= loaded.config.contextLength else {
            throw PivotError.invalidArgument("--calib-ctx \(chunkLength) is longer than the model's context of \(loaded.config.contextLength) tokens")
        }
        let tokens = loaded.tokenizer.encode(try readTextFile(calib), addBOS: false)
        guard method.needsHessians(lsi: lsi) || scaling != nil else {
            let total = min(chunks ?? Int.max, tokens.count / chunkLength)
            events.note("\(calib): \(tokens.count) tokens, \(total) chunks of \(chunkLength) for the importance matrix")
            result.importance = try ImportanceMatrix.collect(model: loaded, tokens: tokens, contextLength: chunkLength, chunks: chunks,
                                                             dataset: (calib as NSString).lastPathComponent, execution: Execution(pool: pool)) { done, total in
                events.progress("imatrix", done, total, "")
            }
            return result
        }
        let hessianChunks = min(chunks ?? 128, tokens.count / chunkLength)
        let key = CalibrationCache.key(model: path, calibration: calib, chunks: hessianChunks, chunkLength: chunkLength)
        let wantsGradients = method.usesGradients
        var cached = try calibrationCache.flatMap { try CalibrationCache.load(path: $0, key: key, gradientChunks: wantsGradients ? gradientChunks : nil) }
        if scaling != nil, let known = cached, known.hessians.values.contains(where: { !$0.hasActivationStatistics }) {
            events.note("\(calibrationCache!): no activation statistics (written before AWQ/SmoothQuant); collecting again")
            cached = nil
        }
        if let cached { events.note("\(calibrationCache!): reusing the cached Hessians\(cached.gradients != nil ? " and gradients" : "")") }
        let hessians: [String: InputHessian]
        if let known = cached?.hessians { hessians = known } else {
            events.note("\(calib): \(tokens.count) tokens, \(hessianChunks) chunks of \(chunkLength) for the GPTQ Hessians")
            hessians = try HessianCollector.collect(model: loaded, tokens: tokens, contextLength: chunkLength, chunks: hessianChunks, pool: pool) { done, total in
                events.progress("hessians", done, total, "")
            }
        }
        var loss: Double?
        if wantsGradients {
            if let known = cached?.gradients { result.gradients = known; loss = cached?.loss }
            else { (result.gradients, loss) = try gradientMagnitudes(source: source, tokens: tokens, pool: pool, events: events) }
        }
        if let calibrationCache, cached == nil || (wantsGradients && cached?.gradients == nil) {
            try CalibrationCache.save(path: calibrationCache, key: key, contents: .init(hessians: hessians, gradients: result.gradients, loss: loss),
                                      gradientChunks: wantsGradients ? gradientChunks : nil)
            events.note("\(calibrationCache): calibration saved for later runs")
        }
        let plan = GPTQPlan(hessians: hessians, actOrder: actOrder)
        result.importance = plan.importance
        result.hessians = plan
        return result
    }

    /// LLM-MQ's gradient magnitudes from the first `gradientChunks` windows of the calibration tokens.
    func gradientMagnitudes(source: GGUFFile, tokens: [Int], pool: ThreadPool, events: Events) throws -> ([String: [Float]], Double) {
        let model = try GradientModel(gguf: source)
        let length = chunkLength
        let windows = (0..<min(gradientChunks, tokens.count / length)).map { Array(tokens[($0 * length)..<(($0 + 1) * length)]) }
        let (magnitudes, loss) = model.gradientMagnitudes(windows: windows, pool: pool) { done, total in events.progress("gradients", done, total, "") }
        events.note(String(format: "calibration loss %.4f (PPL %.3f) over %d windows of %d tokens, float", loss, exp(loss), windows.count, length))
        return (magnitudes, Double(loss))
    }
}
