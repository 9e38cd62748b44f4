import PivotKernels

/// A norm's weights: RMSNorm reads `weight`; LayerNorm adds `bias` where the family has one.
public struct NormWeights {
    public var weight: FloatBuffer
    public var bias: FloatBuffer?

    public init(weight: FloatBuffer, bias: FloatBuffer? = nil) { self.weight = weight; self.bias = bias }
}

/// One decoder block's weights. Every projection is a `LinearOperator`, whatever its format.
public struct DecoderLayer {
    public var attentionNorm: NormWeights
    public var query: LinearOperator
    public var key: LinearOperator
    public var value: LinearOperator
    public var attentionOutput: LinearOperator
    public var mlpNorm: NormWeights
    /// Nil in families whose MLP is not gated (GPT-NeoX, Falcon): act(up) feeds down; all three nil
    /// where routed experts replace the MLP.
    public var gate: LinearOperator?
    public var up: LinearOperator?
    public var down: LinearOperator?
    /// Routed experts instead of the MLP (Mixtral, Qwen2-MoE).
    public var experts: MixtureOfExperts? = nil
    /// Q/K norms (Qwen3, Gemma 3: per head; OLMo 2: over the whole projection).
    public var queryNorm: NormWeights? = nil
    public var keyNorm: NormWeights? = nil
    /// Norms of the attention and MLP outputs (Gemma 2/3, OLMo 2).
    public var postAttentionNorm: NormWeights? = nil
    public var postMLPNorm: NormWeights? = nil
    /// A state-space mixer (Mamba, Mamba-2) in place of attention and the MLP (then the projections above are absent).
    public var stateSpace: (any StateSpaceMixer)? = nil

    public var linears: [LinearOperator] {
        if let stateSpace { return stateSpace.linears }
        return [query, key, value, attentionOutput] + [gate, up, down].compactMap { $0 } + (experts?.linears ?? [])
    }

    /// This layer with every projection replaced by `transform(projection, role)`: how wrappers
    /// (activation bits, imatrix, Hessians) plug in.
    public func mappingProjections(_ transform: (LinearOperator, ProjectionRole) -> LinearOperator) -> DecoderLayer {
        var l = self
        if let stateSpace {
            l.stateSpace = stateSpace.mapping(transform)
            return l
        }
        l.query = transform(query, .query); l.key = transform(key, .key); l.value = transform(value, .value)
        l.attentionOutput = transform(attentionOutput, .attentionOutput)
        l.gate = gate.map { transform($0, .gate) }; l.up = up.map { transform($0, .up) }; l.down = down.map { transform($0, .down) }
        return l
    }
}

/// Which rows of logits a forward pass must produce.
public enum LogitRows: Sendable { case last, all }

/// One sequence's share of a batched forward pass: batch rows `start..<start+count` continue `cache`.
public struct SequenceSlice {
    public var cache: KVCache
    public var start: Int
    public var count: Int
    public var logits: LogitRows

    public init(cache: KVCache, start: Int, count: Int, logits: LogitRows) {
        self.cache = cache; self.start = start; self.count = count; self.logits = logits
    }

    /// Rows of logits this slice adds to the pass's output.
    public var logitRows: Int { logits == .last ? 1 : count }
}

/// THE forward pass: embeddings → blocks (norm, RoPE, GQA attention via the KV cache, MLP or routed
/// experts, in the arrangement the family's `BlockVariant` describes) → final norm → output projection. Weight formats and caches plug in through
/// `LinearOperator` and `KVCache`; nothing here knows which method produced them.
public final class Transformer {
    public let config: ModelConfig
    public let embedding: Embedding
    public var layers: [DecoderLayer] { didSet { groups = Self.makeGroups(layers) } }
    /// Q/K/V and gate/up of each layer, dispatched together.
    private var groups: [(attention: ProjectionGroup, mlp: ProjectionGroup)]
    public let finalNorm: NormWeights
    public var output: LinearOperator
    let rope: RoPETable
    /// Gemma 3's sliding layers rotate with their own base.
    let slidingRope: RoPETable?
    /// Sees the residual stream entering block `index` (and, with index `layers.count`, leaving the
    /// last one) on every pass: how analyses such as pruning's block influence read hidden states.
    /// Nil in ordinary runs.
    public var residualObserver: ((_ index: Int, _ hidden: Matrix) -> Void)?

