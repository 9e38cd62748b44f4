import XCTest
import Foundation
import PivotKernels

/// Float kernels and the pool against plain reference loops.
final class FloatKernelTests: XCTestCase {
    var g = SplitMix64(seed: 3)

    func random(_ n: Int, _ range: ClosedRange<Float> = -3...3) -> [Float] { (0..<n).map { _ in Float.random(in: range, using: &g) } }

    func testDotAndAxpy() {
        for n in [1, 7, 8, 15, 16, 64, 577] {
            let a = random(n), b = random(n)
            let expected = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(Double(dotF32(a, b, count: n)), expected, accuracy: 1e-4 * Double(n))
            var y = b
            y.withUnsafeMutableBufferPointer { axpyF32(0.5, a, $0.baseAddress!, count: n) }
            for i in 0..<n { XCTAssertEqual(y[i], b[i] + 0.5 * a[i], accuracy: 1e-6) }
        }
    }

    func testRMSNorm() {
        let x = random(576), w = random(576, 0.5...1.5)
        var out = [Float](repeating: 0, count: 576)
        out.withUnsafeMutableBufferPointer { rmsNorm(x, weight: w, epsilon: 1e-5, out: $0.baseAddress!, count: 576) }
        let rms = (x.reduce(0) { $0 + $1 * $1 } / 576 + 1e-5).squareRoot()
        for i in 0..<576 { XCTAssertEqual(out[i], x[i] / rms * w[i], accuracy: 1e-5) }
    }

    func testExpSoftmaxLogSumExpAndSiLU() {
        for x: Float in [-80, -10, -1, -0.1, 0, 0.3, 1, 5, 20, 80] {
            XCTAssertEqual(fastExp(x), expf(x), accuracy: expf(x) * 2e-6)
        }
        let x = random(1003, -20...20)
        var p = x
        p.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, count: 1003) }
        let m = x.max()!
        let total = x.reduce(0.0) { $0 + exp(Double($1 - m)) }
        for i in 0..<1003 { XCTAssertEqual(Double(p[i]), exp(Double(x[i] - m)) / total, accuracy: 1e-6) }
        XCTAssertEqual(Double(logSumExp(x, count: 1003)), Double(m) + log(total), accuracy: 1e-4)
        var gate = random(37), up = random(37)
        let expected = (0..<37).map { gate[$0] / (1 + expf(-gate[$0])) * up[$0] }
        gate.withUnsafeMutableBufferPointer { siluMultiply($0.baseAddress!, &up, count: 37) }
        for i in 0..<37 { XCTAssertEqual(gate[i], expected[i], accuracy: 1e-5) }
    }

    func testRoPEBothLayouts() {
        let d = 8
        let x = random(d)
        let cos: [Float] = (0..<4).map { Foundation.cos(Float($0) + 0.5) }, sin: [Float] = (0..<4).map { Foundation.sin(Float($0) + 0.5) }
        var pairs = x, halves = x
        pairs.withUnsafeMutableBufferPointer { applyRoPE($0.baseAddress!, headDim: d, cos: cos, sin: sin, interleaved: true) }
        halves.withUnsafeMutableBufferPointer { applyRoPE($0.baseAddress!, headDim: d, cos: cos, sin: sin, interleaved: false) }
        for i in 0..<4 {
            XCTAssertEqual(pairs[2 * i], x[2 * i] * cos[i] - x[2 * i + 1] * sin[i], accuracy: 1e-6)
            XCTAssertEqual(pairs[2 * i + 1], x[2 * i] * sin[i] + x[2 * i + 1] * cos[i], accuracy: 1e-6)
            XCTAssertEqual(halves[i], x[i] * cos[i] - x[i + 4] * sin[i], accuracy: 1e-6)
            XCTAssertEqual(halves[i + 4], x[i] * sin[i] + x[i + 4] * cos[i], accuracy: 1e-6)
        }
    }

    func testThreadPoolRunsEveryChunkExactlyOnce() {
        let pool = ThreadPool(threads: 3)
        for chunks in [1, 2, 7, 100] {
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: chunks)
            counts.initialize(repeating: 0, count: chunks)
            for _ in 0..<50 { pool.parallelFor(chunks: chunks) { counts[$0] += 1 } }
            for i in 0..<chunks { XCTAssertEqual(counts[i], 50) }
            counts.deallocate()
        }
        var covered = [Int](repeating: 0, count: 1000)
        covered.withUnsafeMutableBufferPointer { c in pool.parallelRanges(count: 1000, minChunk: 16) { for i in $0 { c[i] += 1 } } }
        XCTAssertEqual(covered, [Int](repeating: 1, count: 1000))
    }

    /// One query's attention against a plain double-precision loop, on the head-64 register path
    /// and the generic path (head 48), over lengths that are and are not multiples of 8.
    func testAttendOneQueryMatchesPlainLoop() {
        var g = SplitMix64(seed: 17)
        for d in [64, 48] {
            for count in [1, 7, 33, 300] {
                let q = (0..<d).map { _ in Float.random(in: -1...1, using: &g) }
                let k = (0..<(count * d)).map { _ in Float.random(in: -1...1, using: &g) }
                let v = (0..<(count * d)).map { _ in Float.random(in: -1...1, using: &g) }
                let scale = 1 / Float(d).squareRoot()
                var scores = [Float](repeating: 0, count: count), out = [Float](repeating: .nan, count: d)
                scores.withUnsafeMutableBufferPointer { s in
                    out.withUnsafeMutableBufferPointer { o in
                        attendOneQuery(q, keys: k, values: v, count: count, headDim: d, scale: scale, scores: s.baseAddress!, out: o.baseAddress!)
                    }
                }
                let logits = (0..<count).map { j in (0..<d).reduce(0.0) { $0 + Double(q[$1]) * Double(k[j * d + $1]) } * Double(scale) }
                let top = logits.max()!
                let weights = logits.map { exp($0 - top) }, total = weights.reduce(0, +)
                for i in 0..<d {
                    let expected = (0..<count).reduce(0.0) { $0 + weights[$1] / total * Double(v[$1 * d + i]) }
                    XCTAssertEqual(Double(out[i]), expected, accuracy: 2e-6, "d \(d) count \(count) element \(i)")
                }
            }
        }
    }

    func testDenseMatMul() {
        let w = random(5 * 40), x = random(3 * 40)
        var out = [Float](repeating: 0, count: 3 * 5)
        out.withUnsafeMutableBufferPointer {
            denseMatMul(weights: w, inFeatures: 40, outputs: 0..<5, x: x, xStride: 40, tokens: 3, out: $0.baseAddress!, outStride: 5)
        }
        for t in 0..<3 { for o in 0..<5 {
            let e = (0..<40).reduce(Float(0)) { $0 + w[o * 40 + $1] * x[t * 40 + $1] }
            XCTAssertEqual(out[t * 5 + o], e, accuracy: 1e-4)
        } }
    }
}

