import PivotKernels

/// Mamba's selective state-space mixer, which takes the place of attention and the MLP in its block:
///
///     [x; z] = in_proj(h);  u = silu(conv(x));  [δ; B; C] = x_proj(u);  Δ = softplus(dt_proj(δ))
///     y = scan(u, Δ, A, B, C) + D·u, times silu(z);  out = out_proj(y)
///
/// The convolution's last inputs and the scan's state live in the sequence's `RecurrentStateCache`.
public struct SelectiveScanMixer: StateSpaceMixer {
    /// in_proj: hidden → [x; z] (2 × inner).
    public var input: LinearOperator
    /// x_proj: inner → [δ; B; C].
    public var selection: LinearOperator
    /// dt_proj with its bias: rank → inner.
    public var timeStep: LinearOperator
    /// out_proj: inner → hidden.
    public var output: LinearOperator
    /// Over x, before the scan.
    let convolution: CausalConvolution
    /// −exp(A_log), state-major (state × inner, transposed from the checkpoint) so that channels vectorize.
    let a: FloatBuffer
    let d: FloatBuffer
    public let layout: StateSpaceLayout

    public var linears: [LinearOperator] { [input, selection, timeStep, output] }

    public func mapping(_ transform: (LinearOperator, ProjectionRole) -> LinearOperator) -> any StateSpaceMixer {
        var m = self
        m.input = transform(input, .stateInput); m.selection = transform(selection, .stateSelection)
        m.timeStep = transform(timeStep, .stateTimeStep); m.output = transform(output, .stateOutput)
        return m
    }

    public func forward(_ x: Matrix, sequences: UnsafeBufferPointer<SequenceSlice>, layer: Int, into out: Matrix,
                 scratch s: StateSpaceScratch, context: ComputeContext) {
        let l = layout, rows = x.rows, inner = l.innerSize, n = l.stateSize, pool = context.pool
        let projected = s.projected.matrix(rows: rows, columns: 2 * inner)
        input.forward(x, into: projected, context: context)
        let convolved = s.convolved.matrix(rows: rows, columns: inner)
        convolution.forward(projected, offset: 0, sequences: sequences, layer: layer, into: convolved)
        let selected = s.selected.matrix(rows: rows, columns: l.selectionWidth)
        selection.forward(convolved, into: selected, context: context)
        let lowRank = s.lowRank.matrix(rows: rows, columns: l.timeStepRank)
        for t in 0..<rows { lowRank.row(t).update(from: selected.row(t), count: l.timeStepRank) }
        // Δ before its softplus, which the scan applies.
        let delta = s.delta.matrix(rows: rows, columns: inner)
        timeStep.forward(lowRank, into: delta, context: context)
        let scanned = s.scanned.matrix(rows: rows, columns: inner)
        for q in sequences {
            let state = q.cache.recurrentState!.scanState(layer: layer)
            let (u, dt, bc, z, y) = (convolved.row(q.start), delta.row(q.start), selected.row(q.start) + l.timeStepRank,
                                     projected.row(q.start) + inner, scanned.row(q.start))
            let (a, d) = (a.pointer, d.pointer)
            // Channels in groups of eight, the scan's SIMD lanes.
            pool.parallelRanges(count: (inner + 7) / 8, minChunk: 4) { groups in
                selectiveScan(count: q.count, channels: groups.lowerBound * 8..<min(inner, groups.upperBound * 8), totalChannels: inner, width: inner,
                              stateSize: n, bcStride: l.selectionWidth, zStride: 2 * inner,
                              u: u, delta: dt, b: bc, c: bc + n, z: z, a: a, d: d, state: state, y: y)
            }
        }
        output.forward(scanned, into: out, context: context)
    }
}

/// A pass's scratch for state-space layers (in `ForwardState`, shared by every layer).
public final class StateSpaceScratch {
    let projected, convolved, selected, lowRank, delta, scanned: FloatBuffer

    init(layout l: StateSpaceLayout, maxTokens rows: Int) {
        projected = FloatBuffer(count: rows * l.inputWidth); convolved = FloatBuffer(count: rows * l.convolutionChannels)
        selected = FloatBuffer(count: rows * max(1, l.selectionWidth)); lowRank = FloatBuffer(count: rows * l.timeStepRank)
        delta = FloatBuffer(count: rows * l.innerSize); scanned = FloatBuffer(count: rows * l.innerSize)
    }
}

/// The attention projections of a block that has none (a state-space block): never run. Methods that
/// rewrite attention by role refuse such models first (`requireLlamaBlock`).
final class AbsentProjection: LinearOperator, Sendable {
    static let shared = AbsentProjection()
    var inFeatures: Int { 0 }
    var outFeatures: Int { 0 }
    var weightBytes: Int { 0 }
    var formatName: String { "none" }
    func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) { fatalError("a state-space block has no attention projections") }
}

extension DecoderLayer {
    /// A state-space block (Mamba, Mamba-2): one norm, then the mixer; no attention, no MLP.
    public init(stateSpaceNorm norm: NormWeights, mixer: any StateSpaceMixer) {
        let absent = AbsentProjection.shared
        self.init(attentionNorm: norm, query: absent, key: absent, value: absent, attentionOutput: absent,
                  mlpNorm: NormWeights(weight: FloatBuffer(count: 1)), gate: nil, up: nil, down: nil)
        stateSpace = mixer
    }
}
