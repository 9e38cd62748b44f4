import Foundation
import PivotKernels

/// An exact F32 cache that keeps, per layer, every query (after RoPE), key (after RoPE) and value it
/// is given, for chunk `chunk`: the activations CSKV's factors are trained on.
final class ActivationRecorder: KVCache {
    let inner: DenseKVCache
    let chunkLength: Int, queryWidth: Int, kvWidth: Int
    /// Per layer: chunks × chunkLength rows.
    let queries: [FloatBuffer], keys: [FloatBuffer], values: [FloatBuffer]
    var chunk = 0

    init(shape: AttentionShape, chunkLength: Int, chunks: Int) {
        inner = DenseKVCache(shape: shape, capacity: chunkLength, maxBatch: chunkLength)
        self.chunkLength = chunkLength
        queryWidth = shape.heads * shape.headDim; kvWidth = shape.kvHeads * shape.headDim
        let rows = chunks * chunkLength
        queries = (0..<shape.layers).map { _ in FloatBuffer(count: rows * shape.heads * shape.headDim) }
        keys = (0..<shape.layers).map { _ in FloatBuffer(count: rows * shape.kvHeads * shape.headDim) }
        values = (0..<shape.layers).map { _ in FloatBuffer(count: rows * shape.kvHeads * shape.headDim) }
    }

    var length: Int { inner.length }
    var capacity: Int { inner.capacity }
    var bytesPerToken: Double { inner.bytesPerToken }

    func append(layer: Int, keys k: Matrix, values v: Matrix) {
        inner.append(layer: layer, keys: k, values: v)
        for t in 0..<k.rows {
            let row = chunk * chunkLength + length + t
            (keys[layer].pointer + row * kvWidth).update(from: k.row(t), count: kvWidth)
            (values[layer].pointer + row * kvWidth).update(from: v.row(t), count: kvWidth)
        }
    }

    func attend(layer: Int, queries q: Matrix, into out: Matrix, pool: ThreadPool) {
        inner.attend(layer: layer, queries: q, into: out, pool: pool)
        for t in 0..<q.rows {
            (queries[layer].pointer + (chunk * chunkLength + length + t) * queryWidth).update(from: q.row(t), count: queryWidth)
        }
    }

    func advance(by tokens: Int) { inner.advance(by: tokens) }
    func truncate(to length: Int) { inner.truncate(to: length) }
}

/// How CSKV's factors are fine-tuned: `steps` AdamW updates per layer, each over `batch` chunks of the
/// `chunks` recorded (one more is held out to report generalization).
public struct LowRankTrainingRecipe: Sendable {
    public var steps: Int
    /// Peak rate, relative: each matrix (a head's key/value encoder or decoder) steps by rate × its RMS.
    public var learningRate: Double
    /// The cache's exact window (those positions are never read from latents).
    public var window: Int
    public var chunks: Int, chunkLength: Int, batch: Int
    /// The layers to train (nil: all; tests train one).
    public var layers: Range<Int>?

    public init(steps: Int, learningRate: Double, window: Int, chunks: Int = 8, chunkLength: Int = 512, batch: Int = 2, layers: Range<Int>? = nil) {
        self.steps = steps; self.learningRate = learningRate; self.window = window
        self.chunks = chunks; self.chunkLength = chunkLength; self.batch = batch; self.layers = layers
    }
}

/// One layer's relative attention-output errors (Σ e G e / Σ o G o) on the training chunks and the
/// held-out chunk, before and after training.
public struct LayerTrainingReport: Sendable {
    public var trainBefore: Double, trainAfter: Double, heldBefore: Double, heldAfter: Double
    /// Training did not lower the training error, so the closed form was kept.
    public var kept: Bool
    public var seconds: Double = 0
}

