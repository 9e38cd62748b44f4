import PivotKernels

/// A state-space block's causal depthwise convolution (then SiLU): Mamba's over x, Mamba-2's over x, B
/// and C. Each sequence's last inputs live in its `RecurrentStateCache`.
struct CausalConvolution {
    /// kernel × channels (the checkpoint's channels × kernel, transposed so that channels vectorize).
    let taps: FloatBuffer
    let bias: FloatBuffer?
    let kernel: Int
    let channels: Int

    /// Convolves each sequence's rows of `input` (columns `offset`..<offset+channels) into `out`,
    /// continuing the history its cache holds for `layer`.
    func forward(_ input: Matrix, offset: Int, sequences: UnsafeBufferPointer<SequenceSlice>, layer: Int, into out: Matrix) {
        for q in sequences {
            guard let state = q.cache.recurrentState else { fatalError("a state-space layer needs a RecurrentStateCache") }
            causalConvolution(input.row(q.start) + offset, inputStride: input.stride, count: q.count, channels: channels, kernel: kernel,
                              taps: taps.pointer, bias: bias.map { UnsafePointer($0.pointer) },
                              history: state.convolutionHistory(layer: layer), out: out.row(q.start), outStride: out.stride)
        }
    }
}