    public init(config: ModelConfig, embedding: Embedding, layers: [DecoderLayer], finalNorm: NormWeights, output: LinearOperator) {
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.output = output
        groups = Self.makeGroups(layers)
        rope = RoPETable(headDim: config.rotaryDimensions, theta: config.ropeTheta, scaling: config.ropeScaling)
        slidingRope = config.variant.slidingRopeTheta.map { RoPETable(headDim: config.rotaryDimensions, theta: $0, scaling: .none) }
    }

    /// Runs `tokens` (at positions cache.length...) through the model, appends them to `cache`
    /// and returns logits for the last token or for all of them (rows of `state.logits`).
    /// Batches larger than `state.maxTokens` are split; for `.all` the caller must keep batches within it.
    @discardableResult
    public func forward(_ tokens: [Int], cache: KVCache, state: ForwardState, logits rows: LogitRows = .last) -> Matrix {
        if tokens.count > state.maxTokens {
            precondition(rows == .last, "all-row logits need batches of at most \(state.maxTokens) tokens")
            var start = 0
            var result = Matrix(state.logits.pointer, rows: 1, columns: config.vocabularySize)
            while start < tokens.count {
                let end = min(tokens.count, start + state.maxTokens)
                result = tokens.withUnsafeBufferPointer {
                    run(UnsafeBufferPointer(rebasing: $0[start..<end]), alone: SequenceSlice(cache: cache, start: 0, count: end - start, logits: .last), state: state)
                }
                start = end
            }
            return result
        }
        return tokens.withUnsafeBufferPointer {
            run($0, alone: SequenceSlice(cache: cache, start: 0, count: tokens.count, logits: rows), state: state)
        }
    }

