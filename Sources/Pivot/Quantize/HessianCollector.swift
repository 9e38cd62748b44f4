import PivotKernels

/// Σ x·xᵀ over every calibration token seen at one projection input (GPTQ's H, up to a factor 2/N).
/// Q/K/V share one, as do gate/up: the input is the same matrix.
public final class InputHessian {
    public let columns: Int
    /// Upper triangle (j ≥ i) of the running sum, row-major `columns × columns`, in float as GPTQ's reference.
    let sums: FloatBuffer
    public private(set) var tokens = 0
    /// Per column, Σ|x| and max|x| over the same tokens: AWQ's and SmoothQuant's activation statistics
    /// (empty when read from a cache written before they were kept).
    public internal(set) var absoluteSums: [Double]
    public internal(set) var absoluteMaxima: [Float]

    init(columns: Int) {
        self.columns = columns
        sums = FloatBuffer(count: columns * columns)
        absoluteSums = [Double](repeating: 0, count: columns)
        absoluteMaxima = [Float](repeating: 0, count: columns)
    }

    /// Whether the activation statistics were collected with the sums.
    public var hasActivationStatistics: Bool { absoluteSums.count == columns && absoluteMaxima.count == columns }

    /// E[x²] per column: the diagonal of E[x·xᵀ] (the importance the quantizers weigh errors with).
    var meanSquares: [Float] { (0..<columns).map { sums.pointer[$0 * columns + $0] / Float(max(tokens, 1)) } }

    /// Mean |x| per column (AWQ's activation scale).
    public var meanAbsolute: [Float] { absoluteSums.map { Float($0 / Double(max(tokens, 1))) } }

    /// A Hessian read back (`CalibrationCache`): `sums` as `add` leaves them, over `tokens` tokens.
    init(columns: Int, sums stored: UnsafeBufferPointer<Float>, tokens: Int) {
        precondition(stored.count == columns * columns)
        self.columns = columns
        sums = FloatBuffer(count: columns * columns)
        sums.pointer.update(from: stored.baseAddress!, count: stored.count)
        self.tokens = tokens
        absoluteSums = []
        absoluteMaxima = []
    }

    /// The Hessian of the input x / s (each column j divided by `scales[j]`): H'ᵢⱼ = Hᵢⱼ / (sᵢ·sⱼ), the
    /// statistics scaled alike. What a projection sees after its input was scaled by an equivalence.
    func scaled(by scales: [Float]) -> InputHessian {
        precondition(scales.count == columns)
        let n = columns, result = InputHessian(columns: n)
        for i in 0..<n {
            let row = sums.pointer + i * n, out = result.sums.pointer + i * n, inverse = 1 / scales[i]
            for j in i..<n { out[j] = row[j] * inverse / scales[j] }
        }
        result.tokens = tokens
        result.absoluteSums = hasActivationStatistics ? zip(absoluteSums, scales).map { $0 / Double($1) } : []
        result.absoluteMaxima = hasActivationStatistics ? zip(absoluteMaxima, scales).map { $0 / $1 } : []
        return result
    }

    /// Adds every row of `x`; rows of four output rows i at a time, eight columns j per vector.
    func add(_ x: Matrix, pool: ThreadPool) {
        let n = columns, h = sums.pointer, base = x.base, stride = x.stride, count = x.rows
        let quads = n / 4
        /// Σ_t x[t][i]·x[t][j], for the entries the SIMD blocks leave.
        func dotColumn(_ i: Int, _ j: Int) -> Float {
            var s: Float = 0
            for t in 0..<count { s += base[t * stride + i] * base[t * stride + j] }
            return s
        }
        // Work per quad shrinks along the triangle; interleaved chunks keep threads even.
        pool.parallelFor(chunks: min(quads, pool.threads * 8)) { chunk in
            var q = chunk
            while q < quads {
                let i0 = q * 4, jStart = i0 / 8 * 8
                var j = jStart
                while j + 8 <= n {
                    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                    for t in 0..<count {
                        let row = UnsafeRawPointer(base + t * stride)
                        let xj = row.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                        let xi = base + t * stride + i0
                        a0 += xi[0] * xj; a1 += xi[1] * xj; a2 += xi[2] * xj; a3 += xi[3] * xj
                    }
                    @inline(__always) func accumulate(_ k: Int, _ a: SIMD8<Float>) {
                        let target = UnsafeMutableRawPointer(h + (i0 + k) * n + j)
                        target.storeBytes(of: target.loadUnaligned(as: SIMD8<Float>.self) + a, as: SIMD8<Float>.self)
                    }
                    accumulate(0, a0); accumulate(1, a1); accumulate(2, a2); accumulate(3, a3)
                    j += 8
                }
                // Columns past the last whole eight (widths such as Mamba's Δ rank of 4).
                for k in 0..<4 { for jj in j..<n { h[(i0 + k) * n + jj] += dotColumn(i0 + k, jj) } }
                q += min(quads, pool.threads * 8)
            }
        }
        // Rows past the last whole four.
        for i in (quads * 4)..<n { for j in (i / 8 * 8)..<n { h[i * n + j] += dotColumn(i, j) } }
        for t in 0..<count {
            let row = base + t * stride
            for j in 0..<n {
                let a = abs(row[j])
                absoluteSums[j] += Double(a)
                absoluteMaxima[j] = max(absoluteMaxima[j], a)
            }
        }
        tokens += count
    }