final class KLDivergenceKernelTests: XCTestCase {
    func testMatchesPlainLoop() {
        var g = SplitMix64(seed: 11)
        for count in [1, 7, 8, 100, 4099] {
            let p = (0..<count).map { _ in Float.random(in: -6...6, using: &g) }
            let q = p.map { $0 + Float.random(in: -0.5...0.5, using: &g) }
            func lse(_ x: [Float]) -> Double { let m = Double(x.max()!); return m + log(x.reduce(0.0) { $0 + exp(Double($1) - m) }) }
            let lp = lse(p), lq = lse(q)
            let expected = zip(p, q).reduce(0.0) { acc, pair in
                let a = Double(pair.0) - lp, b = Double(pair.1) - lq
                return acc + exp(a) * (a - b)
            }
            let got = klDivergence(p, logSumExpP: logSumExp(p, count: count), q, logSumExpQ: logSumExp(q, count: count), count: count)
            XCTAssertEqual(Double(got), expected, accuracy: 1e-5 + 1e-4 * expected, "count \(count)")
            XCTAssertEqual(klDivergence(p, logSumExpP: logSumExp(p, count: count), p, logSumExpQ: logSumExp(p, count: count), count: count), 0)
        }
    }
}

final class ScoreRowsTests: XCTestCase {
    /// Four keys per pass: bit for bit `dotF32`·scale (which attention used per key before), close
    /// to a double-precision dot, for counts with and without a tail, from every start offset.
    func testScoreRows64MatchesDotsAndIgnoresItsNeighbours() {
        var g = SplitMix64(seed: 29)
        let heads = 3, count = 23, scale: Float = 0.125
        let q = (0..<(heads * 64)).map { _ in Float.random(in: -2...2, using: &g) }
        let keys = (0..<(count * 64)).map { _ in Float.random(in: -2...2, using: &g) }
        func scores(from first: Int) -> [Float] {
            var out = [Float](repeating: .nan, count: heads * count)
            q.withUnsafeBufferPointer { qs in keys.withUnsafeBufferPointer { ks in out.withUnsafeMutableBufferPointer { o in
                scoreRows64(qs.baseAddress!, heads: heads, rows: ks.baseAddress! + first * 64, count: count - first, scale: scale,
                            scores: o.baseAddress! + first, scoreStride: count)
            } } }
            return out
        }
        var byPath: [KernelISA: [Float]] = [:]
        KernelISA.forEachSupported { isa in byPath[isa] = scores(from: 0) }
        if let fast = byPath[.avx512], let avx2 = byPath[.avx2] {
            XCTAssertEqual(fast.map(\.bitPattern), avx2.map(\.bitPattern), "AVX-512 and AVX2 scores differ")
        }
        let all = scores(from: 0)
        for h in 0..<heads {
            for j in 0..<count {
                var expected = 0.0
                for c in 0..<64 { expected += Double(q[h * 64 + c]) * Double(keys[j * 64 + c]) }
                XCTAssertEqual(Double(all[h * count + j]), expected * Double(scale), accuracy: 1e-4, "head \(h) key \(j)")
                let dot = q.withUnsafeBufferPointer { qs in keys.withUnsafeBufferPointer { dotF32(qs.baseAddress! + h * 64, $0.baseAddress! + j * 64, count: 64) } }
                XCTAssertEqual(all[h * count + j].bitPattern, (dot * scale).bitPattern, "head \(h) key \(j): differs from dotF32")
            }
        }
        for first in 1..<8 {
            let shifted = scores(from: first)
            for h in 0..<heads {
                for j in first..<count { XCTAssertEqual(shifted[h * count + j].bitPattern, all[h * count + j].bitPattern, "from \(first): head \(h) key \(j)") }
            }
        }
    }
}