extension LowRankPlan {
    /// Fine-tunes the encoder and decoder rows in place, layer by layer, to minimise each layer's
    /// attention-output error against the exact cache on `tokens` (see `LowRankObjective`), starting from
    /// the closed form. A layer whose training error ends above the closed form's keeps the closed form.
    /// Every layer sees the activations of the exact cache upstream (one recording pass serves all layers).
    /// Returns each trained layer's errors, before and after.
    @discardableResult
    public func train(model: LoadedModel, tokens: [Int], recipe: LowRankTrainingRecipe, pool: ThreadPool,
                      log: (String) -> Void = { _ in }) throws -> [LayerTrainingReport] {
        let c = model.config, L = recipe.chunkLength, group = c.headCount / c.kvHeadCount
        let recorded = recipe.chunks + 1
        guard tokens.count >= recorded * L else {
            throw PivotError.invalidArgument("CSKV training needs \(recorded) chunks of \(L) calibration tokens, the text has \(tokens.count)")
        }
        let shape = AttentionShape(c)
        let recorder = ActivationRecorder(shape: shape, chunkLength: L, chunks: recorded)
        let state = ForwardState(config: c, maxTokens: L, allLogits: false, execution: Execution(pool: pool))
        for chunk in 0..<recorded {
            recorder.chunk = chunk
            recorder.truncate(to: 0)
            model.transformer.forward(Array(tokens[(chunk * L)..<((chunk + 1) * L)]), cache: recorder, state: state)
        }
        let grams = outputGrams(model: model, context: state.context)
        var reports: [LayerTrainingReport] = []
        let layers = recipe.layers ?? 0..<c.layerCount
        for layer in layers {
            let start = Date()
            let trainer = LayerTrainer(plan: self, layer: layer, recorder: recorder, recipe: recipe, group: group,
                                       grams: grams[layer], rope: rope.layers[layer] ? rope : nil, pool: pool)
            var report = trainer.run()
            report.seconds = Date().timeIntervalSince(start)
            reports.append(report)
            log(String(format: "CSKV training: layer %d/%d: attention-output error %.4f → %.4f (held out %.4f → %.4f)%@, %.1f s",
                       layer + 1, c.layerCount, report.trainBefore, report.trainAfter, report.heldBefore, report.heldAfter,
                       report.kept ? ", closed form kept" : "", report.seconds))
        }
        return reports
    }

    /// Per layer and KV group: G = W_o,gᵀ W_o,g over the group's columns ((group·headDim)², F32),
    /// scaled to a mean diagonal of 1 so losses compare across layers.
    private func outputGrams(model: LoadedModel, context: ComputeContext) -> [[[Float]]] {
        let c = model.config, d = c.headDim, group = c.headCount / c.kvHeadCount, width = group * d
        let units = FloatBuffer(count: width * c.queryWidth), columns = FloatBuffer(count: width * c.hiddenSize)
        return (0..<c.layerCount).map { layer in
            (0..<c.kvHeadCount).map { g in
                units.pointer.update(repeating: 0, count: width * c.queryWidth)
                for i in 0..<width { units.pointer[i * c.queryWidth + g * width + i] = 1 }
                model.transformer.layers[layer].attentionOutput.forward(units.matrix(rows: width, columns: c.queryWidth),
                                                                        into: columns.matrix(rows: width, columns: c.hiddenSize), context: context)
                var gram = [Float](repeating: 0, count: width * width)
                for i in 0..<width {
                    for j in i..<width {
                        let dot = dotF32(columns.pointer + i * c.hiddenSize, columns.pointer + j * c.hiddenSize, count: c.hiddenSize)
                        gram[i * width + j] = dot; gram[j * width + i] = dot
                    }
                }
                let mean = max((0..<width).reduce(Float(0)) { $0 + gram[$1 * width + $1] } / Float(width), 1e-30)
                return gram.map { $0 / mean }
            }
        }
    }
}

/// One layer's training: the recorded chunks split per KV head into contiguous rows, one objective per
/// (head, batch slot), one AdamW per matrix.
private final class LayerTrainer {
    let plan: LowRankPlan, layer: Int, recipe: LowRankTrainingRecipe, pool: ThreadPool
    let heads: Int, d: Int, group: Int, chunks: Int
    /// Per (head, chunk): queries, exact output (L × group·d), keys, pre-RoPE keys, values (L × d).
    let data: [FloatBuffer]
    /// Per head: [keys E, D, values E, D] rows, the layer's parameters; their gradients per (head, slot).
    let parameters: [FloatBuffer], gradients: [FloatBuffer]
    let objectives: [LowRankObjective]

