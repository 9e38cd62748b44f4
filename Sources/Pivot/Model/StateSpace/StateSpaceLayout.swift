import PivotKernels

/// The sizes of a state-space mixer (config.json's expand, state_size, conv_kernel, time_step_rank,
/// num_heads, n_groups; GGUF's `ssm.*`). Mamba: a state per channel, Δ from a low-rank projection.
/// Mamba-2 (`heads` set): channels in heads sharing one scalar A and Δ each, B and C per group.
public struct StateSpaceLayout: Sendable, Equatable {
    /// Channels of the mixer (expand × hidden).
    public var innerSize: Int
    /// State values per channel (N).
    public var stateSize: Int
    public var convolutionKernel: Int
    /// Mamba: inner width of Δ's low-rank projection. Mamba-2: the head count (as llama.cpp stores it).
    public var timeStepRank: Int
    /// Biases on in_proj/out_proj (`use_bias`) and on the convolution (`use_conv_bias`).
    public var projectionBias = false
    public var convolutionBias = true
    /// Mamba-2's heads (nil: Mamba).
    public var heads: Int? = nil
    /// Mamba-2's B/C groups (and groups of its gated RMSNorm).
    public var groups = 1

    public init(innerSize: Int, stateSize: Int, convolutionKernel: Int, timeStepRank: Int) {
        self.innerSize = innerSize; self.stateSize = stateSize; self.convolutionKernel = convolutionKernel; self.timeStepRank = timeStepRank
    }

    /// Channels the convolution runs over: x (Mamba), or x, B and C (Mamba-2).
    public var convolutionChannels: Int { heads == nil ? innerSize : innerSize + 2 * groups * stateSize }
    /// in_proj's output: [x; z] (Mamba) or [z; x; B; C; Δ] (Mamba-2).
    public var inputWidth: Int { heads.map { innerSize + convolutionChannels + $0 } ?? 2 * innerSize }
    /// Mamba's x_proj output: Δ's low-rank input, then B, then C (0 for Mamba-2).
    public var selectionWidth: Int { heads == nil ? timeStepRank + 2 * stateSize : 0 }
    /// Floats of one layer's recurrent state: the convolution's last inputs, then the scan's state.
    public var stateFloats: Int { (convolutionKernel - 1) * convolutionChannels + innerSize * stateSize }
    /// Bytes of one sequence's live state over `layers` layers (its copies aside).
    public func stateBytes(layers: Int) -> Int { stateFloats * layers * 4 }
    /// Parameters outside the projections, per layer: A, D, the convolution's taps and bias (Mamba-2:
    /// and Δ's bias and the gated norm's weights).
    public var vectorParameters: Int {
        let convolution = convolutionKernel * convolutionChannels + (convolutionBias ? convolutionChannels : 0)
        if let heads { return 3 * heads + innerSize + convolution }
        return innerSize * stateSize + innerSize + convolution
    }
    /// A line for `pivot inspect`.
    public var summary: String {
        if let heads {
            return "structured scan (Mamba-2): inner \(innerSize) in \(heads) heads, \(groups) group(s), state \(stateSize), convolution \(convolutionKernel)"
        }
        return "selective scan (Mamba): inner \(innerSize), state \(stateSize), convolution \(convolutionKernel), Δ rank \(timeStepRank)"
    }

    func validate(file: String) throws {
        guard (1...(1 << 18)).contains(innerSize), (1...1024).contains(stateSize), (1...64).contains(convolutionKernel),
              (1...(1 << 16)).contains(timeStepRank), (1...4096).contains(groups) else {
            throw PivotError.malformed(file: file, "implausible state-space sizes (inner \(innerSize), state \(stateSize), kernel \(convolutionKernel), Δ rank \(timeStepRank), groups \(groups))")
        }
        if let heads {
            guard heads >= 1, innerSize % heads == 0, heads % groups == 0 else {
                throw PivotError.malformed(file: file, "\(innerSize) channels cannot form \(heads) heads in \(groups) groups")
            }
        }
    }
}

/// A block's state-space mixer in place of attention and the MLP: Mamba's selective scan or Mamba-2's
/// structured one. Each sequence's convolution history and scan state live in its `RecurrentStateCache`.
public protocol StateSpaceMixer {
    var layout: StateSpaceLayout { get }
    var linears: [LinearOperator] { get }
    /// This mixer with its projections replaced by `transform(projection, role)` (activation bits, Hessians).
    func mapping(_ transform: (LinearOperator, ProjectionRole) -> LinearOperator) -> any StateSpaceMixer
    /// Mixes `x` (the block's normed input, rows of every sequence) into `out` (may be `x`); each
    /// sequence's rows continue the state its cache holds for `layer`.
    func forward(_ x: Matrix, sequences: UnsafeBufferPointer<SequenceSlice>, layer: Int, into out: Matrix,
                 scratch: StateSpaceScratch, context: ComputeContext)
}
