import Foundation
import PivotKernels

/// A state-space block's mixer from a tensor store (HF or llama.cpp names), checking every shape.
enum StateSpaceLoading {
    /// `linear(name, out, in, bias)`: the loader's projection (its quantize-on-load, outliers and biases).
    static func mixer(store: TensorStore, names m: StateSpaceNaming, prefix p: String, layout l: StateSpaceLayout, hidden: Int, epsilon: Float,
                      linear: (String, Int, Int, Bool) throws -> LinearOperator) throws -> any StateSpaceMixer {
        let inner = l.innerSize, k = l.convolutionKernel, channels = l.convolutionChannels
        /// A tensor of `count` values stored under any of the shapes formats give it (HF [h], llama.cpp [h, 1]).
        func values(_ name: String, _ count: Int, shapes: [[Int]]) throws -> [Float] {
            guard let t = store.tensor(named: name) else { throw PivotError.missingTensor(file: store.path, name) }
            guard shapes.contains(t.shape) else { throw PivotError.shapeMismatch(file: store.path, tensor: name, expected: shapes[0], found: t.shape) }
            return t.toFloats()
        }
        func buffer(_ values: [Float]) -> FloatBuffer {
            let b = FloatBuffer(count: values.count)
            values.withUnsafeBufferPointer { b.pointer.update(from: $0.baseAddress!, count: values.count) }
            return b
        }
        // The convolution's taps, transposed to kernel × channels.
        let raw = try values(p + m.convolution + ".weight", k * channels, shapes: [[channels, 1, k], [channels, k]])
        let taps = FloatBuffer(count: k * channels)
        for channel in 0..<channels { for j in 0..<k { taps.pointer[j * channels + channel] = raw[channel * k + j] } }
        let convolution = CausalConvolution(
            taps: taps, bias: l.convolutionBias ? buffer(try values(p + m.convolution + ".bias", channels, shapes: [[channels]])) : nil,
            kernel: k, channels: channels)
        func negativeA(_ stored: [Float]) -> [Float] { m.aIsLogarithm ? stored.map { -expf($0) } : stored }

        if let heads = l.heads {
            return StructuredScanMixer(
                input: try linear(p + m.input, l.inputWidth, hidden, l.projectionBias),
                output: try linear(p + m.output, hidden, inner, l.projectionBias),
                convolution: convolution,
                timeStepBias: buffer(try values(p + m.timeStepBias, heads, shapes: [[heads]])),
                a: buffer(negativeA(try values(p + m.a, heads, shapes: [[heads], [heads, 1]]))),
                d: buffer(try values(p + m.d, heads, shapes: [[heads], [heads, 1]])),
                normWeight: buffer(try values(p + m.norm, inner, shapes: [[inner], [l.groups, inner / l.groups]])),
                epsilon: epsilon, layout: l)
        }
        // Mamba's A, transposed to state-major for the scan's channel lanes.
        let stored = negativeA(try values(p + m.a, inner * l.stateSize, shapes: [[inner, l.stateSize]]))
        let a = FloatBuffer(count: inner * l.stateSize)
        for channel in 0..<inner { for i in 0..<l.stateSize { a.pointer[i * inner + channel] = stored[channel * l.stateSize + i] } }
        return SelectiveScanMixer(
            input: try linear(p + m.input, 2 * inner, hidden, l.projectionBias),
            selection: try linear(p + m.selection, l.selectionWidth, inner, false),
            timeStep: try linear(p + m.timeStep, inner, l.timeStepRank, true),
            output: try linear(p + m.output, hidden, inner, l.projectionBias),
            convolution: convolution, a: a, d: buffer(try values(p + m.d, inner, shapes: [[inner]])), layout: l)
    }
}
