import XCTest
import Pivot
import PivotKernels

/// Feeds one cache random keys/values/queries (one layer) and collects attention outputs.
final class CacheDriver {
    let shape: AttentionShape
    let cache: KVCache
    let pool = ThreadPool(threads: 2)
    var keys: [[Float]] = [], values: [[Float]] = []

    init(_ spec: KVCacheSpec, shape: AttentionShape, capacity: Int, maxBatch: Int, lowRank: LowRankPlan? = nil) {
        self.shape = shape
        cache = PreparedKVCache(spec: spec, lowRankPlan: lowRank).makeCache(shape: shape, capacity: capacity, maxBatch: maxBatch)
    }

    /// Appends `k`/`v` rows (tokens × kvWidth) and returns attention of `q` (tokens × queryWidth).
    func step(k: [Float], v: [Float], q: [Float]) -> [Float] {
        let kvWidth = shape.kvHeads * shape.headDim, qWidth = shape.heads * shape.headDim, n = k.count / kvWidth
        keys.removeLast(max(0, keys.count - cache.length)); values.removeLast(max(0, values.count - cache.length))
        for t in 0..<n { keys.append(Array(k[(t * kvWidth)..<((t + 1) * kvWidth)])); values.append(Array(v[(t * kvWidth)..<((t + 1) * kvWidth)])) }
        var out = [Float](repeating: 0, count: n * qWidth)
        var kk = k, vv = v, qq = q
        kk.withUnsafeMutableBufferPointer { kp in vv.withUnsafeMutableBufferPointer { vp in qq.withUnsafeMutableBufferPointer { qp in
            out.withUnsafeMutableBufferPointer { op in
                cache.append(layer: 0, keys: Matrix(kp.baseAddress!, rows: n, columns: kvWidth), values: Matrix(vp.baseAddress!, rows: n, columns: kvWidth))
                cache.attend(layer: 0, queries: Matrix(qp.baseAddress!, rows: n, columns: qWidth), into: Matrix(op.baseAddress!, rows: n, columns: qWidth), pool: pool)
            }
        } } }
        cache.advance(by: n)
        return out
    }
}

func randomRows(_ count: Int, _ g: inout SplitMix64, scale: Float = 1) -> [Float] {
    (0..<count).map { _ in Float.random(in: -scale...scale, using: &g) }
}

private func half(_ x: Float) -> Float { Float(Float16(x)) }

/// Plain-loop KIVI: what a query that sees `count` positions should read for key/value j.
private struct KIVIReference {
    let spec: KIVISettings
    let keys: [[Float]], values: [[Float]]
    let headDim: Int

    func quantize(_ xs: [Float]) -> [Float] {
        let levels = Float((1 << spec.bits) - 1)
        let scale = half((xs.max()! - xs.min()!) / levels), low = half(xs.min()!)
        let inverse: Float = scale > 0 ? 1 / scale : 0
        return xs.map { x in scale * min(levels, max(0, ((x - low) * inverse).rounded(.toNearestOrEven))) + low }
    }

    func key(_ j: Int, channel c: Int, count: Int) -> Float {
        if j < spec.pivots { return keys[j][c] }
        if j < spec.keyBoundary(count: count) {
            let start = spec.pivots + (j - spec.pivots) / spec.group * spec.group
            let column = (start..<(start + spec.group)).map { half(keys[$0][c]) }
            return quantize(column)[j - start]
        }
        return half(keys[j][c])
    }

    func value(_ j: Int, channel c: Int, count: Int) -> Float {
        if j < spec.pivots { return values[j][c] }
        if j < spec.valueBoundary(count: count) {
            let start = c / spec.group * spec.group
            let row = (start..<(start + spec.group)).map { half(values[j][$0]) }
            return quantize(row)[c - start]
        }
        return half(values[j][c])
    }
}

