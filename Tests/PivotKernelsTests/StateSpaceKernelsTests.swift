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

    /// The scan over every channel and token against the recurrence in Double (softplus'd Δ, state-major
    /// A and state); split channel ranges (whole groups of eight and a ragged tail) and tokens fed one at
    /// a time give the same output and final state.
    func testSelectiveScanMatchesTheRecurrence() {
        for (n, channels) in [(16, 20), (8, 16), (5, 13), (20, 7)] {
            let tokens = 7, bcStride = 3 + 2 * n, zStride = 2 * channels
            let u = values(tokens * channels, seed: 4), raw = values(tokens * channels, seed: 5, scale: 3)
            let bc = values(tokens * bcStride, seed: 6), z = values(tokens * zStride, seed: 7, scale: 3)
            let a = values(channels * n, seed: 8).map { -exp($0) }, d = values(channels, seed: 9)
            var h = [Double](repeating: 0, count: channels * n), expected = [Double](repeating: 0, count: tokens * channels)
            for t in 0..<tokens {
                for c in 0..<channels {
                    let r = Double(raw[t * channels + c]), dt = r > 20 ? r : log1p(exp(r)), x = Double(u[t * channels + c])
                    var y = 0.0
                    for i in 0..<n {
                        let k = i * channels + c
                        h[k] = exp(dt * Double(a[k])) * h[k] + dt * Double(bc[t * bcStride + 3 + i]) * x
                        y += h[k] * Double(bc[t * bcStride + 3 + n + i])
                    }
                    expected[t * channels + c] = (y + Double(d[c]) * x) * silu(Double(z[t * zStride + c]))
                }
            }
            let splits = [0..<channels, 0..<min(8, channels), min(8, channels)..<channels]
            for stepwise in [false, true] {
                for pieces in [[splits[0]], [splits[1], splits[2]]] {
                    var state = [Float](repeating: 0, count: channels * n), y = [Float](repeating: 0, count: tokens * channels)
                    let runs = stepwise ? (0..<tokens).map { ($0, 1) } : [(0, tokens)]
                    for (first, count) in runs {
                        for range in pieces {
                            u.withUnsafeBufferPointer { u in raw.withUnsafeBufferPointer { dl in bc.withUnsafeBufferPointer { bc in
                                z.withUnsafeBufferPointer { z in y.withUnsafeMutableBufferPointer { y in
                                    selectiveScan(count: count, channels: range, totalChannels: channels, width: channels, stateSize: n,
                                                  bcStride: bcStride, zStride: zStride,
                                                  u: u.baseAddress! + first * channels, delta: dl.baseAddress! + first * channels,
                                                  b: bc.baseAddress! + first * bcStride + 3, c: bc.baseAddress! + first * bcStride + 3 + n,
                                                  z: z.baseAddress! + first * zStride, a: a, d: d, state: &state, y: y.baseAddress! + first * channels)
                                } }
                            } } }
                        }
                    }
                    for i in 0..<y.count { XCTAssertEqual(Double(y[i]), expected[i], accuracy: 3e-6 * max(1, abs(expected[i])), "n \(n), stepwise \(stepwise), \(i)") }
                    for i in 0..<state.count { XCTAssertEqual(Double(state[i]), h[i], accuracy: 3e-6 * max(1, abs(h[i]))) }
                }
            }
        }
    }

    /// Mamba-2's per-head scan against the recurrence in Double: heads in groups, one A and Δ per head,
    /// a state size with a ragged tail, split head ranges and tokens fed one at a time.
    func testStructuredScanMatchesTheRecurrence() {
        for (n, heads, groups, headDim) in [(16, 4, 2, 3), (5, 6, 3, 2), (24, 2, 1, 4)] {
            let tokens = 6, inner = heads * headDim, xStride = inner + 2 * groups * n + 5, deltaStride = heads + 3
            let x = values(tokens * xStride, seed: 11), delta = values(tokens * deltaStride, seed: 12, scale: 3)
            let dtBias = values(heads, seed: 13), a = values(heads, seed: 14).map { -exp($0) }, d = values(heads, seed: 15)
            let bOffset = inner, cOffset = inner + groups * n
            var h = [Double](repeating: 0, count: inner * n), expected = [Double](repeating: 0, count: tokens * inner)
            for t in 0..<tokens {
                for head in 0..<heads {
                    let g = head / (heads / groups), r = Double(delta[t * deltaStride + head] + dtBias[head])
                    let dt = r > 20 ? r : log1p(exp(r)), decay = exp(dt * Double(a[head]))
                    for p in 0..<headDim {
                        let ch = head * headDim + p, xv = Double(x[t * xStride + ch])
                        var y = 0.0
                        for i in 0..<n {
                            h[ch * n + i] = decay * h[ch * n + i] + dt * xv * Double(x[t * xStride + bOffset + g * n + i])
                            y += h[ch * n + i] * Double(x[t * xStride + cOffset + g * n + i])
                        }
                        expected[t * inner + ch] = y + Double(d[head]) * xv
                    }
                }
            }
            for stepwise in [false, true] {
                var state = [Float](repeating: 0, count: inner * n), y = [Float](repeating: 0, count: tokens * inner)
                let runs = stepwise ? (0..<tokens).map { ($0, 1) } : [(0, tokens)]
                for (first, count) in runs {
                    for range in [0..<1, 1..<heads] {
                        x.withUnsafeBufferPointer { xp in delta.withUnsafeBufferPointer { dp in y.withUnsafeMutableBufferPointer { yp in
                            let row = xp.baseAddress! + first * xStride
                            structuredScan(count: count, heads: range, headDim: headDim, stateSize: n, headsPerGroup: heads / groups,
                                           x: row, xStride: xStride, b: row + bOffset, c: row + cOffset, bcStride: xStride,
                                           delta: dp.baseAddress! + first * deltaStride, deltaStride: deltaStride, dtBias: dtBias, a: a, d: d,
                                           state: &state, y: yp.baseAddress! + first * inner, yStride: inner)
                        } } }
                    }
                }
                for i in 0..<y.count { XCTAssertEqual(Double(y[i]), expected[i], accuracy: 3e-6 * max(1, abs(expected[i])), "n \(n), heads \(heads), stepwise \(stepwise), \(i)") }
                for i in 0..<state.count { XCTAssertEqual(Double(state[i]), h[i], accuracy: 3e-6 * max(1, abs(h[i]))) }
            }
        }
    }

    func testSoftplusMatchesTorch() {
        // The extremes first, so that they run in SIMD lanes; below −87 the lanes' exp is clamped (Δ ≈ 1e-38, not 1e-44).
        var x: [Float] = [-87, -100, 1e-7, -1e-7, -30, -5, -0.5, 0, 0.5, 5, 19.9, 20, 20.1, 50] + values(997, seed: 10, scale: 25)
        let expected = x.map { $0 > 20 ? Double($0) : log1p(exp(Double($0))) }
        var lanes = x
        x = x.map(softplus)
        softplusInPlace8(&lanes, count: lanes.count)
        for i in 0..<x.count {
            XCTAssertEqual(Double(x[i]), expected[i], accuracy: 1e-6 * max(1e-30, expected[i]) + 1e-40, "scalar \(i)")
            XCTAssertEqual(Double(lanes[i]), expected[i], accuracy: 1e-6 * expected[i] + 2e-38, "lanes, element \(i)")
        }
    }
}
