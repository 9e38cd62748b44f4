import XCTest
import Foundation
import PivotKernels

/// `sgemm` against a plain triple loop in Double, over every transpose case, alpha/beta, ragged
/// sizes, padded leading dimensions, with and without the pool.
final class SGEMMTests: XCTestCase {
    var g = SplitMix64(seed: 11)
    let pool = ThreadPool(threads: 2)

    func random(_ count: Int) -> [Float] { (0..<count).map { _ in Float.random(in: -1...1, using: &g) } }

    struct Case {
        var transposeA = false, transposeB = false
        var m: Int, n: Int, k: Int
        var alpha: Float = 1, beta: Float = 0
        /// Extra floats past each row of A, B and C.
        var padding = 0
    }

    /// Runs one case and compares every element with the Double reference, relative to Σ|a·b| of its dot product.
    func check(_ t: Case, pool: ThreadPool?, file: StaticString = #filePath, line: UInt = #line) {
        let aRows = t.transposeA ? t.k : t.m, aColumns = t.transposeA ? t.m : t.k
        let bRows = t.transposeB ? t.n : t.k, bColumns = t.transposeB ? t.k : t.n
        let lda = aColumns + t.padding, ldb = bColumns + t.padding, ldc = t.n + t.padding
        let a = random(max(1, aRows * lda)), b = random(max(1, bRows * ldb))
        let c0 = random(max(1, t.m * ldc))
        var c = c0
        if t.beta == 0 {
            // beta == 0 must not read C: NaN there would poison the result.
            for r in 0..<t.m { for j in 0..<t.n { c[r * ldc + j] = .nan } }
        }
        c.withUnsafeMutableBufferPointer { out in
            sgemm(transposeA: t.transposeA, transposeB: t.transposeB, m: t.m, n: t.n, k: t.k, alpha: t.alpha,
                  a: a, lda: lda, b: b, ldb: ldb, beta: t.beta, c: out.baseAddress!, ldc: ldc, pool: pool)
        }
        var worst = 0.0
        for i in 0..<t.m {
            for j in 0..<t.n {
                var sum = 0.0, magnitude = 0.0
                for p in 0..<t.k {
                    let x = Double(t.transposeA ? a[p * lda + i] : a[i * lda + p])
                    let y = Double(t.transposeB ? b[j * ldb + p] : b[p * ldb + j])
                    sum += x * y; magnitude += abs(x * y)
                }
                let old = Double(c0[i * ldc + j])
                let expected = Double(t.alpha) * sum + (t.beta == 0 ? 0 : Double(t.beta) * old)
                let scale = abs(Double(t.alpha)) * magnitude + abs(Double(t.beta) * old) + 1e-6
                worst = max(worst, abs(Double(c[i * ldc + j]) - expected) / scale)
            }
        }
        XCTAssertLessThan(worst, 1e-5, "\(t) pool: \(pool != nil)", file: file, line: line)
        // Padding past each row of C stays untouched.
        for i in 0..<t.m { for j in t.n..<ldc where c[i * ldc + j] != c0[i * ldc + j] {
            XCTFail("\(t) wrote past a row of C", file: file, line: line); return
        } }
    }

    func testEveryTransposeCaseOnRaggedSizes() {
        let sizes = [1, 7, 17, 33, 100]
        for ta in [false, true] { for tb in [false, true] {
            for m in sizes { for n in sizes { for k in [1, 17, 100] {
                check(Case(transposeA: ta, transposeB: tb, m: m, n: n, k: k), pool: nil)
            } } }
        } }
    }

