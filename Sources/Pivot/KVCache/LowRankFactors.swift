import Foundation
import PivotKernels

/// CSKV's low-rank channels, per layer and KV head, for keys (before RoPE) and values.
///
/// The closed form of min ‖WX − ABX‖_F over rank-r A·B (whitened SVD: SVD of W·L with L Lᵀ = X Xᵀ, as
/// Palu and SVD-LLM do) is A·B = U_r U_rᵀ W, U_r the top r left singular vectors of W·L, which are the
/// top eigenvectors of W X Xᵀ Wᵀ = Σ_t k_t k_tᵀ: the second moment of the projection's outputs on the
/// calibration tokens. So the factorization needs only that d×d moment per head (64×64 here) and a
/// symmetric eigen-decomposition, and it stays exact for any weight format: B·x = U_rᵀ(W x) is computed
/// from the projection the model already runs. The eigenvalues are the squared error each dropped
/// direction costs, which is what ranks are allocated by.
///
/// Error is measured where it matters, in a metric S per head (x' = S x; the factorization is of S M S):
/// for keys, the queries' mean energy per rotary pair (a key error e changes a logit by q·R e, and over
/// relative positions the rotation averages that to ½‖q_pair‖²‖e_pair‖² per pair), so the dimensions
/// queries read are kept; for values, G^½ with G = Σ_h W_o,hᵀ W_o,h over the group's query heads, so
/// errors are weighed by what the output projection makes of them. Plain PCA (S = I) lost 0.5–1.4 PPL
/// more at half rank on the default model (BENCHMARKS.md).
public final class LowRankKVFactors {
    public let layers: Int, kvHeads: Int, headDim: Int
    /// Calibration tokens the moments were summed over.
    public let tokens: Int
    /// Per vector v = (layer·kvHeads + head)·2 + (0 keys, 1 values): eigenvalues, descending.
    public let eigenvalues: [[Double]]
    /// Per vector: its eigenvectors as rows, row-major headDim × headDim, in eigenvalue order.
    public let bases: [[Float]]
    /// Per vector: the metric S and S⁻¹ (row-major headDim²; symmetric).
    public let metrics: [[Float]], inverseMetrics: [[Float]]

    public var vectorCount: Int { layers * kvHeads * 2 }

    init(layers: Int, kvHeads: Int, headDim: Int, tokens: Int, eigenvalues: [[Double]], bases: [[Float]],
         metrics: [[Float]], inverseMetrics: [[Float]]) {
        self.layers = layers; self.kvHeads = kvHeads; self.headDim = headDim; self.tokens = tokens
        self.eigenvalues = eigenvalues; self.bases = bases; self.metrics = metrics; self.inverseMetrics = inverseMetrics
    }

    /// From summed outer products Σ x xᵀ (one headDim² array per vector, in vector order) and, per vector,
    /// a symmetric positive-definite metric S (nil: the identity).
    public convenience init(secondMoments: [[Double]], metrics: [[Double]]? = nil, layers: Int, kvHeads: Int, headDim: Int, tokens: Int) {
        precondition(secondMoments.count == layers * kvHeads * 2, "one moment per layer, head, keys/values")
        let d = headDim
        var identity = [Double](repeating: 0, count: d * d)
        for i in 0..<d { identity[i * d + i] = 1 }
        var values: [[Double]] = [], bases: [[Float]] = [], ss: [[Float]] = [], inverses: [[Float]] = []
        for (v, moment) in secondMoments.enumerated() {
            let metric = metrics?[v] ?? identity
            let (eigenvalues, basis) = symmetricEigen(multiply(multiply(metric, moment, d), metric, d), n: d)
            values.append(eigenvalues.map { max(0, $0) })
            bases.append(basis.map { Float($0) })
            ss.append(metric.map { Float($0) })
            inverses.append(symmetricPower(metric, n: d, power: -1).map { Float($0) })
        }
        self.init(layers: layers, kvHeads: kvHeads, headDim: headDim, tokens: tokens, eigenvalues: values, bases: bases,
                  metrics: ss, inverseMetrics: inverses)
    }

