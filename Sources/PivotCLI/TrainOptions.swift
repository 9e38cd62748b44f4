import ArgumentParser
import Foundation
import Pivot
import PivotKernels

/// The trainer's flags, shared by `pivot train` and `pivot distill`.
struct TrainingOptions: ParsableArguments {
    @Option(name: [.customShort("o"), .customLong("output")], help: "The trained model (.gguf). Beside it: OUT.train.json (the log), OUT.loss.svg (the loss curve) and OUT.checkpoint.")
    var output: String

    @Option(help: "Training text (plain UTF-8), cut into windows of --ctx-size tokens, e.g. shared/data/calibration.txt (never the evaluation text).")
    var data: String

    @Option(parsing: .unconditional, help: "Optimizer updates (default: 100).")
    var steps = 100

    @Option(parsing: .unconditional, help: "Sequences per micro-batch (default: 4).")
    var batch = 4

    @Option(name: .customLong("accumulate"), parsing: .unconditional, help: "Micro-batches whose gradients are summed per update (default: 1).")
    var accumulation = 1

    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional, help: "Tokens per training sequence (default: 512).")
    var length = 512

    @Option(parsing: .unconditional, help: "Peak learning rate of AdamW (default: 5e-5).")
    var lr: Float = 5e-5

    @Option(parsing: .unconditional, help: "Linear warm-up updates before the cosine decay (default: 5% of --steps).")
    var warmup: Int?

    @Option(parsing: .unconditional, help: "The cosine decay ends at this fraction of the peak rate (default: 0.1).")
    var finalLr: Float = 0.1

    @Option(name: .customLong("grid-lr"), parsing: .unconditional, help: "Group-wise students (Q2_G64 …): also train every block's scale and minimum at this peak rate, same schedule (EfficientQAT's end-to-end step; 0, the default: they stay the quantizer's and only codes move).")
    var gridLr: Float = 0

    @Option(parsing: .unconditional, help: "AdamW's decoupled weight decay on matrices; norms never decay (default: 0).")
    var weightDecay: Float = 0

    @Option(parsing: .unconditional, help: "Clip the gradient to this global L2 norm; 0 turns clipping off (default: 1).")
    var clip: Float = 1

    @Option(help: "Which parameters train: all (default) or norms (RMSNorm gains only).")
    var train: TrainedSubset = .all

    @Option(help: "Train only these layers, e.g. 20-29 or 5.")
    var trainLayers: String?

    @Option(help: "Train only tensors whose GGUF name contains one of these comma-separated patterns (`*` globs), e.g. ffn_down,attn_q or blk.*.ffn_*.")
    var trainTensors: String?

    @Option(parsing: .unconditional, help: "Write a checkpoint every N updates (and at the end) to OUT.checkpoint (default: 25).")
    var checkpointEvery = 25

    @Flag(help: "Continue from OUT.checkpoint (same settings required); a killed run loses at most one checkpoint interval.")
    var resume = false

    @Option(parsing: .unconditional, help: "Seed of the order windows are drawn in (default: 1).")
    var seed: UInt64 = 1

    @Option(help: "The output's tensor types: keep (default: the student's own types; group-wise tensors keep their scales and retrain their codes), or F32, F16, BF16, or a quantized type re-quantized by `pivot quantize`'s pipeline (RTN).")
    var type: OutputType = .keep

    enum TrainedSubset: String, ExpressibleByArgument, CaseIterable { case all, norms }

    enum OutputType: ExpressibleByArgument {
        case keep
        case file(QuantizeFileType)
        init?(argument: String) {
            if argument.lowercased() == "keep" { self = .keep; return }
            guard let type = QuantizeFileType.named(argument) else { return nil }
            self = .file(type)
        }
        static var allValueStrings: [String] { ["keep"] + QuantizeFileType.all.map(\.name) }
        var fileType: QuantizeFileType? { if case .file(let t) = self { return t }; return nil }
    }

    func validate() throws {
        try OutputPath.check(output, flag: "--output")
        try checkRange("--steps", steps, 1...10_000_000)
        try checkRange("--batch", batch, 1...4096)
        try checkRange("--accumulate", accumulation, 1...4096)
        try checkRange("--ctx-size", length, 2...131_072)
        try checkRange("--checkpoint-every", checkpointEvery, 1...10_000_000)
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive (got \(lr))") }
        guard (0...1).contains(finalLr) else { throw ValidationError("--final-lr is a fraction of the peak, 0-1 (got \(finalLr))") }
        guard gridLr >= 0, gridLr.isFinite else { throw ValidationError("--grid-lr must not be negative (got \(gridLr))") }
        guard weightDecay >= 0, clip >= 0 else { throw ValidationError("--weight-decay and --clip must not be negative") }
        if let warmup { try checkRange("--warmup", warmup, 0...steps) }
        _ = try layers()
    }

    func layers() throws -> ClosedRange<Int>? {
        guard let trainLayers else { return nil }
        let parts = trainLayers.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard (1...2).contains(parts.count), parts.allSatisfy({ $0 != nil && $0! >= 0 }), parts.first!! <= parts.last!! else {
            throw ValidationError("--train-layers takes a layer or a range such as 20-29 (got '\(trainLayers)')")
        }
        return parts.first!!...parts.last!!
    }

    func settings() throws -> TrainingSettings {
        var s = TrainingSettings(steps: steps, batch: batch, length: length, learningRate: lr, warmupSteps: warmup)
        s.accumulation = accumulation
        s.finalRateFraction = finalLr
        s.optimizer.weightDecay = weightDecay
        s.clipNorm = clip
        s.seed = seed
        s.gridLearningRate = gridLr
        s.filter = ParameterFilter(normsOnly: train == .norms, layers: try layers(),
                                   tensors: trainTensors?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? [])
        return s
    }

    var stem: String { output.hasSuffix(".gguf") ? String(output.dropLast(5)) : output }
    var checkpointPath: String { stem + ".checkpoint" }
    var logPath: String { stem + ".train.json" }
    var curvePath: String { stem + ".loss.svg" }
}