    init(plan: LowRankPlan, layer: Int, recorder: ActivationRecorder, recipe: LowRankTrainingRecipe, group: Int,
         grams: [[Float]], rope: RotaryGeometry?, pool: ThreadPool) {
        self.plan = plan; self.layer = layer; self.recipe = recipe; self.pool = pool; self.group = group
        heads = plan.factors.kvHeads; d = plan.factors.headDim; chunks = recipe.chunks + 1
        let L = recipe.chunkLength, d = self.d, width = group * d, heads = self.heads
        let parameters = (0..<heads).map { h in
            let rk = plan.ranks[2 * (layer * heads + h)], rv = plan.ranks[2 * (layer * heads + h) + 1]
            let b = FloatBuffer(count: 2 * (rk + rv) * d)
            b.pointer.update(from: plan.encoder(2 * (layer * heads + h)), count: rk * d)
            (b.pointer + rk * d).update(from: plan.decoder(2 * (layer * heads + h)), count: rk * d)
            (b.pointer + 2 * rk * d).update(from: plan.encoder(2 * (layer * heads + h) + 1), count: rv * d)
            (b.pointer + 2 * rk * d + rv * d).update(from: plan.decoder(2 * (layer * heads + h) + 1), count: rv * d)
            return b
        }
        self.parameters = parameters
        let slots = max(recipe.batch, 1)
        gradients = (0..<(heads * slots)).map { parameters[$0 / slots].count }.map { FloatBuffer(count: $0) }
        let bits = plan.latentBits
        let objectives = (0..<(heads * slots)).map { item in
            let h = item / slots, v = 2 * (layer * heads + h)
            return LowRankObjective(headDim: d, group: group, window: recipe.window, capacity: L, keyRank: plan.ranks[v],
                                    valueRank: plan.ranks[v + 1], latentBits: bits, gram: grams[h], rope: rope)
        }
        self.objectives = objectives
        let chunks = self.chunks
        let data = (0..<(heads * chunks)).map { _ in FloatBuffer(count: L * (2 * width + 3 * d)) }
        let table = objectives[0].rope
        pool.parallelFor(chunks: heads * chunks) { item in
            let h = item / chunks, chunk = item % chunks, buffer = data[item].pointer
            let q = buffer, exact = q + L * width, k = exact + L * width, pk = k + L * d, v = pk + L * d
            let rotation = FloatBuffer(count: d), scratch = FloatBuffer(count: L)
            for t in 0..<L {
                let row = chunk * L + t
                (q + t * width).update(from: recorder.queries[layer].pointer + row * recorder.queryWidth + h * width, count: width)
                (k + t * d).update(from: recorder.keys[layer].pointer + row * recorder.kvWidth + h * d, count: d)
                (pk + t * d).update(from: k + t * d, count: d)
                table?.rotate(pk + t * d, position: t, interleaved: plan.rope.interleaved, inverse: true, scratch: rotation.pointer)
                (v + t * d).update(from: recorder.values[layer].pointer + row * recorder.kvWidth + h * d, count: d)
            }
            objectives[h * slots].exactOutput(queries: q, keys: k, values: v, count: L, into: exact, scratch: scratch.pointer)
        }
        self.data = data
    }

    func chunk(head h: Int, _ chunk: Int) -> LowRankHeadChunk {
        let L = recipe.chunkLength, width = group * d, p = UnsafePointer(data[h * chunks + chunk].pointer)
        return LowRankHeadChunk(count: L, queries: p, keys: p + 2 * L * width, preKeys: p + 2 * L * width + L * d,
                                values: p + 2 * L * width + 2 * L * d, exact: p + L * width)
    }

    /// Relative error Σ loss / Σ energy over `list` chunks, every head (no gradients).
    func error(_ list: [Int]) -> Double {
        let slots = max(recipe.batch, 1)
        var loss = 0.0, energy = 0.0
        for first in stride(from: 0, to: list.count, by: slots) {
            let part = Array(list[first..<min(list.count, first + slots)])
            let (l, e) = pass(part, gradients: false)
            loss += l.reduce(0, +); energy += e.reduce(0, +)
        }
        return loss / max(energy, 1e-30)
    }

