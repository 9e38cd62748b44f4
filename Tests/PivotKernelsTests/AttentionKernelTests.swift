import XCTest
import Foundation
import PivotKernels

/// Attention's inner loops with more than one head or on 512-bit registers keep the bits of the
/// one-head, 8-lane loops they replace.
final class AttentionKernelTests: XCTestCase {
    /// Heads sharing the value rows (one to seven, so every tile width and a remainder run): each
    /// head's output is bit for bit that head alone, on every path, and the same across paths.
    func testSharedRowsAccumulateAsEachHeadAlone() {
        var g = SplitMix64(seed: 37)
        let count = 29, stride = 41
        let rows = (0..<(count * 64)).map { _ in Float.random(in: -2...2, using: &g) }
        let weights = (0..<(7 * stride)).map { _ in Float.random(in: 0...1, using: &g) }
        let start = (0..<(7 * 64)).map { _ in Float.random(in: -1...1, using: &g) }
        var byPath: [KernelISA: [Float]] = [:]
        KernelISA.forEachSupported { isa in
            var all: [Float] = []
            for heads in 1...7 {
                var shared = Array(start[0..<(heads * 64)]), alone = shared
                rows.withUnsafeBufferPointer { r in weights.withUnsafeBufferPointer { w in
                    shared.withUnsafeMutableBufferPointer {
                        accumulateRows64(r.baseAddress!, weights: w.baseAddress!, weightStride: stride, heads: heads, count: count, into: $0.baseAddress!)
                    }
                    alone.withUnsafeMutableBufferPointer { o in
                        for h in 0..<heads {
                            accumulateRows64(r.baseAddress!, weights: w.baseAddress! + h * stride, count: count, into: o.baseAddress! + h * 64)
                        }
                    }
                } }
                XCTAssertEqual(shared.map(\.bitPattern), alone.map(\.bitPattern), "\(isa), \(heads) heads")
                for c in [0, 17, 63] {
                    var expected = Double(start[(heads - 1) * 64 + c])
                    for r in 0..<count { expected += Double(weights[(heads - 1) * stride + r]) * Double(rows[r * 64 + c]) }
                    XCTAssertEqual(Double(shared[(heads - 1) * 64 + c]), expected, accuracy: 1e-4, "\(isa), \(heads) heads, column \(c)")
                }
                all += shared
            }
            byPath[isa] = all
        }
        if let fast = byPath[.avx512], let avx2 = byPath[.avx2] {
            XCTAssertEqual(fast.map(\.bitPattern), avx2.map(\.bitPattern), "AVX-512 and AVX2 sums differ")
        }
    }

    /// Softmax's exponentials and their sum: the same bits on every x86 path, for lengths around
    /// the 16- and 8-wide steps, and close to `exp`.
    func testExponentiateIsTheSameOnEveryPath() {
        var g = SplitMix64(seed: 41)
        for count in [1, 7, 8, 15, 16, 17, 31, 33, 48, 100, 513] {
            let x = (0..<count).map { _ in Float.random(in: -30...12, using: &g) }
            var byPath: [KernelISA: ([Float], Float, Float)] = [:]
            KernelISA.forEachSupported { isa in
                var y = x
                let (largest, total) = y.withUnsafeMutableBufferPointer { exponentiateInPlace($0.baseAddress!, count: count) }
                XCTAssertEqual(largest, x.max()!)
                var expected = 0.0
                for i in 0..<count {
                    let e = Foundation.exp(Double(x[i]) - Double(largest))
                    XCTAssertEqual(Double(y[i]), e, accuracy: 1e-5 * e + 1e-30, "\(isa) count \(count) element \(i)")
                    expected += e
                }
                XCTAssertEqual(Double(total), expected, accuracy: 1e-5 * expected, "\(isa) count \(count)")
                byPath[isa] = (y, largest, total)
            }
            if let fast = byPath[.avx512], let avx2 = byPath[.avx2] {
                XCTAssertEqual(fast.0.map(\.bitPattern), avx2.0.map(\.bitPattern), "count \(count): exponentials differ")
                XCTAssertEqual(fast.2.bitPattern, avx2.2.bitPattern, "count \(count): sums differ")
                XCTAssertEqual(fast.1.bitPattern, avx2.1.bitPattern, "count \(count): maxima differ")
            }
        }
    }
}
