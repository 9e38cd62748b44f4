import PivotKernels

/// CSKV's settings: keys (before RoPE) and values as low-rank latent channels per head, `rank` of all
/// channels on average, F16 or 4-bit, the newest `window` tokens exact.
public struct CSKVSettings: KVCacheSettings, Equatable {
    /// Latent channels as a fraction of all key/value channels (allocated per head from the calibration error).
    public var rank: Double
    /// Latent storage, 16 (F16) or 4 bits.
    public var latentBits: Int
    public var window: Int
    /// The factor file (made from calibration text when missing; default in the cache folder).
    public var factors: String?
    /// Calibration text for new factors (default: calibration.txt of the shared data).
    public var calibration: String?
    /// AdamW steps per layer that fine-tune the closed form on the attention-output error (0: the closed form).
    public var trainSteps: Int
    /// Their peak learning rate, relative to each factor matrix's RMS.
    public var trainLearningRate: Double

    public static let defaultWindow = 32
    public static let defaultTrainLearningRate = 0.01

    public init(window: Int = CSKVSettings.defaultWindow, rank: Double = 0.5, latentBits: Int = 16, factors: String? = nil, calibration: String? = nil,
                trainSteps: Int = 0, trainLearningRate: Double = CSKVSettings.defaultTrainLearningRate) {
        self.rank = rank; self.latentBits = latentBits; self.window = window; self.factors = factors; self.calibration = calibration
        self.trainSteps = trainSteps; self.trainLearningRate = trainLearningRate
    }

    public func validate(headDim: Int? = nil) throws {
        guard rank > 0, rank <= 1 else { throw PivotError.invalidArgument("--kv-rank must be in (0, 1] (got \(rank))") }
        guard latentBits == 16 || latentBits == 4 else { throw PivotError.invalidArgument("--kv-latent-bits must be 16 or 4 (got \(latentBits))") }
        guard window >= 0 else { throw PivotError.invalidArgument("--kv-window must be >= 0 (got \(window))") }
        guard trainSteps >= 0 else { throw PivotError.invalidArgument("--kv-train-steps must be >= 0 (got \(trainSteps))") }
        guard trainLearningRate > 0, trainLearningRate.isFinite else { throw PivotError.invalidArgument("--kv-train-lr must be > 0 (got \(trainLearningRate))") }
    }

    /// "cskv-50%", "cskv-25% l4 r16", "cskv-50% l4 t100" (trained 100 steps).
    public var label: String {
        var s = "cskv-\(Int((rank * 100).rounded()))%"
        if latentBits != 16 { s += " l\(latentBits)" }
        if window != Self.defaultWindow { s += " r\(window)" }
        if trainSteps > 0 {
            s += " t\(trainSteps)"
            if trainLearningRate != Self.defaultTrainLearningRate { s += String(format: " lr%g", trainLearningRate) }
        }
        return s
    }

    /// Latents of every token (written on arrival), the exact F32 window, and the F32 encoder and
    /// decoder rows of every head (fixed, so they weigh less per token as the context grows).
    public func bytes(atLength tokens: Int, shape: AttentionShape) -> Double {
        let d = Double(shape.headDim), heads = Double(shape.layers * shape.kvHeads)
        let vectors = Double(shape.layers * shape.kvHeads * 2)
        let channels = Double(latentChannels(shape: shape))
        let latent = latentBits == 16 ? 2 * channels : channels / 2 + 4 * vectors
        return Double(tokens) * latent + heads * Double(min(tokens, window)) * 2 * d * 4 + 2 * channels * d * 4
    }

    /// Latent channels over all heads: `rank` of all channels, in steps of 8 (as allocated).
    public func latentChannels(shape: AttentionShape) -> Int {
        LowRankKVFactors.channelBudget(fraction: rank, channels: shape.layers * shape.kvHeads * 2 * shape.headDim)
    }
}