    /// Ranks per vector (multiples of 8, at least 8) whose total is `fraction` of all channels. Keys get
    /// `keyChannels` per head on average (at most half the budget), values the rest; within each, greedily
    /// the next 8 directions that remove the most relative error (dropped eigenvalues over the head's
    /// total), optimal for a sum of relative errors since each head's error is convex in its rank.
    /// Relative errors do not compare keys with values (keys look far more concentrated, yet cutting them
    /// costs more), so the split is fixed: 18 key channels per head was best at 50% and 25% rank on the
    /// default model (wikitext-2, BENCHMARKS.md), against shares of 20–62% of the budget.
    public func allocateRanks(fraction: Double, keyChannels: Int = 18) throws -> [Int] {
        let step = Self.rankStep, n = vectorCount
        let total = Self.channelBudget(fraction: fraction, channels: n * headDim)
        guard total >= step * n, total <= headDim * n else {
            throw PivotError.invalidArgument(String(format: "--kv-rank %.3g gives %d channels over %d heads: at least %d (8 per head) and at most %d", fraction, total, n, step * n, headDim * n))
        }
        let half = n / 2
        var keyTotal = min(total / 2 / step, Int((Double(keyChannels * half) / Double(step)).rounded(.toNearestOrEven))) * step
        keyTotal = min(max(keyTotal, step * half, total - headDim * half), headDim * half, total - step * half)
        var ranks = [Int](repeating: step, count: n)
        let totals = eigenvalues.map { max($0.reduce(0, +), .leastNormalMagnitude) }
        func gain(_ v: Int) -> Double {
            let r = ranks[v]
            guard r + step <= headDim else { return -1 }
            return eigenvalues[v][r..<(r + step)].reduce(0, +) / totals[v]
        }
        for (kind, budget) in [(0, keyTotal), (1, total - keyTotal)] {
            let members = Array(stride(from: kind, to: n, by: 2))
            var gains = members.map(gain)
            for _ in 0..<((budget - step * half) / step) {
                var best = 0
                for m in 1..<members.count where gains[m] > gains[best] { best = m }
                ranks[members[best]] += step
                gains[best] = gain(members[best])
            }
        }
        return ranks
    }

    /// Ranks are allocated in steps of this many channels.
    public static let rankStep = 8

    /// Latent channels a `fraction` of `channels` buys, in whole steps (what `allocateRanks` distributes and
    /// what memory accounting counts).
    public static func channelBudget(fraction: Double, channels: Int) -> Int {
        Int((fraction * Double(channels) / Double(rankStep)).rounded()) * rankStep
    }

    /// Relative squared error Σ dropped λ / Σ λ of vector `v` at rank `r`.
    public func relativeError(vector v: Int, rank r: Int) -> Double {
        let all = eigenvalues[v].reduce(0, +)
        return all > 0 ? eigenvalues[v][r...].reduce(0, +) / all : 0
    }

    // MARK: File

    /// A `.safetensors` file: `eigenvalues` (vectors × headDim, F32) and `bases` (vectors × headDim ×
    /// headDim, F32), the calibration token count in `tokens` (1 element).
    public func write(to path: String) throws {
        let values = eigenvalues.flatMap { $0.map { Float($0) } }
        try SafetensorsWriter.write([
            .init(name: "eigenvalues", shape: [vectorCount, headDim], floats: values),
            .init(name: "bases", shape: [vectorCount, headDim, headDim], floats: bases.flatMap { $0 }),
            .init(name: "metrics", shape: [vectorCount, headDim, headDim], floats: metrics.flatMap { $0 }),
            .init(name: "inverse_metrics", shape: [vectorCount, headDim, headDim], floats: inverseMetrics.flatMap { $0 }),
            .init(name: "shape", shape: [4], floats: [Float(layers), Float(kvHeads), Float(headDim), Float(tokens)]),
        ], to: path)
    }

    public static func load(path: String) throws -> LowRankKVFactors {
        let store = try SafetensorsStore(file: path)
        guard let shape = store.tensor(named: "shape")?.toFloats(), shape.count == 4,
              let values = store.tensor(named: "eigenvalues"), let bases = store.tensor(named: "bases"),
              let metrics = store.tensor(named: "metrics"), let inverses = store.tensor(named: "inverse_metrics") else {
            throw PivotError.malformed(file: path, "not a CSKV factor file (needs shape, eigenvalues, bases, metrics, inverse_metrics)")
        }
        let layers = Int(shape[0]), heads = Int(shape[1]), d = Int(shape[2])
        let n = layers * heads * 2
        guard values.shape == [n, d], bases.shape == [n, d, d], metrics.shape == [n, d, d], inverses.shape == [n, d, d] else {
            throw PivotError.malformed(file: path, "eigenvalues \(values.shape) / bases \(bases.shape) do not match \(layers) layers × \(heads) heads × \(d)")
        }
        let v = values.toFloats(), b = bases.toFloats(), m = metrics.toFloats(), mi = inverses.toFloats()
        func square(_ all: [Float], _ i: Int) -> [Float] { Array(all[(i * d * d)..<((i + 1) * d * d)]) }
        return LowRankKVFactors(layers: layers, kvHeads: heads, headDim: d, tokens: Int(shape[3]),
                                eigenvalues: (0..<n).map { i in v[(i * d)..<((i + 1) * d)].map(Double.init) },
                                bases: (0..<n).map { square(b, $0) }, metrics: (0..<n).map { square(m, $0) },
                                inverseMetrics: (0..<n).map { square(mi, $0) })
    }
}

/// a·b for n×n row-major matrices.
func multiply(_ a: [Double], _ b: [Double], _ n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: n * n)
    for i in 0..<n { for k in 0..<n { let x = a[i * n + k]; if x != 0 { for j in 0..<n { c[i * n + j] += x * b[k * n + j] } } } }
    return c
}