    /// E[x·xᵀ] (the sums over the token count), full and symmetric, in float.
    func meanMatrix() -> [Float] {
        let n = columns, scale = 1 / Float(max(tokens, 1))
        var m = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { let v = sums.pointer[i * n + j] * scale; m[i * n + j] = v; m[j * n + i] = v } }
        return m
    }

    /// The full symmetric matrix in double.
    public func matrix() -> [Double] {
        let n = columns
        var m = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { let v = Double(sums.pointer[i * n + j]); m[i * n + j] = v; m[j * n + i] = v } }
        return m
    }
}

/// Passes through to the wrapped projection; the first projection of a shared input records it.
final class HessianRecorder: LinearOperator {
    let inner: LinearOperator
    let hessian: InputHessian
    let records: Bool

    init(_ inner: LinearOperator, hessian: InputHessian, records: Bool) {
        self.inner = inner; self.hessian = hessian; self.records = records
    }

    var inFeatures: Int { inner.inFeatures }
    var outFeatures: Int { inner.outFeatures }
    var weightBytes: Int { inner.weightBytes }
    var formatName: String { inner.formatName }

    func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        if records { hessian.add(x, pool: context.pool) }
        inner.forward(x, into: y, context: context)
    }
}

public enum HessianCollector {
    /// Runs `model` over `tokens` in chunks of `contextLength` (each from an empty cache) and returns,
    /// per projection tensor name ("blk.N.attn_q.weight" …), the Hessian of its input.
    public static func collect(model: LoadedModel, tokens: [Int], contextLength: Int = 512, chunks limit: Int? = nil,
                               pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws -> [String: InputHessian] {
        var hessians: [String: InputHessian] = [:]
        var shared: [Int: [ProjectionRole: InputHessian]] = [:]
        try model.runCalibration(tokens: tokens, contextLength: contextLength, chunks: limit, execution: Execution(pool: pool), progress: progress) { index, op, role in
            let input = role.sharedInput
            let known = shared[index]?[input]
            let hessian = known ?? InputHessian(columns: op.inFeatures)
            shared[index, default: [:]][input] = hessian
            hessians[role.tensorName(layer: index)] = hessian
            return HessianRecorder(op, hessian: hessian, records: known == nil)
        }
        return hessians
    }
}

extension LoadedModel {
    /// Runs the model over `tokens` in chunks of `contextLength` (each from an empty cache, as
    /// llama-imatrix does) with every block projection replaced by `wrap(layer, op, role)` for the
    /// run; returns how many chunks ran.
    @discardableResult
    func runCalibration(tokens: [Int], contextLength: Int, chunks limit: Int?, execution: Execution,
                        progress: (Int, Int) -> Void, wrap: (Int, LinearOperator, ProjectionRole) -> LinearOperator) throws -> Int {
        let available = tokens.count / contextLength
        let chunks = limit.map { min($0, available) } ?? available
        guard chunks > 0 else {
            throw PivotError.invalidArgument("the calibration text has \(tokens.count) tokens, fewer than one chunk of \(contextLength)")
        }
        let original = transformer.layers
        transformer.layers = original.enumerated().map { index, layer in layer.mappingProjections { wrap(index, $0, $1) } }
        defer { transformer.layers = original }
        let state = ForwardState(config: config, maxTokens: contextLength, allLogits: false, execution: execution)
        let cache = makeCache(capacity: contextLength, maxBatch: contextLength)
        for c in 0..<chunks {
            cache.truncate(to: 0)
            _ = transformer.forward(Array(tokens[(c * contextLength)..<((c + 1) * contextLength)]), cache: cache, state: state)
            progress(c + 1, chunks)
        }
        return chunks
    }
}