/// Causal GQA attention over explicit key/value readers.
func naiveAttention(shape: AttentionShape, q: [Float], t: Int, count: Int,
                            key: (Int, Int) -> Float, value: (Int, Int) -> Float) -> [Float] {
    let d = shape.headDim, group = shape.heads / shape.kvHeads
    var out = [Float](repeating: 0, count: shape.heads * d)
    for h in 0..<shape.heads {
        let kvh = h / group
        var s = (0..<count).map { j in (0..<d).reduce(Float(0)) { $0 + q[t * shape.heads * d + h * d + $1] * key(j, kvh * d + $1) } / Float(d).squareRoot() }
        let m = s.max()!
        s = s.map { expf($0 - m) }
        let total = s.reduce(0, +)
        for i in 0..<d { out[h * d + i] = (0..<count).reduce(Float(0)) { $0 + s[$1] / total * value($1, kvh * d + i) } }
    }
    return out
}

final class KVCacheTests: XCTestCase {
    let shape = AttentionShape(layers: 1, heads: 6, kvHeads: 2, headDim: 64)

    /// Every cache against plain loops that quantize exactly as KIVI says, over batches that cross the
    /// window, group and pivot boundaries; and against exact F32 attention within the codes' error.
    func testCachesMatchPlainLoopAttention() {
        check(shape: shape, specs: [.f16,
                     .kivi(KIVISettings(bits: 8, group: 16, window: 24)),
                     .kivi(KIVISettings(bits: 4, group: 32, window: 16, pivots: 3)),
                     .kivi(KIVISettings(bits: 3, group: 8, window: 8)),
                     .kivi(KIVISettings(bits: 2, group: 16, window: 0, pivots: 1))], batches: [37, 1, 5, 40, 1, 1, 19, 33])
        // Other GQA groups: five heads per KV head (kernel passes of four and one), one head, two.
        check(shape: AttentionShape(layers: 1, heads: 5, kvHeads: 1, headDim: 64), specs: [.kivi(KIVISettings(bits: 4, group: 16, window: 8))], batches: [30, 1, 9])
        check(shape: AttentionShape(layers: 1, heads: 2, kvHeads: 2, headDim: 32), specs: [.kivi(KIVISettings(bits: 3, group: 8, window: 8)), .f16], batches: [30, 1, 9])
        check(shape: AttentionShape(layers: 1, heads: 4, kvHeads: 2, headDim: 64), specs: [.kivi(KIVISettings(bits: 8, group: 64, window: 4))], batches: [40, 30, 1])
    }

    /// One decode step at long context splits positions into slices merged afterwards: same result.
    func testSlicedDecodeMatchesPlainLoops() {
        check(shape: shape, specs: [.kivi(KIVISettings(bits: 2, group: 32, window: 64, pivots: 2)), .f16],
              batches: [600, 600, 1, 1], capacity: 1300, maxBatch: 600, sampleEvery: 1)
    }

    private func check(shape: AttentionShape, specs: [KVCacheSpec], batches: [Int], capacity: Int = 160, maxBatch: Int = 40, sampleEvery: Int = 4) {
        let kvWidth = shape.kvHeads * shape.headDim, qWidth = shape.heads * shape.headDim
        for spec in specs {
            var kivi: KIVISettings?
            if case .kivi(let settings) = spec { kivi = settings }
            var g = SplitMix64(seed: 3)
            let driver = CacheDriver(spec, shape: shape, capacity: capacity, maxBatch: maxBatch)
            var worstExact: Float = 0
            for batch in batches {
                let start = driver.cache.length
                let k = randomRows(batch * kvWidth, &g), v = randomRows(batch * kvWidth, &g), q = randomRows(batch * qWidth, &g, scale: 3)
                let out = driver.step(k: k, v: v, q: q)
                let ref = KIVIReference(spec: kivi ?? KIVISettings(), keys: driver.keys, values: driver.values, headDim: shape.headDim)
                for t in Swift.stride(from: 0, to: batch, by: max(1, batch / sampleEvery)) {
                    let count = start + t + 1
                    let expected = naiveAttention(shape: shape, q: q, t: t, count: count,
                                                  key: { kivi == nil ? half(driver.keys[$0][$1]) : ref.key($0, channel: $1, count: count) },
                                                  value: { kivi == nil ? half(driver.values[$0][$1]) : ref.value($0, channel: $1, count: count) })
                    let exact = naiveAttention(shape: shape, q: q, t: t, count: count, key: { driver.keys[$0][$1] }, value: { driver.values[$0][$1] })
                    for i in 0..<qWidth {
                        XCTAssertEqual(out[t * qWidth + i], expected[i], accuracy: 2e-4, "\(spec.label) position \(count - 1)")
                        worstExact = max(worstExact, abs(out[t * qWidth + i] - exact[i]))
                    }
                }
            }
            // Against unquantized attention: F16 rounding, then the step of each code width.
            let bound: Float = [16: 2e-3, 8: 2e-2, 4: 0.12, 3: 0.3, 2: 0.6][kivi?.bits ?? 16]!
            XCTAssertLessThan(worstExact, bound, spec.label)
            XCTAssertGreaterThan(worstExact, 0, spec.label)
        }
    }