/// A^p of a symmetric positive semi-definite matrix through its eigen-decomposition; eigenvalues below
/// 1e-8 of the largest are raised to that floor so inverses stay bounded.
public func symmetricPower(_ a: [Double], n: Int, power: Double) -> [Double] {
    let (values, vectors) = symmetricEigen(a, n: n)
    let floor = max(values.first ?? 0, 1e-300) * 1e-8
    var out = [Double](repeating: 0, count: n * n)
    for k in 0..<n {
        let scaled = Foundation.pow(max(values[k], floor), power)
        for i in 0..<n { for j in 0..<n { out[i * n + j] += vectors[k * n + i] * scaled * vectors[k * n + j] } }
    }
    return out
}

/// What a low-rank cache needs at run time: each vector's rank, its encoder rows (eigenvector / σ:
/// latents come out whitened, about unit scale per channel, so one 4-bit range per token fits them)
/// and decoder rows (eigenvector · σ), and the model's RoPE to rotate reconstructed keys.
public final class LowRankPlan {
    public let factors: LowRankKVFactors
    public let ranks: [Int]
    public let latentBits: Int
    let encoders: FloatBuffer, decoders: FloatBuffer
    let offsets: [Int]
    let rope: RotaryGeometry

    public init(factors: LowRankKVFactors, fraction: Double, latentBits: Int, rope: RotaryGeometry) throws {
        self.factors = factors
        let ranks = try factors.allocateRanks(fraction: fraction)
        self.ranks = ranks
        self.latentBits = latentBits
        self.rope = rope
        let d = factors.headDim
        var offsets: [Int] = [], total = 0
        for r in ranks { offsets.append(total); total += r * d }
        self.offsets = offsets
        encoders = FloatBuffer(count: total)
        decoders = FloatBuffer(count: total)
        for v in 0..<factors.vectorCount {
            let values = factors.eigenvalues[v], floor = max(values[0], 1e-30) * 1e-10
            let basis = factors.bases[v], metric = factors.metrics[v], inverse = factors.inverseMetrics[v]
            for c in 0..<ranks[v] {
                let sigma = Float(max(values[c], floor).squareRoot())
                for i in 0..<d {
                    var encoded: Float = 0, decoded: Float = 0
                    for j in 0..<d { encoded += metric[i * d + j] * basis[c * d + j]; decoded += inverse[i * d + j] * basis[c * d + j] }
                    encoders.pointer[offsets[v] + c * d + i] = encoded / sigma
                    decoders.pointer[offsets[v] + c * d + i] = decoded * sigma
                }
            }
        }
    }

    /// Latent channels over all vectors (the budget's total).
    public var totalRank: Int { ranks.reduce(0, +) }

    @inline(__always) func encoder(_ v: Int) -> UnsafePointer<Float> { UnsafePointer(encoders.pointer + offsets[v]) }
    @inline(__always) func decoder(_ v: Int) -> UnsafePointer<Float> { UnsafePointer(decoders.pointer + offsets[v]) }
}

/// A model's rotary embedding, for caches that must undo or redo it (keys stored before RoPE).
public struct RotaryGeometry: Sendable {
    public var headDim: Int
    public var theta: Float
    public var scaling: RoPEScaling
    public var interleaved: Bool
    /// Per layer: whether RoPE is applied there.
    public var layers: [Bool]

    public init(_ config: ModelConfig) {
        headDim = config.headDim; theta = config.ropeTheta; scaling = config.ropeScaling
        interleaved = config.ropeInterleaved
        layers = (0..<config.layerCount).map { config.usesRoPE(layer: $0) }
    }

    public init(headDim: Int, theta: Float = 10000, interleaved: Bool = true, layers: Int) {
        self.headDim = headDim; self.theta = theta; scaling = .none; self.interleaved = interleaved
        self.layers = Array(repeating: true, count: layers)
    }

    func makeTable(positions: Int) -> RoPETable {
        let table = RoPETable(headDim: headDim, theta: theta, scaling: scaling)
        table.ensure(positions: max(1, positions))
        return table
    }
}

extension RoPETable {
    /// Rotates `x` at `position` forward, or back with `inverse` (a key to its pre-RoPE form; the table's
    /// attention factor f scales the forward rotation, so the inverse divides by f²). `scratch`: headDim floats.
    func rotate(_ x: UnsafeMutablePointer<Float>, position: Int, interleaved: Bool, inverse: Bool, scratch: UnsafeMutablePointer<Float>) {
        guard inverse else {
            applyRoPE(x, headDim: 2 * half, cos: cos(position: position), sin: sin(position: position), interleaved: interleaved)
            return
        }
        let c = cos(position: position), s = sin(position: position)
        let undo = Float(1 / (attentionFactor * attentionFactor))
        for i in 0..<half { scratch[i] = c[i] * undo; scratch[half + i] = -s[i] * undo }
        applyRoPE(x, headDim: 2 * half, cos: UnsafePointer(scratch), sin: UnsafePointer(scratch + half), interleaved: interleaved)
    }
}
