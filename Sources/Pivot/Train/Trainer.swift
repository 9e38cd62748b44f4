import Foundation
import PivotKernels

/// Gives each micro-batch its objective (cross-entropy needs only the batch; distillation runs the
/// teacher on it first).
public protocol ObjectiveSource {
    associatedtype Objective: TokenObjective
    func objective(for batch: [[Int]], pool: ThreadPool) throws -> Objective
}

/// The plain language-modelling objective.
public struct CrossEntropySource: ObjectiveSource {
    public init() {}
    public func objective(for batch: [[Int]], pool: ThreadPool) -> NextTokenCrossEntropy { NextTokenCrossEntropy(batch: batch) }
}

/// Training text cut into non-overlapping windows, served in a seeded order that depends only on
/// (step, micro-batch): a resumed run sees exactly the batches an uninterrupted one would.
public struct TrainingWindows: Sendable {
    public let windows: [[Int]]

    public init(tokens: [Int], length: Int) {
        windows = (0..<(tokens.count / length)).map { Array(tokens[($0 * length)..<(($0 + 1) * length)]) }
    }
    public init(windows: [[Int]]) { self.windows = windows }

    /// The `size` windows of micro-batch `micro` of update `step` (1-based).
    public func batch(step: Int, micro: Int, size: Int, accumulation: Int, seed: UInt64) -> [[Int]] {
        (0..<size).map { j in
            let i = ((step - 1) * accumulation + micro) * size + j
            let epoch = i / windows.count, position = i % windows.count
            return windows[Self.permutation(count: windows.count, seed: seed &+ UInt64(epoch))[position]]
        }
    }

    static func permutation(count: Int, seed: UInt64) -> [Int] {
        var order = Array(0..<count), g = SplitMix64(seed: seed)
        for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, Int(g.next() % UInt64(i + 1))) }
        return order
    }
}

/// Keeps a quantized student's forward weights on its grid: the optimizer updates float master
/// weights and the forward pass reads their projection (the straight-through estimator).
public protocol WeightProjection: AnyObject {
    func project(master: ParameterBuffer, into weights: ParameterBuffer, pool: ThreadPool)
    /// Trains the projection's own parameters (learned grids) from the gradient of the weights it
    /// produced, before the masters take their update; may move the masters with them.
    func learn(gradients: ParameterBuffer, master: ParameterBuffer, weights: ParameterBuffer, rate: Float, pool: ThreadPool)
    /// Those parameters and their optimizer's state, for checkpoints (empty: none).
    var state: [Float] { get }
    func restore(state: [Float]) throws
}

extension WeightProjection {
    public func learn(gradients: ParameterBuffer, master: ParameterBuffer, weights: ParameterBuffer, rate: Float, pool: ThreadPool) {}
    public var state: [Float] { [] }
    public func restore(state: [Float]) throws {}
}

/// What the trainer reports as it goes.
public enum TrainingEvent {
    case resumed(step: Int)
    case step(TrainingRecord, total: Int)
    case checkpoint(path: String, step: Int)
}

/// AdamW on a `TrainableModel`: warm-up + cosine schedule, clipping by global norm, gradient
/// accumulation, a parameter filter, checkpoints every N updates and resumption from them.
public final class Trainer<Source: ObjectiveSource> {
    public let model: TrainableModel
    public let settings: TrainingSettings
    public let data: TrainingWindows
    public let source: Source
    public let projection: WeightProjection?
    /// The weights AdamW updates: the model's own, or float masters when a projection is set.
    public let master: ParameterBuffer
    public private(set) var optimizer: AdamW
    public private(set) var records: [TrainingRecord] = []
    public var checkpointPath: String?
    public var checkpointEvery = 50
    /// Stop after this update without finishing (tests use it to stand for a killed process).
    public var stopAfter: Int?