    /// One batched pass gives exactly (bit for bit) what token-by-token decoding gives, and a rollback
    /// across group and window boundaries followed by the same tokens changes nothing.
    func testBatchEqualsTokenByTokenAndRollbackIsExact() {
        let spec = KVCacheSpec.kivi(KIVISettings(bits: 2, group: 8, window: 12, pivots: 2))
        var g = SplitMix64(seed: 9)
        let n = 70
        let k = randomRows(n * 128, &g), v = randomRows(n * 128, &g), q = randomRows(n * 384, &g, scale: 3)
        let batched = CacheDriver(spec, shape: shape, capacity: 96, maxBatch: 64)
        var outBatched = batched.step(k: Array(k[0..<(6 * 128)]), v: Array(v[0..<(6 * 128)]), q: Array(q[0..<(6 * 384)]))
        outBatched += batched.step(k: Array(k[(6 * 128)...]), v: Array(v[(6 * 128)...]), q: Array(q[(6 * 384)...]))
        let single = CacheDriver(spec, shape: shape, capacity: 96, maxBatch: 64)
        var outSingle: [Float] = []
        for t in 0..<n {
            outSingle += single.step(k: Array(k[(t * 128)..<((t + 1) * 128)]), v: Array(v[(t * 128)..<((t + 1) * 128)]),
                                     q: Array(q[(t * 384)..<((t + 1) * 384)]))
        }
        XCTAssertEqual(outBatched, outSingle)

        // Roll back 29 tokens (over three key groups and past the value window), then replay them.
        for back in [29, 1, 8] {
            let keep = n - back
            batched.cache.truncate(to: keep)
            XCTAssertEqual(batched.cache.length, keep)
            let replay = batched.step(k: Array(k[(keep * 128)...]), v: Array(v[(keep * 128)...]), q: Array(q[(keep * 384)...]))
            XCTAssertEqual(replay, Array(outSingle[(keep * 384)...]), "rollback of \(back)")
        }
    }

    /// A rollback longer than the batch staging refills the window from the codes: defined and close.
    func testLongRollbackRefillsFromCodes() {
        let spec = KVCacheSpec.kivi(KIVISettings(bits: 8, group: 8, window: 8))
        var g = SplitMix64(seed: 5)
        let driver = CacheDriver(spec, shape: shape, capacity: 128, maxBatch: 4)
        let k = randomRows(100 * 128, &g), v = randomRows(100 * 128, &g), q = randomRows(100 * 384, &g, scale: 3)
        var outs: [Float] = []
        for t in 0..<100 {
            outs += driver.step(k: Array(k[(t * 128)..<((t + 1) * 128)]), v: Array(v[(t * 128)..<((t + 1) * 128)]), q: Array(q[(t * 384)..<((t + 1) * 384)]))
        }
        driver.cache.truncate(to: 40)
        let replay = driver.step(k: Array(k[(40 * 128)..<(41 * 128)]), v: Array(v[(40 * 128)..<(41 * 128)]), q: Array(q[(40 * 384)..<(41 * 384)]))
        for i in 0..<384 { XCTAssertEqual(replay[i], outs[40 * 384 + i], accuracy: 0.02) }

        // A reset (as passkey and the scorers do between items) after a long run, with pivots: nothing
        // to refill (it once walked a reversed range), and the next sequence starts clean.
        let pivoted = CacheDriver(.kivi(KIVISettings(bits: 2, group: 8, window: 8, pivots: 2)), shape: shape, capacity: 128, maxBatch: 4)
        var first: [Float] = []
        for t in 0..<100 {
            let out = pivoted.step(k: Array(k[(t * 128)..<((t + 1) * 128)]), v: Array(v[(t * 128)..<((t + 1) * 128)]), q: Array(q[(t * 384)..<((t + 1) * 384)]))
            if t == 0 { first = out }
        }
        for target in [1, 0] {
            pivoted.cache.truncate(to: target)
            XCTAssertEqual(pivoted.cache.length, target)
        }
        pivoted.cache.truncate(to: 0)
        XCTAssertEqual(pivoted.step(k: Array(k[0..<128]), v: Array(v[0..<128]), q: Array(q[0..<384])), first)
    }

