import Foundation
import XCTest
import Pivot
import PivotKernels

/// CSKV: factors, rank allocation, the low-rank cache against exact attention.
final class LowRankKVCacheTests: XCTestCase {
    let shape = AttentionShape(layers: 1, heads: 6, kvHeads: 2, headDim: 64)

    func testSymmetricEigenReconstructsTheMatrix() {
        var g = SplitMix64(seed: 1)
        let n = 12
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { let x = Double.random(in: -1...1, using: &g); a[i * n + j] = x; a[j * n + i] = x } }
        let (values, vectors) = symmetricEigen(a, n: n)
        XCTAssertEqual(values, values.sorted(by: >))
        for i in 0..<n {
            for j in 0..<n {
                let rebuilt = (0..<n).reduce(0.0) { $0 + vectors[$1 * n + i] * values[$1] * vectors[$1 * n + j] }
                XCTAssertEqual(rebuilt, a[i * n + j], accuracy: 1e-12)
                let dot = (0..<n).reduce(0.0) { $0 + vectors[i * n + $1] * vectors[j * n + $1] }
                XCTAssertEqual(dot, i == j ? 1 : 0, accuracy: 1e-12)
            }
        }
    }

    /// Keys (before RoPE) and values that lie in 8-dimensional subspaces, stored at rank 8 of 64: the
    /// cache reproduces exact attention up to the F16 latents, through RoPE undone and redone.
    func testLowRankDataIsReproduced() {
        var g = SplitMix64(seed: 4)
        let d = shape.headDim, kvWidth = shape.kvHeads * d, qWidth = shape.heads * d, n = 60
        let rope = RotaryGeometry(headDim: d, layers: 1)
        // Per head and kind, a random 64×8 basis; rows are basis · coefficients.
        let bases = (0..<(2 * shape.kvHeads)).map { _ in randomRows(d * 8, &g) }
        var preKeys = [Float](), keys = [Float](), values = [Float]()
        var moments = Array(repeating: [Double](repeating: 0, count: d * d), count: 2 * shape.kvHeads)
        for position in 0..<n {
            for h in 0..<shape.kvHeads {
                for kind in 0..<2 {
                    let z = randomRows(8, &g)
                    let x = (0..<d).map { i in (0..<8).reduce(Float(0)) { $0 + bases[2 * h + kind][i * 8 + $1] * z[$1] } }
                    for i in 0..<d { for j in 0..<d { moments[2 * h + kind][i * d + j] += Double(x[i] * x[j]) } }
                    if kind == 0 { preKeys += x; keys += rotated(x, position: position) } else { values += x }
                }
            }
        }
        // Error metrics (as calibration makes them): diagonal for keys, a dense SPD matrix for values.
        let metrics = (0..<(2 * shape.kvHeads)).map { v -> [Double] in
            let a = randomRows(d * d, &g, scale: 0.2).map(Double.init)
            var m = [Double](repeating: 0, count: d * d)
            for i in 0..<d {
                for j in 0..<d {
                    m[i * d + j] = v % 2 == 0 ? (i == j ? 0.5 + abs(a[i * d + i]) * 5 : 0) : (0..<d).reduce(i == j ? 1 : 0) { $0 + a[i * d + $1] * a[j * d + $1] }
                }
            }
            return m
        }
        let factors = LowRankKVFactors(secondMoments: moments, metrics: metrics, layers: 1, kvHeads: shape.kvHeads, headDim: d, tokens: n)
        XCTAssertLessThan(factors.relativeError(vector: 0, rank: 8), 1e-6)
        XCTAssertLessThan(factors.relativeError(vector: 1, rank: 8), 1e-6)
        let plan = try! LowRankPlan(factors: factors, fraction: 8.0 / 64, latentBits: 16, rope: rope)
        _ = preKeys
        XCTAssertEqual(plan.ranks, [8, 8, 8, 8])
        let driver = CacheDriver(.cskv(CSKVSettings(window: 8, rank: 8.0 / 64)), shape: shape, capacity: 64, maxBatch: 32, lowRank: plan)
        let q = randomRows(n * qWidth, &g, scale: 3)
        var out: [Float] = []
        for (start, end) in [(0, 30), (30, 31), (31, 60)] {
            out += driver.step(k: Array(keys[(start * kvWidth)..<(end * kvWidth)]), v: Array(values[(start * kvWidth)..<(end * kvWidth)]),
                               q: Array(q[(start * qWidth)..<(end * qWidth)]))
        }
        var worst: Float = 0
        for t in Swift.stride(from: 0, to: n, by: 7) {
            let exact = naiveAttention(shape: shape, q: q, t: t, count: t + 1, key: { keys[$0 * kvWidth + $1] }, value: { values[$0 * kvWidth + $1] })
            for i in 0..<qWidth { worst = max(worst, abs(out[t * qWidth + i] - exact[i])) }
        }
        XCTAssertLessThan(worst, 5e-3)
        XCTAssertGreaterThan(worst, 0)
        _ = preKeys
    }

    /// Full rank: every head keeps all 64 directions, so only the F16 latents separate it from exact.
    func testFullRankMatchesExactAttention() {
        let (driver, keys, values, q, n) = randomRun(spec: .cskv(CSKVSettings(window: 8, rank: 1)), batches: [25, 1, 30])
        _ = driver
        let kvWidth = shape.kvHeads * shape.headDim, qWidth = shape.heads * shape.headDim
        var worst: Float = 0
        for t in Swift.stride(from: 0, to: n, by: 5) {
            let exact = naiveAttention(shape: shape, q: q, t: t, count: t + 1, key: { keys[$0 * kvWidth + $1] }, value: { values[$0 * kvWidth + $1] })
            for i in 0..<qWidth { worst = max(worst, abs(driver.outputs[t * qWidth + i] - exact[i])) }
        }
        XCTAssertLessThan(worst, 3e-3)
    }

    /// One batched pass equals token-by-token decoding bit for bit (4-bit latents, half rank), and a
    /// rollback across the window followed by the same tokens changes nothing.
    func testBatchEqualsTokenByTokenAndRollbackIsExact() {
        let spec: KVCacheSpec = .cskv(CSKVSettings(window: 8, rank: 0.5, latentBits: 4))
        let batched = randomRun(spec: spec, batches: [6, 50])
        let single = randomRun(spec: spec, batches: Array(repeating: 1, count: 56))
        XCTAssertEqual(batched.driver.outputs, single.driver.outputs)
        let kvWidth = shape.kvHeads * shape.headDim, qWidth = shape.heads * shape.headDim
        for back in [20, 1, 9] {
            let keep = 56 - back
            batched.driver.cache.truncate(to: keep)
            let replay = batched.driver.step(k: Array(batched.keys[(keep * kvWidth)...]), v: Array(batched.values[(keep * kvWidth)...]),
                                             q: Array(batched.q[(keep * qWidth)...]))
            XCTAssertEqual(replay, Array(single.driver.outputs[(keep * qWidth)...]), "rollback of \(back)")
        }
        // Longer than the batch staging: the window comes back from the latents, close but not exact.
        let long = randomRun(spec: spec, batches: Array(repeating: 1, count: 56), maxBatch: 2)
        long.driver.cache.truncate(to: 30)
        let replay = long.driver.step(k: Array(long.keys[(30 * kvWidth)..<(31 * kvWidth)]), v: Array(long.values[(30 * kvWidth)..<(31 * kvWidth)]),
                                      q: Array(long.q[(30 * qWidth)..<(31 * qWidth)]))
        var worst: Float = 0
        for i in 0..<qWidth { worst = max(worst, abs(replay[i] - single.driver.outputs[30 * qWidth + i])) }
        XCTAssertLessThan(worst, 0.3)
    }

    /// Decode rebuilds and scores keys a tile at a time over several spans: the same as a batch.
    func testLongDecodeEqualsBatch() {
        let spec: KVCacheSpec = .cskv(CSKVSettings(window: 16, rank: 0.5))
        let batched = randomRun(spec: spec, batches: [650], maxBatch: 650, capacity: 700)
        let decoded = randomRun(spec: spec, batches: [600] + Array(repeating: 1, count: 50), maxBatch: 650, capacity: 700)
        XCTAssertEqual(batched.driver.outputs, decoded.driver.outputs)
    }

    func testRanksFollowTheErrorUnderTheBudget() throws {
        // Head 0's keys: energy in 8 directions; head 0's values: spread evenly; head 1's decay (keys faster).
        let d = 64
        func moment(_ spectrum: (Int) -> Double) -> [Double] {
            var m = [Double](repeating: 0, count: d * d)
            for i in 0..<d { m[i * d + i] = spectrum(i) }
            return m
        }
        let moments = [moment { $0 < 8 ? 1 : 1e-6 }, moment { _ in 1 }, moment { exp(-Double($0) / 8) }, moment { exp(-Double($0) / 16) }]
        let factors = LowRankKVFactors(secondMoments: moments, layers: 1, kvHeads: 2, headDim: d, tokens: 1)
        let ranks = try factors.allocateRanks(fraction: 0.5)
        XCTAssertEqual(ranks.reduce(0, +), 128)
        // Keys: 18 per head → 32 of the 128 (4 steps of 8); head 0's are all in 8 directions, head 1's decay.
        XCTAssertEqual(ranks, [8, 64, 24, 32])
        XCTAssertThrowsError(try factors.allocateRanks(fraction: 0.05))
        // Memory: latents of every token, the F32 window and the F32 encoder/decoder rows.
        let spec: KVCacheSpec = .cskv(CSKVSettings(window: 32, rank: 0.5, latentBits: 4))
        let tiny = AttentionShape(layers: 1, heads: 2, kvHeads: 2, headDim: 64)
        let latents: Double = 100 * (64 + 4 * 4), window: Double = 2 * 32 * 2 * 64 * 4, factorRows: Double = 2 * 128 * 64 * 4
        XCTAssertEqual(spec.bytes(atLength: 100, shape: tiny), latents + window + factorRows)
    }

    // MARK: Helpers

    private func rotated(_ x: [Float], position: Int) -> [Float] {
        var y = x
        let half = x.count / 2
        let cos = (0..<half).map { Float(Foundation.cos(Double(Float(position) * Float(pow(10000.0, -2.0 * Double($0) / Double(x.count)))))) }
        let sin = (0..<half).map { Float(Foundation.sin(Double(Float(position) * Float(pow(10000.0, -2.0 * Double($0) / Double(x.count)))))) }
        y.withUnsafeMutableBufferPointer { applyRoPE($0.baseAddress!, headDim: x.count, cos: cos, sin: sin, interleaved: true) }
        return y
    }

    /// Random keys/values/queries fed in `batches`, factors from the keys' and values' own moments.
    private func randomRun(spec: KVCacheSpec, batches: [Int], maxBatch: Int = 50, capacity: Int = 64)
        -> (driver: RecordingDriver, keys: [Float], values: [Float], q: [Float], n: Int) {
        var g = SplitMix64(seed: 12)
        let d = shape.headDim, kvWidth = shape.kvHeads * d, qWidth = shape.heads * d, n = batches.reduce(0, +)
        // Correlated channels so the spectrum decays: x = A·u with a fixed random A per head.
        let mixes = (0..<(2 * shape.kvHeads)).map { _ in randomRows(d * d, &g, scale: 0.3) }
        var keys = [Float](), values = [Float]()
        var moments = Array(repeating: [Double](repeating: 0, count: d * d), count: 2 * shape.kvHeads)
        for _ in 0..<n {
            for h in 0..<shape.kvHeads {
                for kind in 0..<2 {
                    let u = (0..<d).map { Float.random(in: -1...1, using: &g) * exp(-Float($0) / 12) }
                    let x = (0..<d).map { i in (0..<d).reduce(Float(0)) { $0 + mixes[2 * h + kind][i * d + $1] * u[$1] } }
                    for i in 0..<d { for j in 0..<d { moments[2 * h + kind][i * d + j] += Double(x[i] * x[j]) } }
                    if kind == 0 { keys += x } else { values += x }
                }
            }
        }
        // Keys are treated as pre-RoPE with RoPE off, so the moments above are the keys' own.
        var rope = RotaryGeometry(headDim: d, layers: 1)
        rope.layers = [false]
        let factors = LowRankKVFactors(secondMoments: moments, layers: 1, kvHeads: shape.kvHeads, headDim: d, tokens: n)
        guard case .cskv(let settings) = spec else { fatalError("randomRun takes a CSKV spec") }
        let plan = try! LowRankPlan(factors: factors, fraction: settings.rank, latentBits: settings.latentBits, rope: rope)
        let q = randomRows(n * qWidth, &g, scale: 3)
        let driver = RecordingDriver(CacheDriver(spec, shape: shape, capacity: capacity, maxBatch: maxBatch, lowRank: plan))
        var start = 0
        for b in batches {
            driver.outputs += driver.inner.step(k: Array(keys[(start * kvWidth)..<((start + b) * kvWidth)]), v: Array(values[(start * kvWidth)..<((start + b) * kvWidth)]),
                                                q: Array(q[(start * qWidth)..<((start + b) * qWidth)]))
            start += b
        }
        return (driver, keys, values, q, n)
    }
}

/// A driver and every output it produced.
final class RecordingDriver {
    let inner: CacheDriver
    var outputs: [Float] = []
    init(_ inner: CacheDriver) { self.inner = inner }
    var cache: KVCache { inner.cache }
    func step(k: [Float], v: [Float], q: [Float]) -> [Float] { inner.step(k: k, v: v, q: q) }
}
