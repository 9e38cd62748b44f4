import ArgumentParser
import Foundation
import Pivot
import PivotKernels

/// One training run from the command line: the student loaded for training, its text, the trainer's
/// progress on stderr, and at the end the model, the JSON log and the loss curve beside it.
final class TrainingSession {
    let studentPath: String
    let options: TrainingOptions
    let pool: ThreadPool
    let gguf: GGUFFile
    let tokenizer: Tokenizer
    let model: TrainableModel

    init(student: String, options: TrainingOptions, pool: ThreadPool) throws {
        guard student.hasSuffix(".gguf") else {
            throw ValidationError("training reads GGUF files; convert \(student) first (`pivot convert -m \(student) -o model.gguf --type F32`)")
        }
        studentPath = student; self.options = options; self.pool = pool
        gguf = try GGUFFile(path: student)
        tokenizer = try Tokenizer(gguf: gguf)
        model = try TrainableModel(gguf: gguf)
    }

    /// The training text's windows (at least one batch of them).
    func windows() throws -> TrainingWindows {
        let tokens = tokenizer.encode(try readTextFile(options.data))
        let windows = TrainingWindows(tokens: tokens, length: options.length)
        guard windows.windows.count >= options.batch else {
            throw ValidationError("\(options.data): \(tokens.count) tokens make \(windows.windows.count) windows of --ctx-size \(options.length); --batch \(options.batch) needs at least \(options.batch)")
        }
        return windows
    }

    func run<Source: ObjectiveSource>(source: Source, windows: TrainingWindows, extraMetadata: [GGUFMetadataEntry]) throws {
        let settings = try options.settings()
        let grid = StudentGrid(student: gguf, layout: model.layout, learnsGrids: settings.gridLearningRate > 0)
        if settings.gridLearningRate > 0 && !grid.hasGroupGrids {
            throw ValidationError("--grid-lr trains the scales of group-wise tensors (Q2_G64 …); \((studentPath as NSString).lastPathComponent) has none")
        }
        let trainer = Trainer(model: model, settings: settings, data: windows, source: source, projection: grid.isEmpty ? nil : grid)
        trainer.checkpointPath = options.checkpointPath
        trainer.checkpointEvery = options.checkpointEvery
        if !options.resume && FileManager.default.fileExists(atPath: options.checkpointPath) {
            throw ValidationError("\(options.checkpointPath) exists: pass --resume to continue that run, or remove it to start over")
        }
        let trainable = zip(model.layout.entries, model.trainable).filter(\.1).reduce(0) { $0 + $1.0.count }
        guard trainable > 0 else { throw ValidationError("the parameter filter (\(settings.filter.label)) selects no tensor of this model") }
        writeErr(String(format: "training %@ (%.1fM of %.1fM parameters: %@) on %d windows of %d tokens; %d updates × %d tokens%@\n",
                        (studentPath as NSString).lastPathComponent, Double(trainable) / 1e6, Double(model.layout.count) / 1e6, settings.filter.label,
                        windows.windows.count, settings.length, settings.steps, settings.tokensPerStep,
                        grid.isEmpty ? "" : "; straight-through estimator on the student's quantized tensors"
                            + (settings.gridLearningRate > 0 ? String(format: ", their group scales and minimums learning at %.1e", settings.gridLearningRate) : "")))
        let bar = ProgressBar(total: settings.steps, label: "train")
        var interrupted: Error?
        do {
            try trainer.run(pool: pool, resume: options.resume) { event in
                switch event {
                case .resumed(let step): writeErr("resumed from \(options.checkpointPath) after update \(step)\n")
                case .step(let r, _):
                    bar.update(r.step, suffix: String(format: "loss %.4f lr %.2e |g| %.2f %.0f tok/s", r.loss, r.learningRate, r.gradientNorm, r.tokensPerSecond))
                case .checkpoint: break
                }
            }
        } catch { interrupted = error }
        bar.finish()
        try writeLog(trainer.records, settings: settings)
        if let interrupted { throw interrupted }
        let writeBar = ProgressBar(total: gguf.tensorOrder.count, label: "write")
        try TrainedModelWriter.write(weights: trainer.master, like: gguf, grid: grid.isEmpty ? nil : grid, fileType: options.type.fileType,
                                     extraMetadata: extraMetadata + [GGUFMetadataEntry("pivot.train.steps", .uint(UInt64(settings.steps)), type: 4)],
                                     to: options.output, pool: pool) { done, total, _ in writeBar.update(done) }
        writeBar.finish()
        let first = trainer.records.first?.loss ?? .nan, last = trainer.records.suffix(10).map(\.loss)
        writeOut(String(format: "%@: loss %.4f → %.4f (mean of the last %d updates); log %@, curve %@\n", options.output, first,
                        last.reduce(0, +) / Double(max(1, last.count)), last.count, options.logPath, options.curvePath))
    }

    /// The JSON log and the SVG loss curve (raw per-update loss and its running mean).
    func writeLog(_ records: [TrainingRecord], settings: TrainingSettings) throws {
        struct Log: Encodable { let student: String; let settings: TrainingSettings; let records: [TrainingRecord] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try OutputPath.write(try encoder.encode(Log(student: studentPath, settings: settings, records: records)), to: options.logPath)
        guard !records.isEmpty else { return }
        let window = max(1, records.count / 20)
        let smoothed = records.indices.map { i -> SVGPlot.Point in
            let slice = records[max(0, i - window + 1)...i]
            return SVGPlot.Point(x: Double(records[i].step), y: slice.map(\.loss).reduce(0, +) / Double(slice.count), label: "")
        }
        let svg = SVGPlot.lines(title: "Training loss — \((studentPath as NSString).lastPathComponent)", xLabel: "update", yLabel: "loss (nats/token)",
                                series: [SVGPlot.Series(name: "running mean (\(window))", points: smoothed),
                                         SVGPlot.Series(name: "per update", points: records.map { SVGPlot.Point(x: Double($0.step), y: $0.loss, label: "") })])
        try OutputPath.write(Data(svg.utf8), to: options.curvePath)
    }
}