    /// One decode step without allocating: the token and its slice go through stack buffers.
    @discardableResult
    public func forward(token: Int, cache: KVCache, state: ForwardState) -> Matrix {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 1) { buffer in
            buffer[0] = token
            return run(UnsafeBufferPointer(buffer), alone: SequenceSlice(cache: cache, start: 0, count: 1, logits: .last), state: state)
        }
    }

    /// One sequence's pass: its slice through a stack buffer rather than an array.
    private func run(_ tokens: UnsafeBufferPointer<Int>, alone slice: SequenceSlice, state: ForwardState) -> Matrix {
        withUnsafeTemporaryAllocation(of: SequenceSlice.self, capacity: 1) { slices in
            slices.initializeElement(at: 0, to: slice)
            defer { slices.deinitialize() }
            return run(tokens, UnsafeBufferPointer(slices), state: state)
        }
    }

    /// Several sequences in one pass (a server's continuous batch): `tokens` holds each sequence's
    /// new tokens at its slice's rows; every projection runs once over all rows, attention runs per
    /// sequence over its own cache. Logits come back in slice order, one row per `.last` slice and
    /// `count` rows per `.all` slice (`SequenceSlice.logitRows`). At most `state.maxTokens` tokens.
    /// Each row's logits equal the sequence's alone where the projections sum a row the same way at
    /// any row count (quantized weights on the int8 path, F16/BF16); F32 weights switch to the blocked
    /// SGEMM from 16 rows, whose summation order differs in the last bits.
    @discardableResult
    public func forward(batch tokens: [Int], sequences: [SequenceSlice], state: ForwardState) -> Matrix {
        precondition(tokens.count <= state.maxTokens, "a batch of \(tokens.count) tokens exceeds the state's \(state.maxTokens)")
        return tokens.withUnsafeBufferPointer { t in sequences.withUnsafeBufferPointer { run(t, $0, state: state) } }
    }

    /// The pass itself; every entry point comes through here, so the checks live here.
    private func run(_ tokens: UnsafeBufferPointer<Int>, _ sequences: UnsafeBufferPointer<SequenceSlice>, state: ForwardState) -> Matrix {
        // Real checks even under -Ounchecked: overflowing the cache would write out of bounds.
        guard !tokens.isEmpty else { fatalError("forward needs at least one token") }
        var covered = 0, outRows = 0, furthest = 0
        for (i, s) in sequences.enumerated() {
            guard s.start == covered, s.count > 0 else { fatalError("sequence slices must tile the batch in order") }
            guard s.cache.length + s.count <= s.cache.capacity else { fatalError("context of \(s.cache.capacity) tokens exceeded") }
            for other in sequences[..<i] where other.cache === s.cache { fatalError("one cache twice in a batch") }
            covered += s.count
            outRows += s.logitRows
            furthest = max(furthest, s.cache.length + s.count)
        }
        guard covered == tokens.count else { fatalError("sequence slices cover \(covered) of \(tokens.count) tokens") }
        guard outRows <= state.logitRows else { fatalError("\(outRows) logit rows asked of a state with room for \(state.logitRows)") }
        let c = config
        let count = tokens.count
        let context = state.context
        let pool = context.pool
        rope.ensure(positions: furthest)
        slidingRope?.ensure(positions: furthest)
        for s in sequences { s.cache.willAppend(tokens: UnsafeBufferPointer(rebasing: tokens[s.start..<s.start + s.count]), pool: pool) }

        let x = state.hidden.matrix(rows: count, columns: c.hiddenSize)
        let normed = state.normed.matrix(rows: count, columns: c.hiddenSize)
        let q = state.queries.matrix(rows: count, columns: c.queryWidth)
        let k = state.keys.matrix(rows: count, columns: c.kvWidth)
        let v = state.values.matrix(rows: count, columns: c.kvWidth)
        let attention = state.attention.matrix(rows: count, columns: c.queryWidth)
        let gate = state.gate.matrix(rows: count, columns: c.intermediateSize)
        let up = state.up.matrix(rows: count, columns: c.intermediateSize)

        let form = c.variant
        for t in 0..<count { embedding.lookup(tokens[t], into: x.row(t)) }
        if let scale = form.embeddingScale { for t in 0..<count { scaleInPlace(x.row(t), scale, count: c.hiddenSize) } }
        // Caches score with 1/√d; a family's own scale goes into the queries.
        let queryScale = form.attentionScale.map { $0 * Float(c.headDim).squareRoot() }
        let branch = form.parallelResidual ? state.branch.matrix(rows: count, columns: c.hiddenSize) : normed

        for (index, layer) in layers.enumerated() {
            residualObserver?(index, x)
            if let mixer = layer.stateSpace {
                normalize(x, layer.attentionNorm, into: normed)
                mixer.forward(normed, sequences: sequences, layer: index, into: normed, scratch: state.stateSpaceScratch!, context: context)
                addInPlace(x, normed)
                continue
            }
            if form.inputNorms { normalize(x, layer.attentionNorm, into: normed) }
            groups[index].attention.forward(form.inputNorms ? normed : x, into: (q, k, v), context: context)
            if let queryNorm = layer.queryNorm, let keyNorm = layer.keyNorm {
                normalizeHeads(q, heads: form.queryKeyNormSpansHeads ? 1 : c.headCount, queryNorm)
                normalizeHeads(k, heads: form.queryKeyNormSpansHeads ? 1 : c.kvHeadCount, keyNorm)
            }
            if let queryScale { for t in 0..<count { scaleInPlace(q.row(t), queryScale, count: c.queryWidth) } }
            let table = form.windowed(layer: index) ? slidingRope ?? rope : rope
            for s in sequences {
                let (sq, sk, sv, out) = (q.rows(s.start, s.count), k.rows(s.start, s.count), v.rows(s.start, s.count),
                                         attention.rows(s.start, s.count))
                if c.usesRoPE(layer: index) {
                    applyRotary(sq, heads: c.headCount, firstPosition: s.cache.length, table: table)
                    applyRotary(sk, heads: c.kvHeadCount, firstPosition: s.cache.length, table: table)
                }
                s.cache.append(layer: index, keys: sk, values: sv)
                s.cache.attend(layer: index, queries: sq, into: out, pool: pool)
            }
            // Parallel blocks keep the attention's output aside while the MLP reads the block's input.
            let attended = form.parallelResidual ? branch : normed
            layer.attentionOutput.forward(attention, into: attended, context: context)
            if let post = layer.postAttentionNorm { normalize(attended, post, into: attended) }
            if !form.parallelResidual { addInPlace(x, attended) }

            if form.inputNorms && !form.sharedNorm { normalize(x, layer.mlpNorm, into: normed) }
            let mlpInput = form.inputNorms ? normed : x
            if let experts = layer.experts {
                experts.forward(mlpInput, into: normed, scratch: state.expertScratch!, context: context)
            } else if let down = layer.down {
                if layer.gate != nil {
                    groups[index].mlp.forward(mlpInput, into: (gate, up, up), context: context)
                    for t in 0..<count { form.activation.applyGated(gate.row(t), up.row(t), count: c.intermediateSize) }
                    down.forward(gate, into: normed, context: context)
                } else {
                    groups[index].mlp.forward(mlpInput, into: (up, up, up), context: context)
                    for t in 0..<count { form.activation.apply(up.row(t), count: c.intermediateSize) }
                    down.forward(up, into: normed, context: context)
                }
            }
            if let post = layer.postMLPNorm { normalize(normed, post, into: normed) }
            if form.parallelResidual { addInPlace(normed, branch) }
            addInPlace(x, normed)
        }
        residualObserver?(layers.count, x)
        for s in sequences { s.cache.advance(by: s.count) }

        let finalInput = state.normed.matrix(rows: outRows, columns: c.hiddenSize)
        var row = 0
        for s in sequences {
            for t in (s.logits == .last ? s.count - 1 : 0)..<s.count {
                normalize(row: x.row(s.start + t), finalNorm, into: finalInput.row(row), count: c.hiddenSize)
                row += 1
            }
        }
        let logits = state.logits.matrix(rows: outRows, columns: c.vocabularySize)
        output.forward(finalInput, into: logits, context: context)
        if let cap = form.finalSoftCap { for r in 0..<outRows { softCap(logits.row(r), count: c.vocabularySize, cap: cap) } }
        return logits
    }

    private static func makeGroups(_ layers: [DecoderLayer]) -> [(attention: ProjectionGroup, mlp: ProjectionGroup)] {
        layers.map { (ProjectionGroup([$0.query, $0.key, $0.value]), ProjectionGroup([$0.gate, $0.up].compactMap { $0 })) }
    }

    private func normalize(_ x: Matrix, _ norm: NormWeights, into out: Matrix) {
        for t in 0..<x.rows { normalize(row: x.row(t), norm, into: out.row(t), count: x.columns) }
    }

    /// The family's norm of one vector (in place when `out` is `x`).
    @inline(__always)
    /// `offset`: where this vector's weights start (a head's own weights, StableLM's Q/K norms).
    private func normalize(row x: UnsafeMutablePointer<Float>, _ norm: NormWeights, offset: Int = 0, into out: UnsafeMutablePointer<Float>, count: Int) {
        switch config.variant.norm {
        case .rms: rmsNorm(x, weight: norm.weight.pointer + offset, epsilon: config.rmsNormEpsilon, out: out, count: count)
        case .layer:
            layerNorm(x, weight: norm.weight.pointer + offset, bias: norm.bias.map { UnsafePointer($0.pointer + offset) }, epsilon: config.rmsNormEpsilon,
                      out: out, count: count)
        }
    }

    /// The norm of every head vector in place (Qwen3's q_norm/k_norm; `heads` 1: the whole row, OLMo 2).
    private func normalizeHeads(_ m: Matrix, heads: Int, _ norm: NormWeights) {
        let d = m.columns / heads, own = config.variant.queryKeyNormPerHeadWeights
        for t in 0..<m.rows {
            for h in 0..<heads { normalize(row: m.row(t) + h * d, norm, offset: own ? h * d : 0, into: m.row(t) + h * d, count: d) }
        }
    }

    private func applyRotary(_ m: Matrix, heads: Int, firstPosition: Int, table: RoPETable) {
        let d = config.headDim, rotated = config.rotaryDimensions, interleaved = config.ropeInterleaved
        for t in 0..<m.rows {
            let cos = table.cos(position: firstPosition + t), sin = table.sin(position: firstPosition + t)
            for h in 0..<heads {
                applyRoPE(m.row(t) + h * d, headDim: rotated, cos: cos, sin: sin, interleaved: interleaved)
            }
        }
    }

    private func scaleInPlace(_ x: UnsafeMutablePointer<Float>, _ factor: Float, count: Int) {
        for i in 0..<count { x[i] *= factor }
    }

    private func addInPlace(_ x: Matrix, _ delta: Matrix) {
        for t in 0..<x.rows { axpyF32(1, delta.row(t), x.row(t), count: x.columns) }
    }
}

