import PivotKernels

/// Mamba-2's mixer (state space duality, run as its recurrence):
///
///     [z; x; B; C; δ] = in_proj(h);  [x; B; C] = silu(conv([x; B; C]))
///     y = scan(x, Δ = softplus(δ + dt_bias), A, B, C) + D·x   (one A and Δ per head, B and C per group)
///     y = RMSNorm per group(y · silu(z));  out = out_proj(y)
///
/// The convolution's last inputs and the per-head states live in the sequence's `RecurrentStateCache`.
public struct StructuredScanMixer: StateSpaceMixer {
    /// in_proj: hidden → [z; x; B; C; δ].
    public var input: LinearOperator
    /// out_proj: inner → hidden.
    public var output: LinearOperator
    /// Over x, B and C (inner + 2·groups·state channels), before the scan.
    let convolution: CausalConvolution
    /// Per head: Δ's bias, A = −exp(A_log), D.
    let timeStepBias, a, d: FloatBuffer
    /// The gated RMSNorm's weights (inner), normalized over groups of inner / groups channels.
    let normWeight: FloatBuffer
    let epsilon: Float
    public let layout: StateSpaceLayout

    public var linears: [LinearOperator] { [input, output] }

    public func mapping(_ transform: (LinearOperator, ProjectionRole) -> LinearOperator) -> any StateSpaceMixer {
        var m = self
        m.input = transform(input, .stateInput); m.output = transform(output, .stateOutput)
        return m
    }

    public func forward(_ x: Matrix, sequences: UnsafeBufferPointer<SequenceSlice>, layer: Int, into out: Matrix,
                        scratch s: StateSpaceScratch, context: ComputeContext) {
        let l = layout, rows = x.rows, inner = l.innerSize, n = l.stateSize, pool = context.pool
        let heads = l.heads!, headDim = inner / heads, channels = l.convolutionChannels, width = l.inputWidth
        let projected = s.projected.matrix(rows: rows, columns: width)
        input.forward(x, into: projected, context: context)
        let convolved = s.convolved.matrix(rows: rows, columns: channels)
        let scanned = s.scanned.matrix(rows: rows, columns: inner)
        convolution.forward(projected, offset: inner, sequences: sequences, layer: layer, into: convolved)
        for q in sequences {
            let scan = q.cache.recurrentState!.scanState(layer: layer)
            let (u, bc, delta, y) = (convolved.row(q.start), convolved.row(q.start) + inner, projected.row(q.start) + inner + channels, scanned.row(q.start))
            let (dtBias, a, d) = (timeStepBias.pointer, a.pointer, d.pointer)
            pool.parallelRanges(count: heads) { range in
                structuredScan(count: q.count, heads: range, headDim: headDim, stateSize: n, headsPerGroup: heads / l.groups,
                               x: u, xStride: channels, b: bc, c: bc + l.groups * n, bcStride: channels, delta: delta, deltaStride: width,
                               dtBias: dtBias, a: a, d: d, state: scan, y: y, yStride: inner)
            }
        }
        // y · silu(z), then RMSNorm over each group's channels.
        let groupWidth = inner / l.groups
        for t in 0..<rows {
            let y = scanned.row(t)
            Activation.silu.applyGated(projected.row(t), y, count: inner)
            for g in 0..<l.groups {
                rmsNorm(projected.row(t) + g * groupWidth, weight: normWeight.pointer + g * groupWidth, epsilon: epsilon, out: y + g * groupWidth, count: groupWidth)
            }
        }
        output.forward(scanned, into: out, context: context)
    }
}
