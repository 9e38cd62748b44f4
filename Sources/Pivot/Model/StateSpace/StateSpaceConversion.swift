import Foundation
import PivotKernels

extension HuggingFaceConverter {
    /// A state-space block's mixer as llama.cpp's converter writes it: A = −exp(A_log), the convolution
    /// squeezed to [channels, kernel] (F32: llama-quantize never quantizes it), vectors F32, the
    /// projections in the chosen float type. Mamba-2 adds Δ's bias as `ssm_dt.bias`, A and D as
    /// [heads, 1] and the gated norm as [groups, inner / groups].
    static func convertStateSpace(_ layout: StateSpaceLayout, hf: StateSpaceNaming, gg: StateSpaceNaming, prefix p: String, to b: String,
                                  store: TensorStore, folder: String, emit: (String, [Float], [Int], TensorType?) -> Void) throws {
        func read(_ name: String) throws -> (values: [Float], shape: [Int]) { try floats(store, name, folder: folder) }
        let inner = layout.innerSize, channels = layout.convolutionChannels
        let projections = layout.heads == nil ? [(hf.input, gg.input), (hf.selection, gg.selection), (hf.timeStep, gg.timeStep), (hf.output, gg.output)]
            : [(hf.input, gg.input), (hf.output, gg.output)]
        for (from, to) in projections {
            let w = try read(p + from + ".weight")
            emit(b + to + ".weight", w.values, w.shape, nil)
            let bias = p + from + ".bias"
            if store.tensor(named: bias) != nil { emit(b + to + ".bias", try read(bias).values, [w.shape[0]], nil) }
        }
        let conv = try read(p + hf.convolution + ".weight")
        emit(b + gg.convolution + ".weight", conv.values, [channels, layout.convolutionKernel], .f32)
        if layout.convolutionBias { emit(b + gg.convolution + ".bias", try read(p + hf.convolution + ".bias").values, [channels], nil) }
        var a = try read(p + hf.a).values
        if hf.aIsLogarithm { a = a.map { -expf($0) } }
        let d = try read(p + hf.d).values
        if let heads = layout.heads {
            emit(b + gg.timeStepBias, try read(p + hf.timeStepBias).values, [heads], nil)
            emit(b + gg.a, a, [heads, 1], .f32)
            emit(b + gg.d, d, [heads, 1], .f32)
            emit(b + gg.norm, try read(p + hf.norm).values, [layout.groups, inner / layout.groups], .f32)
        } else {
            emit(b + gg.a, a, [inner, layout.stateSize], .f32)
            emit(b + gg.d, d, [inner], nil)
        }
    }
}