extension ScoreRowsTests {
    /// The weighted sum of value rows (head dimension 64) gives the same bits on every path.
    func testAccumulateRowsIsTheSameOnEveryPath() {
        var g = SplitMix64(seed: 31)
        let count = 37
        let rows = (0..<(count * 64)).map { _ in Float.random(in: -2...2, using: &g) }
        let weights = (0..<count).map { _ in Float.random(in: 0...1, using: &g) }
        let start = (0..<64).map { _ in Float.random(in: -1...1, using: &g) }
        var byPath: [KernelISA: [Float]] = [:]
        KernelISA.forEachSupported { isa in
            var out = start
            rows.withUnsafeBufferPointer { r in weights.withUnsafeBufferPointer { w in out.withUnsafeMutableBufferPointer {
                accumulateRows(r.baseAddress!, weights: w.baseAddress!, count: count, headDim: 64, into: $0.baseAddress!)
            } } }
            for c in 0..<64 {
                var expected = Double(start[c])
                for r in 0..<count { expected += Double(weights[r]) * Double(rows[r * 64 + c]) }
                XCTAssertEqual(Double(out[c]), expected, accuracy: 1e-4, "\(isa) column \(c)")
            }
            byPath[isa] = out
        }
        if let fast = byPath[.avx512], let avx2 = byPath[.avx2] {
            XCTAssertEqual(fast.map(\.bitPattern), avx2.map(\.bitPattern), "AVX-512 and AVX2 sums differ")
        }
    }
}

final class HalfKernelTests: XCTestCase {
    /// F16 and BF16 rows against a plain loop over the widened weights; a token's result is
    /// bit-identical whether it is alone or in a batch.
    func testHalfMatMulMatchesPlainLoopAndBatchesExactly() {
        KernelISA.forEachSupported { isa in
            var g = SplitMix64(seed: 19)
            for kind in [HalfKind.f16, .bf16] {
                for n in [8, 24, 576, 583] {
                    let rows = 9, tokens = 6
                    let bits: [UInt16] = (0..<(rows * n)).map { _ in
                        let v = Float.random(in: -1...1, using: &g)
                        return kind == .f16 ? Float16(v).bitPattern : UInt16(v.bitPattern >> 16)
                    }
                    let x = (0..<(tokens * n)).map { _ in Float.random(in: -2...2, using: &g) }
                    func widened(_ i: Int) -> Float { kind == .f16 ? Float(Float16(bitPattern: bits[i])) : Float(bitPattern: UInt32(bits[i]) << 16) }
                    func run(_ first: Int, _ count: Int) -> [Float] {
                        var out = [Float](repeating: 0, count: count * rows)
                        bits.withUnsafeBytes { w in x.withUnsafeBufferPointer { xs in out.withUnsafeMutableBufferPointer { o in
                            halfMatMul(kind, weights: w.baseAddress!, inFeatures: n, outputs: 0..<rows, x: xs.baseAddress! + first * n,
                                       xStride: n, tokens: count, out: o.baseAddress!, outStride: rows)
                        } } }
                        return out
                    }
                    let batch = run(0, tokens)
                    for t in 0..<tokens {
                        let single = run(t, 1)
                        for r in 0..<rows {
                            var expected = 0.0
                            for i in 0..<n { expected += Double(widened(r * n + i)) * Double(x[t * n + i]) }
                            XCTAssertEqual(Double(batch[t * rows + r]), expected, accuracy: 1e-4 * Double(n), "\(isa) \(kind) n=\(n)")
                            XCTAssertEqual(batch[t * rows + r].bitPattern, single[r].bitPattern, "\(isa) \(kind) n=\(n) token \(t) row \(r)")
                        }
                    }
                }
            }
        }
    }

