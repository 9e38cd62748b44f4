import Foundation
import PivotKernels

extension HuggingFaceConverter {
    /// A Mamba block's mixer as llama.cpp's converter writes it: A = −exp(A_log) (F32), the convolution
    /// squeezed to [inner, kernel] (F32, llama-quantize never quantizes it), D and the biases F32, the
    /// four projections in the chosen float type.
    static func convertStateSpace(_ layout: StateSpaceLayout, hf: StateSpaceNaming, gg: StateSpaceNaming, prefix p: String, to b: String,
                                  store: TensorStore, folder: String, emit: (String, [Float], [Int], TensorType?) -> Void) throws {
        func read(_ name: String) throws -> (values: [Float], shape: [Int]) { try floats(store, name, folder: folder) }
        let inner = layout.innerSize
        for (from, to) in [(hf.input, gg.input), (hf.selection, gg.selection), (hf.timeStep, gg.timeStep), (hf.output, gg.output)] {
            let w = try read(p + from + ".weight")
            emit(b + to + ".weight", w.values, w.shape, nil)
            let bias = p + from + ".bias"
            if store.tensor(named: bias) != nil { emit(b + to + ".bias", try read(bias).values, [w.shape[0]], nil) }
        }
        let conv = try read(p + hf.convolution + ".weight")
        emit(b + gg.convolution + ".weight", conv.values, [inner, layout.convolutionKernel], .f32)
        if layout.convolutionBias { emit(b + gg.convolution + ".bias", try read(p + hf.convolution + ".bias").values, [inner], nil) }
        var a = try read(p + hf.a).values
        if hf.aIsLogarithm { a = a.map { -expf($0) } }
        emit(b + gg.a, a, [inner, layout.stateSize], .f32)
        emit(b + gg.d, try read(p + hf.d).values, [inner], nil)
    }
}