/// Buffers for one forward pass, allocated once for up to `maxTokens` tokens per call.
public final class ForwardState {
    public let maxTokens: Int
    public let context: ComputeContext
    let hidden, normed, queries, keys, values, attention, gate, up: FloatBuffer
    /// A parallel block's attention output while its MLP runs (one row otherwise).
    let branch: FloatBuffer
    /// Routing scratch of mixture-of-experts models.
    let expertScratch: ExpertScratch?
    /// Mixer scratch of state-space models.
    let stateSpaceScratch: StateSpaceScratch?
    public let logits: FloatBuffer
    /// Rows of logits one pass may produce.
    public let logitRows: Int

    /// `allLogits`: room for logits of every token (perplexity); otherwise only the last.
    public convenience init(config c: ModelConfig, maxTokens: Int, allLogits: Bool, execution: Execution) {
        self.init(config: c, maxTokens: maxTokens, logitRows: allLogits ? maxTokens : 1, execution: execution)
    }

    /// Room for `logitRows` rows of logits per pass (a batch of several sequences needs one per sequence).
    public init(config c: ModelConfig, maxTokens: Int, logitRows: Int, execution: Execution) {
        precondition(logitRows >= 1 && logitRows <= maxTokens)
        self.maxTokens = maxTokens
        self.logitRows = logitRows
        let expertWidth = max(c.experts?.intermediateSize ?? 0, c.experts?.sharedIntermediateSize ?? 0)
        let mixerWidth = max(c.stateSpace?.innerSize ?? 0, c.stateSpace?.timeStepRank ?? 0, c.stateSpace?.convolutionChannels ?? 0)
        context = ComputeContext(pool: execution.pool, maxTokens: maxTokens,
                                 maxColumns: max(c.hiddenSize, c.intermediateSize, c.queryWidth, expertWidth, mixerWidth), precision: execution.precision)
        hidden = FloatBuffer(count: maxTokens * c.hiddenSize)
        normed = FloatBuffer(count: maxTokens * max(c.hiddenSize, c.queryWidth))
        queries = FloatBuffer(count: maxTokens * c.queryWidth)
        keys = FloatBuffer(count: maxTokens * c.kvWidth)
        values = FloatBuffer(count: maxTokens * c.kvWidth)
        attention = FloatBuffer(count: maxTokens * c.queryWidth)
        gate = FloatBuffer(count: maxTokens * c.intermediateSize)
        up = FloatBuffer(count: maxTokens * c.intermediateSize)
        branch = FloatBuffer(count: c.variant.parallelResidual ? maxTokens * c.hiddenSize : c.hiddenSize)
        expertScratch = c.experts.map { ExpertScratch(layout: $0, hidden: c.hiddenSize, maxTokens: maxTokens) }
        stateSpaceScratch = c.stateSpace.map { StateSpaceScratch(layout: $0, maxTokens: maxTokens) }
        logits = FloatBuffer(count: logitRows * c.vocabularySize)
    }
}