    /// F16 and BF16 panels: packing keeps every weight (and pads with zeros); products against a
    /// plain loop for row counts that leave a partial panel, odd column counts, and batches that use
    /// the 8-, 4- and 1-token tiles; a token's bits equal its bits alone, on every path, and the
    /// portable loop's bits equal the AVX-512 kernel's.
    func testHalfPanelsMatchPlainLoopAndBatchExactly() {
        var g = SplitMix64(seed: 23)
        for kind in [HalfKind.f16, .bf16] {
            for (rows, n) in [(40, 37), (16, 576), (53, 160)] {
                let bits: [UInt16] = (0..<(rows * n)).map { _ in
                    let v = Float.random(in: -1...1, using: &g)
                    return kind == .f16 ? Float16(v).bitPattern : UInt16(v.bitPattern >> 16)
                }
                func widened(_ i: Int) -> Float { kind == .f16 ? Float(Float16(bitPattern: bits[i])) : Float(bitPattern: UInt32(bits[i]) << 16) }
                let layout = HalfPanels(kind: kind, rows: rows, columns: n)
                var packed = [UInt8](repeating: 0xFF, count: layout.byteCount)
                bits.withUnsafeBytes { b in packed.withUnsafeMutableBytes { layout.pack(b.baseAddress!, into: $0.baseAddress!) } }
                packed.withUnsafeBytes { p in
                    for r in 0..<(layout.panels * 16) {
                        for c in [0, n / 2, n - 1] {
                            XCTAssertEqual(layout.bits(p.baseAddress!, row: r, column: c), r < rows ? bits[r * n + c] : 0, "\(kind) row \(r) column \(c)")
                        }
                    }
                }
                let tokens = 13
                let x = (0..<(tokens * n)).map { _ in Float.random(in: -2...2, using: &g) }
                func run(_ first: Int, _ count: Int, calls: [Range<Int>]) -> [Float] {
                    var out = [Float](repeating: .nan, count: count * rows)
                    packed.withUnsafeBytes { w in x.withUnsafeBufferPointer { xs in out.withUnsafeMutableBufferPointer { o in
                        for panels in calls {
                            halfPanelMatMul(layout, weights: w.baseAddress!, panels: panels, x: xs.baseAddress! + first * n, xStride: n,
                                            tokens: count, out: o.baseAddress!, outStride: rows)
                        }
                    } } }
                    return out
                }
                var byPath: [KernelISA: [Float]] = [:]
                KernelISA.forEachSupported { isa in
                    let batch = run(0, tokens, calls: [0..<1, 1..<layout.panels])
                    byPath[isa] = batch
                    for t in 0..<tokens {
                        let single = run(t, 1, calls: [0..<layout.panels])
                        for r in 0..<rows {
                            var expected = 0.0
                            for i in 0..<n { expected += Double(widened(r * n + i)) * Double(x[t * n + i]) }
                            XCTAssertEqual(Double(batch[t * rows + r]), expected, accuracy: 1e-4 * Double(n), "\(isa) \(kind) \(rows)×\(n)")
                            XCTAssertEqual(batch[t * rows + r].bitPattern, single[r].bitPattern, "\(isa) \(kind) \(rows)×\(n) token \(t) row \(r)")
                        }
                    }
                }
                if let fast = byPath[.avx512], let portable = byPath[.portable] {
                    XCTAssertEqual(fast.map(\.bitPattern), portable.map(\.bitPattern), "\(kind) \(rows)×\(n): AVX-512 and portable differ")
                }
            }
        }
    }
}