    /// Pivot positions are kept exactly: with every position a pivot the cache is exact F32 attention,
    /// where the F16 window alone is not.
    func testPivotsAreLossless() {
        var g = SplitMix64(seed: 4)
        let k = randomRows(20 * 128, &g, scale: 50), v = randomRows(20 * 128, &g, scale: 50), q = randomRows(20 * 384, &g)
        let dense = CacheDriver(.f32, shape: shape, capacity: 20, maxBatch: 20).step(k: k, v: v, q: q)
        let pivots = CacheDriver(.kivi(KIVISettings(bits: 2, pivots: 20)), shape: shape, capacity: 20, maxBatch: 20).step(k: k, v: v, q: q)
        let window = CacheDriver(.kivi(KIVISettings(bits: 2, window: 20)), shape: shape, capacity: 20, maxBatch: 20).step(k: k, v: v, q: q)
        let pivotError = zip(dense, pivots).map { abs($0 - $1) }.max()!, windowError = zip(dense, window).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(pivotError, 2e-4)
        XCTAssertGreaterThan(windowError, 10 * pivotError)
    }

    /// OTT: a token with a tiny key in each group is picked (norm criterion) and kept exact, which brings
    /// attention closer to exact; the pool stops taking tokens when full; a rollback drops the entries
    /// of the groups it un-packs and replaying the same tokens gives the same outputs.
    func testOutlierTokensPoolAndRollback() {
        var g = SplitMix64(seed: 21)
        let n = 96
        var k = randomRows(n * 128, &g)
        // Every 16th token has a near-zero key on KV head 0 while the others sit within ±1 of ±8.
        for t in 0..<n { for c in 0..<64 { k[t * 128 + c] = t % 16 == 5 ? 0.01 * k[t * 128 + c] : k[t * 128 + c] + (c % 2 == 0 ? 8 : -8) } }
        let v = randomRows(n * 128, &g), q = randomRows(n * 384, &g, scale: 3)
        func run(_ spec: KVCacheSpec) -> (CacheDriver, [Float]) {
            let driver = CacheDriver(spec, shape: shape, capacity: 128, maxBatch: 96)
            return (driver, driver.step(k: k, v: v, q: q))
        }
        let exact = run(.f32).1
        let (plainDriver, plain) = run(.kivi(KIVISettings(bits: 2, group: 16, window: 0)))
        let (ottDriver, ott) = run(.kivi(KIVISettings(bits: 2, group: 16, window: 0, outlierTokens: 1, outlierPool: 4)))
        _ = plainDriver
        let cache = ottDriver.cache as! QuantizedKVCache
        XCTAssertEqual(cache.outlierCount(layer: 0, kvHead: 0), 4, "six groups, a pool of four")
        func error(_ out: [Float], rows: Range<Int>) -> Float {
            rows.map { t in (0..<192).map { abs(out[t * 384 + $0] - exact[t * 384 + $0]) }.max()! }.max()!
        }
        // Queries that see the first four groups (all with pool entries) are closer to exact on head 0's queries.
        XCTAssertLessThan(error(ott, rows: 40..<64), 0.7 * error(plain, rows: 40..<64))
        // Roll back into group 2: its entries and later ones go; replaying gives the same outputs.
        cache.truncate(to: 40)
        XCTAssertEqual(cache.outlierCount(layer: 0, kvHead: 0), 2)
        let replay = ottDriver.step(k: Array(k[(40 * 128)...]), v: Array(v[(40 * 128)...]), q: Array(q[(40 * 384)...]))
        XCTAssertEqual(replay, Array(ott[(40 * 384)...]))
        XCTAssertEqual(cache.outlierCount(layer: 0, kvHead: 0), 4)
    }

