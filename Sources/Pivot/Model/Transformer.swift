import PivotKernels

/// One decoder block's weights. Every projection is a `LinearOperator`, whatever its format.
public struct DecoderLayer {
    public var attentionNorm: FloatBuffer
    public var query: LinearOperator
    public var key: LinearOperator
    public var value: LinearOperator
    public var attentionOutput: LinearOperator
    public var mlpNorm: FloatBuffer
    public var gate: LinearOperator
    public var up: LinearOperator
    public var down: LinearOperator
    /// Qwen3: RMSNorm weights (headDim) applied to each head of Q and K before RoPE.
    public var queryNorm: FloatBuffer? = nil
    public var keyNorm: FloatBuffer? = nil

    public var linears: [LinearOperator] { [query, key, value, attentionOutput, gate, up, down] }

    /// This layer with every projection replaced by `transform(projection, role)`: how wrappers
    /// (activation bits, imatrix, Hessians) plug in.
    public func mappingProjections(_ transform: (LinearOperator, ProjectionRole) -> LinearOperator) -> DecoderLayer {
        var l = self
        l.query = transform(query, .query); l.key = transform(key, .key); l.value = transform(value, .value)
        l.attentionOutput = transform(attentionOutput, .attentionOutput)
        l.gate = transform(gate, .gate); l.up = transform(up, .up); l.down = transform(down, .down)
        return l
    }
}

/// Which rows of logits a forward pass must produce.
public enum LogitRows { case last, all }

/// THE forward pass: embeddings → blocks (RMSNorm, RoPE, GQA attention via the KV cache,
/// SwiGLU MLP) → final norm → output projection. Weight formats and caches plug in through
/// `LinearOperator` and `KVCache`; nothing here knows which method produced them.
public final class Transformer {
    public let config: ModelConfig
    public let embedding: Embedding
    public var layers: [DecoderLayer] { didSet { groups = Self.makeGroups(layers) } }
    /// Q/K/V and gate/up of each layer, dispatched together.
    private var groups: [(attention: ProjectionGroup, mlp: ProjectionGroup)]
    public let finalNorm: FloatBuffer
    public var output: LinearOperator
    let rope: RoPETable