    /// One parallel pass over (head, slot) items for the chunks in `part`; per-item loss and energy.
    func pass(_ part: [Int], gradients withGradients: Bool) -> ([Double], [Double]) {
        let slots = max(recipe.batch, 1), items = heads * slots
        let results = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * items)
        results.initialize(repeating: 0)
        defer { results.deallocate() }
        let objectives = self.objectives, gradients = self.gradients, parameters = self.parameters
        pool.parallelFor(chunks: items) { item in
            let h = item / slots, slot = item % slots
            guard slot < part.count else { return }
            let g = gradients[item]
            if withGradients { g.pointer.update(repeating: 0, count: g.count) }
            let (l, e) = objectives[item].evaluate(chunk(head: h, part[slot]), parameters: UnsafePointer(parameters[h].pointer),
                                                   gradients: withGradients ? g.pointer : nil)
            results[2 * item] = l; results[2 * item + 1] = e
        }
        return ((0..<items).map { results[2 * $0] }, (0..<items).map { results[2 * $0 + 1] })
    }

    /// Trains the layer and writes the rows back to the plan; (training error, held-out error), each before → after.
    func run() -> LayerTrainingReport {
        let trainChunks = Array(0..<recipe.chunks), held = [recipe.chunks]
        let beforeTrain = error(trainChunks), beforeHeld = error(held)
        let initial = parameters.map { b in Array(UnsafeBufferPointer(start: b.pointer, count: b.count)) }
        let slots = max(recipe.batch, 1)
        // One AdamW per matrix, its rate scaled by the matrix's initial RMS (encoders and decoders differ by σ²).
        var matrices: [(head: Int, range: Range<Int>, optimizer: AdamW, scale: Float)] = []
        for h in 0..<heads {
            var offset = 0
            for kind in 0..<2 {
                let rank = plan.ranks[2 * (layer * heads + h) + kind]
                for _ in 0..<2 {
                    let range = offset..<(offset + rank * d)
                    let rms = (range.reduce(Float(0)) { $0 + initial[h][$1] * initial[h][$1] } / Float(rank * d)).squareRoot()
                    matrices.append((h, range, AdamW(count: rank * d), rms))
                    offset += rank * d
                }
            }
        }
        let schedule = LearningRateSchedule(peak: Float(recipe.learningRate), warmupSteps: max(1, recipe.steps / 10), totalSteps: recipe.steps)
        let sum = FloatBuffer(count: parameters.map(\.count).max() ?? 1)
        for step in 0..<recipe.steps {
            let part = (0..<slots).map { (step * slots + $0) % recipe.chunks }
            let (_, energies) = pass(part, gradients: true)
            let rate = schedule.rate(at: step + 1)
            for h in 0..<heads {
                // Gradients of the batch, relative to its exact output energy (the loss is relative).
                let energy = Float(max((0..<slots).reduce(0.0) { $0 + energies[h * slots + $1] }, 1e-30))
                sum.pointer.update(repeating: 0, count: parameters[h].count)
                for s in 0..<slots { axpyF32(1 / energy, gradients[h * slots + s].pointer, sum.pointer, count: parameters[h].count) }
                for m in matrices where m.head == h {
                    m.optimizer.update(parameters: parameters[h].pointer + m.range.lowerBound, gradients: sum.pointer + m.range.lowerBound,
                                       learningRate: rate * m.scale)
                }
            }
        }
        var afterTrain = error(trainChunks), afterHeld = error(held)
        let kept = !(afterTrain < beforeTrain)
        if kept {
            for h in 0..<heads { parameters[h].pointer.update(from: initial[h], count: initial[h].count) }
            afterTrain = beforeTrain; afterHeld = beforeHeld
        }
        for h in 0..<heads {
            let v = 2 * (layer * heads + h), rk = plan.ranks[v], rv = plan.ranks[v + 1], p = parameters[h].pointer
            plan.encoders.pointer.advanced(by: plan.offsets[v]).update(from: p, count: rk * d)
            plan.decoders.pointer.advanced(by: plan.offsets[v]).update(from: p + rk * d, count: rk * d)
            plan.encoders.pointer.advanced(by: plan.offsets[v + 1]).update(from: p + 2 * rk * d, count: rv * d)
            plan.decoders.pointer.advanced(by: plan.offsets[v + 1]).update(from: p + 2 * rk * d + rv * d, count: rv * d)
        }
        return LayerTrainingReport(trainBefore: beforeTrain, trainAfter: afterTrain, heldBefore: beforeHeld, heldAfter: afterHeld, kept: kept)
    }
}