    /// Bytes per token counted by hand for the default model's shape (30 layers, 3 KV heads of 64).
    func testMemoryAccounting() {
        let model = AttentionShape(layers: 30, heads: 9, kvHeads: 3, headDim: 64)
        XCTAssertEqual(KVCacheSpec.f16BytesPerToken(model), 23040)
        XCTAssertEqual(KVCacheSpec.f32.bytes(atLength: 100, shape: model), 100 * 46080)
        // KIVI-2, G 32, R 128 at 4096 tokens: 3968 keys in 124 groups, 3968 values coded, 128 + 128 F16 rows.
        let spec = KVCacheSpec.kivi(KIVISettings(bits: 2))
        let keyGroup: Double = 8 * 64 + 64 * 4, valueToken: Double = 16 + 2 * 4, halfRow: Double = 128
        let perHead: Double = 124 * keyGroup + 3968 * valueToken + 256 * halfRow
        XCTAssertEqual(spec.bytes(atLength: 4096, shape: model), 90 * perHead)
        // Two pivots: F32 rows, and the coded part starts after them.
        let withPivots = KVCacheSpec.kivi(KIVISettings(bits: 2, pivots: 2))
        let pivotRows: Double = 2 * 2 * 64 * 4
        let pivotHead: Double = pivotRows + 123 * keyGroup + 3966 * valueToken + 286 * halfRow
        XCTAssertEqual(withPivots.bytes(atLength: 4096, shape: model), 90 * pivotHead)
    }

    func testBadSettingsAreOneClearError() {
        XCTAssertThrowsError(try KVCacheSpec.kivi(KIVISettings(bits: 5)).validate())
        XCTAssertThrowsError(try KVCacheSpec.kivi(KIVISettings(group: 12)).validate())
        XCTAssertThrowsError(try KVCacheSpec.kivi(KIVISettings(group: 48)).validate(headDim: 64))
        // A setting of another method is refused by name (flags and matrix keys go through KVCacheParameters).
        XCTAssertThrowsError(try KVCacheParameters(kind: .f16, pivots: 4).spec()) { error in
            XCTAssertEqual("\(error)", "--pivot is a setting of --kv-type kivi (this run uses f16)")
        }
        XCTAssertThrowsError(try KVCacheParameters(kind: .kivi, rank: 0.5).spec())
        XCTAssertEqual(try KVCacheParameters(kind: .kivi, bits: 4, pivots: 2).spec(), .kivi(KIVISettings(bits: 4, pivots: 2)))
        XCTAssertEqual(try KVCacheParameters(kind: .cskv).spec(), .cskv(CSKVSettings(window: 32, rank: 0.5)))
        XCTAssertNoThrow(try KVCacheSpec.kivi(KIVISettings(bits: 3, group: 64, window: 0, pivots: 4)).validate(headDim: 64))
    }