/// cos/sin of position·θ^(-2i/d) (after any long-context scaling, times YaRN's attention factor),
/// grown on demand; computed in Double like the reference's F32 to within rounding.
final class RoPETable {
    let half: Int
    let inverseFrequencies: [Double]
    let attentionFactor: Double
    var positions = 0
    var cosTable: UnsafeMutablePointer<Float>
    var sinTable: UnsafeMutablePointer<Float>

    init(headDim: Int, theta: Float, scaling: RoPEScaling) {
        half = headDim / 2
        (inverseFrequencies, attentionFactor) = scaling.frequencies(headDim: headDim, theta: Double(theta))
        cosTable = .allocate(capacity: 1)
        sinTable = .allocate(capacity: 1)
    }

    deinit { cosTable.deallocate(); sinTable.deallocate() }

    func ensure(positions needed: Int) {
        if needed <= positions { return }
        let newCount = max(needed, positions * 2, 1024)
        let newCos = UnsafeMutablePointer<Float>.allocate(capacity: newCount * half)
        let newSin = UnsafeMutablePointer<Float>.allocate(capacity: newCount * half)
        for p in 0..<newCount {
            for i in 0..<half {
                let angle = Double(Float(p) * Float(inverseFrequencies[i]))
                newCos[p * half + i] = Float(Foundation.cos(angle) * attentionFactor)
                newSin[p * half + i] = Float(Foundation.sin(angle) * attentionFactor)
            }
        }
        cosTable.deallocate(); sinTable.deallocate()
        cosTable = newCos; sinTable = newSin
        positions = newCount
    }

    @inline(__always) func cos(position: Int) -> UnsafePointer<Float> { UnsafePointer(cosTable + position * half) }
    @inline(__always) func sin(position: Int) -> UnsafePointer<Float> { UnsafePointer(sinTable + position * half) }
}

/// Token embedding table in its stored format; rows are dequantized on lookup.
public final class Embedding {
    public let tensor: TensorData
    public let vocabularySize: Int
    public let width: Int
    let rowBytes: Int

    public init(_ tensor: TensorData) {
        self.tensor = tensor
        vocabularySize = tensor.shape[0]
        width = tensor.shape[1]
        rowBytes = tensor.type.byteCount(elements: width)!
    }

    public func lookup(_ token: Int, into out: UnsafeMutablePointer<Float>) {
        guard token >= 0 && token < vocabularySize else { fatalError("token id \(token) outside the vocabulary of \(vocabularySize)") }
        tensor.type.convert(tensor.data + token * rowBytes, count: width, into: out)
    }
}

import Foundation