    public init(model: TrainableModel, settings: TrainingSettings, data: TrainingWindows, source: Source,
                projection: WeightProjection? = nil) {
        self.model = model; self.settings = settings; self.data = data; self.source = source; self.projection = projection
        model.trainable = settings.filter.mask(model.layout)
        if projection != nil {
            master = ParameterBuffer(layout: model.layout)
            master.copy(from: model.weights)
        } else {
            master = model.weights
        }
        optimizer = AdamW(count: model.layout.count, settings: settings.optimizer)
    }

    /// Ranges of the trainable parameters, and of those weight decay applies to (matrices, not norms).
    var trainableRanges: [Range<Int>] { zip(model.layout.entries, model.trainable).filter(\.1).map(\.0.range) }
    var decayedRanges: [Range<Int>] {
        zip(model.layout.entries, model.trainable).filter { $0.1 && $0.0.shape.count == 2 && !$0.0.name.hasPrefix("intact.") }.map(\.0.range)
    }

    /// Trains from the checkpoint's step (when `resume` and one exists) to `settings.steps`.
    public func run(pool: ThreadPool, resume: Bool = false, events: (TrainingEvent) -> Void = { _ in }) throws {
        var first = 1
        if resume, let path = checkpointPath, FileManager.default.fileExists(atPath: path) {
            let checkpoint = try TrainingCheckpoint.read(path: path, layout: model.layout, settings: settings)
            checkpoint.weights.withUnsafeBufferPointer { master.base.update(from: $0.baseAddress!, count: master.count) }
            try projection?.restore(state: checkpoint.projectionState)
            optimizer = checkpoint.optimizer
            records = checkpoint.records
            first = optimizer.step + 1
            events(.resumed(step: optimizer.step))
        }
        projection?.project(master: master, into: model.weights, pool: pool)
        let gradients = ParameterBuffer(layout: model.layout)
        let trainable = trainableRanges, decayed = decayedRanges
        guard first <= settings.steps else { return }
        for step in first...settings.steps {
            let started = Date()
            gradients.zero()
            var loss = 0.0
            for micro in 0..<settings.accumulation {
                let batch = data.batch(step: step, micro: micro, size: settings.batch, accumulation: settings.accumulation, seed: settings.seed)
                let objective = try source.objective(for: batch, pool: pool)
                loss += model.step(batch: batch, objective: objective, gradients: gradients,
                                   gradientScale: 1 / Float(settings.accumulation), pool: pool).loss
            }
            loss /= Double(settings.accumulation)
            guard loss.isFinite else { throw PivotError.invalidArgument("training diverged: the loss is \(loss) at step \(step) (try a lower --lr); the last checkpoint is kept") }
            let norm = gradients.norm(in: trainable)
            if settings.clipNorm > 0 && norm > Double(settings.clipNorm) { gradients.scale(by: settings.clipNorm / Float(norm)) }
            let rate = settings.schedule.rate(at: step)
            projection?.learn(gradients: gradients, master: master, weights: model.weights,
                              rate: settings.gridLearningRate * rate / settings.learningRate, pool: pool)
            optimizer.update(parameters: master.base, gradients: gradients.base, learningRate: rate, decayed: decayed)
            projection?.project(master: master, into: model.weights, pool: pool)
            let seconds = Date().timeIntervalSince(started)
            let record = TrainingRecord(step: step, loss: loss, learningRate: rate, gradientNorm: norm,
                                        tokensPerSecond: Double(settings.tokensPerStep) / seconds, seconds: seconds)
            records.append(record)
            events(.step(record, total: settings.steps))
            if let path = checkpointPath, step % checkpointEvery == 0 || step == settings.steps {
                try TrainingCheckpoint(settings: settings, optimizer: optimizer, records: records, weights: master.base, count: master.count,
                                       projectionState: projection?.state ?? [])
                    .write(path: path, layout: model.layout)
                events(.checkpoint(path: path, step: step))
            }
            if step == stopAfter { return }
        }
    }
}