    func testDepthBlocksAlphaBetaAndPadding() {
        for ta in [false, true] { for tb in [false, true] {
            for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (0.5, -2), (-1.5, 0.25)] {
                check(Case(transposeA: ta, transposeB: tb, m: 37, n: 45, k: 700, alpha: alpha, beta: beta, padding: 5), pool: nil)
                check(Case(transposeA: ta, transposeB: tb, m: 257, n: 33, k: 257, alpha: alpha, beta: beta, padding: 3), pool: pool)
            }
        } }
    }

    func testLargeBlocksWithAndWithoutPool() {
        // Tall, wide (more than one column block), and square, in the three training shapes.
        let shapes: [Case] = [
            Case(transposeB: true, m: 300, n: 3100, k: 40),
            Case(m: 301, n: 200, k: 333, padding: 1),
            Case(transposeA: true, m: 150, n: 97, k: 1000, beta: 1),
            Case(m: 1000, n: 20, k: 64),
        ]
        for shape in shapes {
            check(shape, pool: nil)
            check(shape, pool: pool)
        }
    }

    func testDegenerateSizes() {
        // k == 0 and alpha == 0 only scale C; beta == 0 then clears it.
        check(Case(m: 5, n: 9, k: 0, beta: 0.5), pool: nil)
        check(Case(m: 5, n: 9, k: 0), pool: nil)
        check(Case(m: 5, n: 9, k: 4, alpha: 0, beta: 2), pool: pool)
        check(Case(m: 64, n: 64, k: 64), pool: pool)
        check(Case(transposeA: true, transposeB: true, m: 1, n: 1, k: 1, alpha: 3, beta: 1), pool: pool)
    }
}

/// GFLOP/s of `sgemm` on the training shapes (a SmolLM-135M-sized layer, 2048 tokens), at one and
/// two threads. Runs only with PIVOT_BENCH=1; compare with `scripts/sgemm_torch.py`.
final class SGEMMThroughputTests: XCTestCase {
    struct Shape { var name: String; var transposeA: Bool; var transposeB: Bool; var m, n, k: Int; var beta: Float }

    func testSGEMMThroughput() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["PIVOT_BENCH"] == "1", "set PIVOT_BENCH=1 to time sgemm")
        let tokens = 2048, hidden = 576
        var shapes: [Shape] = []
        for out in [1536, 576, 192, 49152] {
            shapes.append(Shape(name: "forward  Y=X·Wᵀ  out=\(out)", transposeA: false, transposeB: true, m: tokens, n: out, k: hidden, beta: 0))
            shapes.append(Shape(name: "dX=dY·W         out=\(out)", transposeA: false, transposeB: false, m: tokens, n: hidden, k: out, beta: 0))
            shapes.append(Shape(name: "dW+=dYᵀ·X       out=\(out)", transposeA: true, transposeB: false, m: out, n: hidden, k: tokens, beta: 1))
        }
        shapes.append(Shape(name: "attention tile 64³", transposeA: false, transposeB: true, m: 64, n: 64, k: 64, beta: 0))
        let pools = [1: ThreadPool?.none, 2: ThreadPool(threads: 2)]
        for shape in shapes {
            let aCount = shape.m * shape.k, bCount = shape.k * shape.n
            let a = UnsafeMutablePointer<Float>.allocate(capacity: aCount), b = UnsafeMutablePointer<Float>.allocate(capacity: bCount)
            let c = UnsafeMutablePointer<Float>.allocate(capacity: shape.m * shape.n)
            defer { a.deallocate(); b.deallocate(); c.deallocate() }
            for i in 0..<aCount { a[i] = Float(i % 7) * 0.1 - 0.3 }
            for i in 0..<bCount { b[i] = Float(i % 5) * 0.1 - 0.2 }
            c.update(repeating: 0, count: shape.m * shape.n)
            var line = shape.name.padding(toLength: 30, withPad: " ", startingAt: 0) + " m=\(shape.m) n=\(shape.n) k=\(shape.k):"
            for threads in [1, 2] {
                let pool = pools[threads]!
                func once() {
                    sgemm(transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k,
                          a: a, lda: shape.transposeA ? shape.m : shape.k, b: b, ldb: shape.transposeB ? shape.k : shape.n,
                          beta: shape.beta, c: c, ldc: shape.n, pool: pool)
                }
                once()
                var runs = 0
                let start = DispatchTime.now().uptimeNanoseconds
                var elapsed = 0.0
                while runs < 3 || elapsed < 0.3 {
                    once(); runs += 1
                    elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                }
                let gflops = 2 * Double(shape.m) * Double(shape.n) * Double(shape.k) * Double(runs) / elapsed / 1e9
                line += String(format: "  %dT %6.1f GFLOP/s", threads, gflops)
            }
            print(line)
        }
    }
}
