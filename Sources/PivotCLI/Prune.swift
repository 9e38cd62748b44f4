import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Structured pruning (OpenBA-V2): drop blocks, FFN channels and unused vocabulary; heal by least squares or distillation.",
        discussion: """
        Stages run in order: blocks (--layers K by the scores printed, or --drop-layers), FFN channels (--ffn, Wanda \
        scores |W|·‖x‖ over gate/up/down), healing (--heal lsq re-fits each changed ffn_down in closed form on --calib \
        so it also adds what dropped blocks added; --heal distill does that, then `pivot distill` with the unpruned \
        model as teacher), vocabulary last (--vocab-corpus: only tokens the corpus uses, plus specials and the 256 byte \
        tokens). The output is a standard GGUF (tensor types kept; ffn_down re-encoded in its own type) that llama.cpp \
        loads; `pivot inspect` lists what was removed. Quantize it afterwards with `pivot quantize` if wanted.
        """)

    @OptionGroup(title: "Model") var model: ModelOptions

    @Option(name: [.customShort("o"), .customLong("output")], help: "The pruned model (.gguf).")
    var output: String

    @Option(parsing: .unconditional, help: "Drop the K least important blocks (by --layer-score).")
    var layers: Int?

    @Option(help: "Drop exactly these blocks, e.g. 12,13,20 (indices of the input model).")
    var dropLayers: String?

    @Option(help: "Block importance used by --layers: kld (mean KLD of the model without that block alone against the whole model, default) or influence (ShortGPT: 1 − cosine of the block's input and output).")
    var layerScore: LayerImportance.Score = .kld

    @Option(parsing: .unconditional, help: "Fraction of every block's FFN channels to remove, 0-0.95 (the width stays a whole number of the tensors' blocks: 32, or 256 for K-quants).")
    var ffn: Double = 0

    @Option(help: "Vocabulary pruning: keep only the tokens this text uses (repeat for several files), plus special, control and byte tokens.")
    var vocabCorpus: [String] = []

    @Option(help: "Healing: none, lsq (least squares re-fit of ffn_down, default) or distill (lsq, then distillation from the input model).")
    var heal: Healing = .lsq

    @Option(help: "Calibration text for scores and healing (default: calibration.txt of the shared data, when found).")
    var calib: String?

    @Option(name: .customLong("calib-ctx"), parsing: .unconditional, help: "Tokens per calibration window (default: 512).")
    var calibContext = 512

    @Option(name: .customLong("calib-chunks"), parsing: .unconditional, help: "Calibration windows for FFN scores and least squares (default: 64).")
    var calibChunks = 64

    @Option(name: .customLong("score-chunks"), parsing: .unconditional, help: "Calibration windows for block scores; each block costs one pass over them (default: 4).")
    var scoreChunks = 4

    @Option(parsing: .unconditional, help: "--heal distill: optimizer updates of 4 × 256 tokens (default: 40).")
    var steps = 40

    @Option(parsing: .unconditional, help: "--heal distill: peak learning rate (default: 1e-4).")
    var lr: Float = 1e-4

    enum Healing: String, ExpressibleByArgument, CaseIterable { case none, lsq, distill }

    var structural: Bool { layers != nil || dropLayers != nil || ffn > 0 }

    func validate() throws {
        if layers != nil && dropLayers != nil { throw ValidationError("--layers and --drop-layers: give one") }
        if let layers { try checkRange("--layers", layers, 1...511) }
        try checkRange("--ffn", ffn, 0...0.95)
        try checkRange("--calib-ctx", calibContext, 16...8192)
        try checkRange("--calib-chunks", calibChunks, 1...100_000)
        try checkRange("--score-chunks", scoreChunks, 1...10_000)
        try checkRange("--steps", steps, 1...1_000_000)
        guard structural || !vocabCorpus.isEmpty else {
            throw ValidationError("nothing to prune: give --layers, --drop-layers, --ffn or --vocab-corpus")
        }
        if heal == .distill && !structural { throw ValidationError("--heal distill heals pruned blocks or channels; the vocabulary needs no healing") }
        _ = try droppedList()
        for file in vocabCorpus where !FileManager.default.fileExists(atPath: file) { throw ValidationError("--vocab-corpus \(file): no such file") }
        try OutputPath.check(output, flag: "--output")
    }

    func droppedList() throws -> [Int]? {
        guard let dropLayers else { return nil }
        let items = dropLayers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let values = items.compactMap { Int($0) }
        guard values.count == items.count, !values.isEmpty, values.allSatisfy({ $0 >= 0 }) else {
            throw ValidationError("--drop-layers \(dropLayers): expected block indices such as 12,13,20")
        }
        guard Set(values).count == values.count else { throw ValidationError("--drop-layers \(dropLayers): a block is listed twice") }
        return values
    }

    func calibrationPath() throws -> String {
        if let calib { guard FileManager.default.fileExists(atPath: calib) else { throw PivotError.fileNotFound(calib) }; return calib }
        guard let found = ModelLocator.sharedDataFile("calibration.txt") else {
            throw ValidationError("--calib: give a calibration text (scores and healing need one)")
        }
        return found
    }

    func run() throws {
        let inputPath = try model.resolvedPath()
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: inputPath, isDirectory: &isFolder), isFolder.boolValue {
            throw ValidationError("-m \(inputPath): pivot prune rewrites GGUF files; convert the folder first (`pivot convert`)")
        }
        let pool = model.makePool()
        let execution = Execution(pool: pool, precision: model.precision)
        let started = Date()
        var current = inputPath
        var temporaries: [String] = []
        defer { for t in temporaries { try? FileManager.default.removeItem(atPath: t) } }
        // The structural stages run the input model; its size line comes from the same load.
        let loaded = try model.load()
        let before = try sizeLine(inputPath, loaded: loaded)

        if structural {
            // Before the block scores: those passes would be wasted on a model the pruning cannot rewrite.
            try loaded.config.requireLlamaBlock(for: "structured pruning")
            let calibration = try calibrationPath()
            let tokens = loaded.tokenizer.encode(try readTextFile(calibration), addBOS: false)
            var dropped = try droppedList() ?? []
            if let count = layers {
                guard count < loaded.config.layerCount else { throw ValidationError("--layers \(count): the model has \(loaded.config.layerCount) blocks") }
                let bar = ProgressBar(total: min(scoreChunks, tokens.count / calibContext) * (loaded.config.layerCount + 1), label: "block scores")
                let importance = try LayerImportance.measure(model: loaded, tokens: tokens, length: calibContext, windows: scoreChunks,
                                                             execution: execution) { done, _ in bar.update(done) }
                bar.finish()
                dropped = importance.leastImportant(count, by: layerScore)
                print("block  influence  drop-alone KLD")
                for i in 0..<loaded.config.layerCount {
                    print(String(format: "%5d  %9.5f  %14.5f%@", i, importance.influence[i], importance.dropKLD[i], dropped.contains(i) ? "  dropped" : ""))
                }
            }
            let plan = PruningPlan(droppedLayers: dropped, ffnRatio: ffn, healing: heal == .none ? .none : .lsq)
            var statistics: PruningStatistics?
            if plan.ffnRatio > 0 || plan.healing == .lsq {
                let bar = ProgressBar(total: min(calibChunks, tokens.count / calibContext), label: "calibration")
                statistics = try PruningStatistics.collect(model: loaded, tokens: tokens, length: calibContext, chunks: calibChunks,
                                                           absorbDropped: plan.healing == .lsq ? dropped : [], execution: execution) { done, _ in bar.update(done) }
                bar.finish()
            }
            let last = heal != .distill && vocabCorpus.isEmpty
            let target = last ? output : output + ".pruned.gguf"
            if !last { temporaries.append(target) }
            let source = try GGUFFile(path: inputPath)
            let bar = ProgressBar(total: loaded.config.layerCount - dropped.count, label: "write")
            let result = try StructuredPruning.write(source: source, plan: plan, statistics: statistics, to: target, pool: pool) { done, _ in bar.update(done) }
            bar.finish()
            result.lines.forEach { print($0) }
            current = target
            if heal == .distill {
                let healed = vocabCorpus.isEmpty ? output : output + ".distilled.gguf"
                if healed != output { temporaries.append(healed) }
                var arguments = ["--teacher", inputPath, "-m", current, "-o", healed, "--data", calibration, "--steps", "\(steps)",
                                 "--batch", "4", "-c", "256", "--lr", "\(lr)", "--warmup", "\(max(1, steps / 10))", "--checkpoint-every", "\(steps)"]
                if let threads = model.threads { arguments += ["-t", "\(threads)"] }
                print("distillation: pivot distill " + arguments.joined(separator: " "))
                try Distill.parse(arguments).run()
                // The checkpoint resumes a killed `pivot distill`; once it finished, prune has no use for it.
                try? FileManager.default.removeItem(atPath: (healed as NSString).deletingPathExtension + ".checkpoint")
                current = healed
            }
        }
        if !vocabCorpus.isEmpty {
            let source = try GGUFFile(path: current)
            let selection = try VocabularySelection.select(source: source, corpus: try vocabCorpus.map(readTextFile).joined(separator: "\n"))
            try selection.write(source: source, to: output)
            print("vocabulary: \(selection.sourceSize) → \(selection.kept.count) tokens (\(selection.removedCount) removed; corpus \(vocabCorpus.joined(separator: ", ")))")
        }
        print("\(inputPath): \(before)")
        print("\(output): \(try sizeLine(output, loaded: LoadedModel.load(path: output)))" + String(format: " (%.1f s)", Date().timeIntervalSince(started)))
    }

    func sizeLine(_ path: String, loaded: LoadedModel) throws -> String {
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return String(format: "%.2f M parameters, %.2f MiB", Double(loaded.parameterCount) / 1e6, Double(size) / 1_048_576)
    }
}

extension LayerImportance.Score: ExpressibleByArgument {}