    public init(config: ModelConfig, embedding: Embedding, layers: [DecoderLayer], finalNorm: FloatBuffer, output: LinearOperator) {
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.output = output
        groups = Self.makeGroups(layers)
        rope = RoPETable(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling)
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
                    run(UnsafeBufferPointer(rebasing: $0[start..<end]), cache: cache, state: state, logits: .last)
                }
                start = end
            }
            return result
        }
        return tokens.withUnsafeBufferPointer { run($0, cache: cache, state: state, logits: rows) }
    }

    /// One decode step without allocating: the token goes through a stack buffer.
    @discardableResult
    public func forward(token: Int, cache: KVCache, state: ForwardState) -> Matrix {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 1) { buffer in
            buffer[0] = token
            return run(UnsafeBufferPointer(buffer), cache: cache, state: state, logits: .last)
        }
    }

    /// The pass itself; every entry point comes through here, so the checks live here.
    private func run(_ tokens: UnsafeBufferPointer<Int>, cache: KVCache, state: ForwardState, logits rows: LogitRows) -> Matrix {
        // Real checks even under -Ounchecked: overflowing the cache would write out of bounds.
        guard !tokens.isEmpty else { fatalError("forward needs at least one token") }
        guard cache.length + tokens.count <= cache.capacity else { fatalError("context of \(cache.capacity) tokens exceeded") }
        let c = config
        let count = tokens.count
        let context = state.context
        let pool = context.pool
        rope.ensure(positions: cache.length + count)
        cache.willAppend(tokens: tokens, pool: pool)

        let x = state.hidden.matrix(rows: count, columns: c.hiddenSize)
        let normed = state.normed.matrix(rows: count, columns: c.hiddenSize)
        let q = state.queries.matrix(rows: count, columns: c.queryWidth)
        let k = state.keys.matrix(rows: count, columns: c.kvWidth)
        let v = state.values.matrix(rows: count, columns: c.kvWidth)
        let attention = state.attention.matrix(rows: count, columns: c.queryWidth)
        let gate = state.gate.matrix(rows: count, columns: c.intermediateSize)
        let up = state.up.matrix(rows: count, columns: c.intermediateSize)

        for t in 0..<count { embedding.lookup(tokens[t], into: x.row(t)) }

        for (index, layer) in layers.enumerated() {
            normalize(x, weight: layer.attentionNorm, into: normed)
            groups[index].attention.forward(normed, into: (q, k, v), context: context)
            if let queryNorm = layer.queryNorm, let keyNorm = layer.keyNorm {
                normalizeHeads(q, heads: c.headCount, weight: queryNorm)
                normalizeHeads(k, heads: c.kvHeadCount, weight: keyNorm)
            }
            if c.usesRoPE(layer: index) {
                applyRotary(q, heads: c.headCount, firstPosition: cache.length)
                applyRotary(k, heads: c.kvHeadCount, firstPosition: cache.length)
            }
            cache.append(layer: index, keys: k, values: v)
            cache.attend(layer: index, queries: q, into: attention, pool: pool)
            layer.attentionOutput.forward(attention, into: normed, context: context)
            addInPlace(x, normed)

            normalize(x, weight: layer.mlpNorm, into: normed)
            groups[index].mlp.forward(normed, into: (gate, up, up), context: context)
            for t in 0..<count { siluMultiply(gate.row(t), up.row(t), count: c.intermediateSize) }
            layer.down.forward(gate, into: normed, context: context)
            addInPlace(x, normed)
        }
        cache.advance(by: count)

        let first = rows == .last ? count - 1 : 0
        let outRows = count - first
        let finalInput = state.normed.matrix(rows: outRows, columns: c.hiddenSize)
        for t in 0..<outRows {
            rmsNorm(x.row(first + t), weight: finalNorm.pointer, epsilon: c.rmsNormEpsilon,
                    out: finalInput.row(t), count: c.hiddenSize)
        }
        let logits = state.logits.matrix(rows: outRows, columns: c.vocabularySize)
        output.forward(finalInput, into: logits, context: context)
        return logits
    }

    private static func makeGroups(_ layers: [DecoderLayer]) -> [(attention: ProjectionGroup, mlp: ProjectionGroup)] {
        layers.map { (ProjectionGroup([$0.query, $0.key, $0.value]), ProjectionGroup([$0.gate, $0.up])) }
    }

    private func normalize(_ x: Matrix, weight: FloatBuffer, into out: Matrix) {
        for t in 0..<x.rows {
            rmsNorm(x.row(t), weight: weight.pointer, epsilon: config.rmsNormEpsilon, out: out.row(t), count: x.columns)
        }
    }

    /// RMSNorm of every head vector in place (Qwen3's q_norm/k_norm).
    private func normalizeHeads(_ m: Matrix, heads: Int, weight: FloatBuffer) {
        let d = config.headDim
        for t in 0..<m.rows {
            for h in 0..<heads {
                let head = m.row(t) + h * d
                rmsNorm(head, weight: weight.pointer, epsilon: config.rmsNormEpsilon, out: head, count: d)
            }
        }
    }

    private func applyRotary(_ m: Matrix, heads: Int, firstPosition: Int) {
        let d = config.headDim, interleaved = config.ropeInterleaved
        for t in 0..<m.rows {
            let cos = rope.cos(position: firstPosition + t), sin = rope.sin(position: firstPosition + t)
            for h in 0..<heads {
                applyRoPE(m.row(t) + h * d, headDim: d, cos: cos, sin: sin, interleaved: interleaved)
            }
        }
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
    public let logits: FloatBuffer

    /// `allLogits`: room for logits of every token (perplexity); otherwise only the last.
    public init(config c: ModelConfig, maxTokens: Int, allLogits: Bool, execution: Execution) {
        self.maxTokens = maxTokens
        context = ComputeContext(pool: execution.pool, maxTokens: maxTokens, maxColumns: max(c.hiddenSize, c.intermediateSize, c.queryWidth),
                                 precision: execution.precision)
        hidden = FloatBuffer(count: maxTokens * c.hiddenSize)
        normed = FloatBuffer(count: maxTokens * max(c.hiddenSize, c.queryWidth))
        queries = FloatBuffer(count: maxTokens * c.queryWidth)
        keys = FloatBuffer(count: maxTokens * c.kvWidth)
        values = FloatBuffer(count: maxTokens * c.kvWidth)
        attention = FloatBuffer(count: maxTokens * c.queryWidth)
        gate = FloatBuffer(count: maxTokens * c.intermediateSize)
        up = FloatBuffer(count: maxTokens * c.intermediateSize)
        logits = FloatBuffer(count: (allLogits ? maxTokens : 1) * c.vocabularySize)
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
