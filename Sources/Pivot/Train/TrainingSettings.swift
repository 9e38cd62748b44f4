import Foundation

/// Which parameters train. Everything by default; `norms` keeps only RMSNorm gains; layers and
/// tensor-name patterns narrow further (`ffn_*`, `attn_q`, `output_norm`).
public struct ParameterFilter: Codable, Equatable, Sendable {
    public var normsOnly = false
    public var layers: ClosedRange<Int>?
    /// Substrings or `*` globs matched against GGUF names; empty: every tensor.
    public var tensors: [String] = []
    /// Include the intact prefix's keys/values (only those, when `prefixOnly`).
    public var prefixOnly = false

    public init(normsOnly: Bool = false, layers: ClosedRange<Int>? = nil, tensors: [String] = [], prefixOnly: Bool = false) {
        self.normsOnly = normsOnly; self.layers = layers; self.tensors = tensors; self.prefixOnly = prefixOnly
    }

    public func includes(_ name: String) -> Bool {
        let isPrefix = name.hasPrefix("intact.")
        if prefixOnly || isPrefix { return prefixOnly && isPrefix }
        if normsOnly && !name.contains("norm") { return false }
        if let layers {
            guard let layer = TensorName(name).layer, layers.contains(layer) else { return false }
        }
        if tensors.isEmpty { return true }
        return tensors.contains { pattern in Self.matches(pattern, name) }
    }

    static func matches(_ pattern: String, _ name: String) -> Bool {
        guard pattern.contains("*") else { return name.contains(pattern) }
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
        var rest = Substring(name)
        for (i, part) in parts.enumerated() where !part.isEmpty {
            guard let r = rest.range(of: part) else { return false }
            if i == 0 && !pattern.hasPrefix("*") && r.lowerBound != rest.startIndex { return false }
            rest = rest[r.upperBound...]
        }
        return pattern.hasSuffix("*") || parts.last!.isEmpty || name.hasSuffix(parts.last!)
    }

    /// Per layout entry, in order.
    public func mask(_ layout: ParameterLayout) -> [Bool] { layout.entries.map { includes($0.name) } }

    public var label: String {
        if prefixOnly { return "intact prefix" }
        var parts: [String] = []
        if normsOnly { parts.append("norms") }
        if let layers { parts.append("layers \(layers.lowerBound)-\(layers.upperBound)") }
        if !tensors.isEmpty { parts.append(tensors.joined(separator: ",")) }
        return parts.isEmpty ? "all parameters" : parts.joined(separator: ", ")
    }
}

/// Everything that decides a training run's result: a checkpoint stores it, and `--resume` refuses
/// to continue under different settings.
public struct TrainingSettings: Codable, Equatable, Sendable {
    public var steps: Int
    /// Sequences per micro-batch, and micro-batches summed per update.
    public var batch: Int
    public var accumulation: Int = 1
    /// Tokens per sequence.
    public var length: Int
    public var learningRate: Float
    public var warmupSteps: Int
    /// The cosine schedule ends at this fraction of the peak rate.
    public var finalRateFraction: Float = 0.1
    public var optimizer = AdamWSettings()
    /// Gradient clipping by global norm (0: off).
    public var clipNorm: Float = 1
    public var filter = ParameterFilter()
    /// Seed of the window order.
    public var seed: UInt64 = 1
    /// Peak rate of a group-wise student's learned scales and minimums (0: the quantizer's stay);
    /// they follow the same warm-up and cosine.
    public var gridLearningRate: Float = 0

    public init(steps: Int, batch: Int, length: Int, learningRate: Float, warmupSteps: Int? = nil) {
        self.steps = steps; self.batch = batch; self.length = length; self.learningRate = learningRate
        self.warmupSteps = warmupSteps ?? max(1, steps / 20)
    }

    public var schedule: LearningRateSchedule {
        LearningRateSchedule(peak: learningRate, warmupSteps: warmupSteps, totalSteps: steps, floor: finalRateFraction)
    }
    public var tokensPerStep: Int { batch * accumulation * length }
}

/// One update's record in the training log.
public struct TrainingRecord: Codable, Equatable, Sendable {
    public var step: Int
    public var loss: Double
    public var learningRate: Float
    public var gradientNorm: Double
    public var tokensPerSecond: Double
    public var seconds: Double
}