    /// On the real model: logits of one batched pass over a KIVI-2 cache equal token-by-token decoding
    /// (what `perplexity`, `kld` and the eval tasks rely on), with a window and groups small enough that
    /// 80 tokens cross many flushes.
    func testRealModelBatchedScoringEqualsDecoding() throws {
        let model = try Shared.model()
        let saved = model.kvCache
        defer { model.kvCache = saved }
        model.kvCache = PreparedKVCache(spec: .kivi(KIVISettings(bits: 2, group: 8, window: 16, pivots: 1)))
        let tokens = model.tokenizer.encode("The quick brown fox jumps over the lazy dog. " + String(repeating: "Pack my box with five dozen liquor jugs. ", count: 8))
        let n = min(80, tokens.count), vocabulary = model.config.vocabularySize
        let batchCache = model.makeCache(capacity: 96, maxBatch: 80)
        let state = ForwardState(config: model.config, maxTokens: 80, allLogits: true, execution: Execution(pool: Shared.pool, precision: .int8))
        let logits = model.transformer.forward(Array(tokens[0..<n]), cache: batchCache, state: state, logits: .all)
        let batched = (0..<n).map { Array(UnsafeBufferPointer(start: logits.row($0), count: vocabulary)) }
        let stepCache = model.makeCache(capacity: 96, maxBatch: 80)
        var worst: Float = 0
        for t in 0..<n {
            let row = model.transformer.forward(token: tokens[t], cache: stepCache, state: state)
            for i in 0..<vocabulary { worst = max(worst, abs(row.row(0)[i] - batched[t][i])) }
        }
        XCTAssertLessThan(worst, 1e-3)
        // And the cache made a difference: the F32 cache's logits differ.
        model.kvCache = .f32
        let exact = model.transformer.forward(Array(tokens[0..<n]), cache: model.makeCache(capacity: 96, maxBatch: 80), state: state, logits: .all)
        var difference: Float = 0
        for i in 0..<vocabulary { difference = max(difference, abs(exact.row(n - 1)[i] - batched[n - 1][i])) }
        XCTAssertGreaterThan(difference, 0.01)
    }

    /// IntactKV: with --intact-from, the pivots hold exactly the full-precision model's keys/values
    /// (float activations), not the int8 run's own.
    func testIntactPivotsAreTheBaseModelsKeysAndValues() throws {
        let path = try Shared.requireModelPath()
        let model = try LoadedModel.load(path: path)
        let tokens = model.tokenizer.encode("Pivot tokens soak up attention. The rest of this sentence is ordinary text.")
        let pool = Shared.pool
        // The base on its own: float activations, exact cache.
        let base = try LoadedModel.load(path: path)
        let baseCache = DenseKVCache(shape: AttentionShape(base.config), capacity: 64, maxBatch: 64)
        base.transformer.forward(tokens, cache: baseCache, state: ForwardState(config: base.config, maxTokens: 64, allLogits: false, execution: Execution(pool: pool, precision: .float)))
        func pivots(intact: Bool) throws -> QuantizedKVCache {
            model.kvCache = try KVCacheSpec.kivi(KIVISettings(bits: 2, group: 8, window: 4, pivots: 3, intactFrom: intact ? path : nil)).prepare(for: model, pool: pool)
            let made = model.makeCache(capacity: 64, maxBatch: 64), cache = ((made as? PivotedKVCache)?.inner ?? made) as! QuantizedKVCache
            let state = ForwardState(config: model.config, maxTokens: 64, allLogits: false, execution: Execution(pool: pool, precision: .int8))
            // Two passes, the first ending inside the pivots.
            model.transformer.forward(Array(tokens[0..<2]), cache: made, state: state)
            model.transformer.forward(Array(tokens[2...]), cache: made, state: state)
            return cache
        }
        let intact = try pivots(intact: true), own = try pivots(intact: false)
        var differs = false
        for layer in [0, 7, 29] {
            for kvHead in 0..<3 {
                for position in 0..<3 {
                    let expected = baseCache.entry(layer: layer, kvHead: kvHead, position: position)
                    let got = intact.pivot(layer: layer, kvHead: kvHead, position: position)
                    XCTAssertEqual(got.key, Array(UnsafeBufferPointer(start: expected.key, count: 64)))
                    XCTAssertEqual(got.value, Array(UnsafeBufferPointer(start: expected.value, count: 64)))
                    if own.pivot(layer: layer, kvHead: kvHead, position: position).key != got.key { differs = true }
                }
            }
        }
        XCTAssertTrue(differs, "the int8 run's own pivots should differ from the float base's")
        XCTAssertThrowsError(try KVCacheSpec.kivi(KIVISettings(intactFrom: path)).prepare(for: model, pool: pool), "needs --pivot")
    }
}
