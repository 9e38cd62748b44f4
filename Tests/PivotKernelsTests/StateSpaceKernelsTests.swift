import Foundation
import XCTest
import PivotKernels

/// Mamba's convolution and selective scan against plain Double loops, whole and fed in pieces.
final class StateSpaceKernelsTests: XCTestCase {
    func values(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in (Float(rng.next() % 1_000_000) / 500_000 - 1) * scale }
    }

    func silu(_ v: Double) -> Double { v / (1 + exp(-v)) }

    /// Feeding 11 rows at once, or in pieces of 1, 2 and 5 that continue the history, gives the causal
    /// convolution over the whole sequence (zeros before it).
    func testConvolutionContinuesItsHistory() {
        for (channels, kernel) in [(13, 4), (16, 3), (8, 1), (24, 2)] {
            let rows = 11
            let input = values(rows * channels, seed: 1), taps = values(kernel * channels, seed: 2), bias = values(channels, seed: 3)
            var expected = [Double](repeating: 0, count: rows * channels)
            for t in 0..<rows {
                for c in 0..<channels {
                    var acc = Double(bias[c])
                    for j in 0..<kernel where t - (kernel - 1) + j >= 0 { acc += Double(taps[j * channels + c]) * Double(input[(t - (kernel - 1) + j) * channels + c]) }
                    expected[t * channels + c] = silu(acc)
                }
            }
            for pieces in [[11], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 5, 1, 3], [5, 6]] {
                var history = [Float](repeating: 0, count: max(1, (kernel - 1) * channels))
                var out = [Float](repeating: 0, count: rows * channels)
                var start = 0
                for count in pieces {
                    input.withUnsafeBufferPointer { i in
                        out.withUnsafeMutableBufferPointer { o in
                            causalConvolution(i.baseAddress! + start * channels, inputStride: channels, count: count, channels: channels, kernel: kernel,
                                              taps: taps, bias: bias, history: &history, out: o.baseAddress! + start * channels, outStride: channels)
                        }
                    }
                    start += count
                }
                for i in 0..<out.count { XCTAssertEqual(Double(out[i]), expected[i], accuracy: 2e-6, "channels \(channels), kernel \(kernel), pieces \(pieces), \(i)") }
                // The history holds the last kernel−1 inputs, oldest first.
                for r in 0..<(kernel - 1) {
                    for c in 0..<channels { XCTAssertEqual(history[r * channels + c], input[(rows - (kernel - 1) + r) * channels + c]) }
                }
            }
        }
    }

    /// The scan over every channel and token against the recurrence in Double; split channel ranges and
    /// tokens fed one at a time give the same output and final state.
    func testSelectiveScanMatchesTheRecurrence() {
        for n in [16, 8, 5, 20] {
            let channels = 12, tokens = 7, bcStride = 3 + 2 * n, zStride = 2 * channels
            let u = values(tokens * channels, seed: 4), delta = values(tokens * channels, seed: 5).map { abs($0) + 0.01 }
            let bc = values(tokens * bcStride, seed: 6), z = values(tokens * zStride, seed: 7, scale: 3)
            let a = values(channels * n, seed: 8).map { -exp($0) }, d = values(channels, seed: 9)
            var h = [Double](repeating: 0, count: channels * n), expected = [Double](repeating: 0, count: tokens * channels)
            for t in 0..<tokens {
                for c in 0..<channels {
                    let dt = Double(delta[t * channels + c]), x = Double(u[t * channels + c])
                    var y = 0.0
                    for i in 0..<n {
                        h[c * n + i] = exp(dt * Double(a[c * n + i])) * h[c * n + i] + dt * Double(bc[t * bcStride + 3 + i]) * x
                        y += h[c * n + i] * Double(bc[t * bcStride + 3 + n + i])
                    }
                    expected[t * channels + c] = (y + Double(d[c]) * x) * silu(Double(z[t * zStride + c]))
                }
            }
            for stepwise in [false, true] {
                var state = [Float](repeating: 0, count: channels * n), y = [Float](repeating: 0, count: tokens * channels)
                let runs = stepwise ? (0..<tokens).map { ($0, 1) } : [(0, tokens)]
                for (first, count) in runs {
                    for channels in [0..<5, 5..<channels] {
                        u.withUnsafeBufferPointer { u in delta.withUnsafeBufferPointer { dl in bc.withUnsafeBufferPointer { bc in
                            z.withUnsafeBufferPointer { z in y.withUnsafeMutableBufferPointer { y in
                                let w = 12
                                selectiveScan(count: count, channels: channels, width: w, stateSize: n, bcStride: bcStride, zStride: zStride,
                                              u: u.baseAddress! + first * w, delta: dl.baseAddress! + first * w, b: bc.baseAddress! + first * bcStride + 3,
                                              c: bc.baseAddress! + first * bcStride + 3 + n, z: z.baseAddress! + first * zStride, a: a, d: d,
                                              state: &state, y: y.baseAddress! + first * w)
                            } }
                        } } }
                    }
                }
                for i in 0..<y.count { XCTAssertEqual(Double(y[i]), expected[i], accuracy: 3e-6 * max(1, abs(expected[i])), "n \(n), stepwise \(stepwise), \(i)") }
                for i in 0..<state.count { XCTAssertEqual(Double(state[i]), h[i], accuracy: 3e-6 * max(1, abs(h[i]))) }
            }
        }
    }

    func testSoftplusMatchesTorch() {
        var x: [Float] = [-30, -5, -0.5, 0, 0.5, 5, 19.9, 20, 20.1, 50]
        let expected = x.map { $0 > 20 ? Double($0) : log1p(exp(Double($0))) }
        softplusInPlace(&x, count: x.count)
        for i in 0..<x.count { XCTAssertEqual(Double(x[i]), expected[i], accuracy: 1e-6 * max(1, expected[i])) }
    }
}
