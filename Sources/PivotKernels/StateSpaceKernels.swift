import Foundation

/// Kernels of Mamba's selective state-space mixer: the causal depthwise convolution that continues a
/// sequence's last inputs, and the selective scan that carries each channel's recurrent state.

/// Causal depthwise convolution of `count` new rows (channels wide) continuing `history`, then SiLU.
///
/// out[t][c] = silu(bias[c] + Σ_j taps[j][c] · x(t − (kernel−1) + j)[c]), where x(p) for p < 0 is
/// `history` row kernel−1+p: the inputs before this pass (zeros for a fresh sequence). `taps` is
/// kernel × channels (transposed from the checkpoint's channels × kernel so that channels vectorize).
/// Afterwards `history` holds the last kernel−1 inputs, oldest first. `out` must not alias `input`.
public func causalConvolution(_ input: UnsafePointer<Float>, inputStride: Int, count: Int, channels: Int, kernel: Int,
                              taps: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                              history: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, outStride: Int) {
    let past = kernel - 1
    for t in 0..<count {
        let o = out + t * outStride
        if let bias { o.update(from: bias, count: channels) } else { o.update(repeating: 0, count: channels) }
        for j in 0..<kernel {
            let p = t - past + j
            let source = p >= 0 ? input + p * inputStride : UnsafePointer(history + (past + p) * channels)
            let w = taps + j * channels
            var c = 0
            while c + 8 <= channels { store8(load8(o + c) + load8(w + c) * load8(source + c), o + c); c += 8 }
            while c < channels { o[c] += w[c] * source[c]; c += 1 }
        }
        var c = 0
        while c + 8 <= channels { let v = load8(o + c); store8(v / (1 + fastExp8(-v)), o + c); c += 8 }
        while c < channels { o[c] = o[c] / (1 + fastExp(-o[c])); c += 1 }
    }
    guard past > 0 else { return }
    // Keep the last `past` inputs: the newest rows of this pass, after the older history still needed.
    let kept = max(0, past - count)
    if kept > 0 { history.update(from: history + (past - kept) * channels, count: kept * channels) }
    for r in kept..<past {
        (history + r * channels).update(from: input + (count - past + r) * inputStride, count: channels)
    }
}

/// The selective scan of `count` tokens over channels `channels` (a range, so the pool can split them):
///
///     h[c] ← exp(Δ[t][c]·A[c]) ∘ h[c] + Δ[t][c]·B[t]·u[t][c]      (state: stateSize values per channel)
///     y[t][c] = (⟨h[c], C[t]⟩ + D[c]·u[t][c]) · silu(z[t][c])
///
/// Δ is already softplus'd. Rows of u, Δ and y are `width` apart, of z `zStride`, of B and C `bcStride`;
/// A is channels × stateSize (negative), `state` the same shape, updated in place. Tokens run in order
/// within a channel, channels independently: the recurrence of transformers' sequential path.
public func selectiveScan(count: Int, channels: Range<Int>, width: Int, stateSize n: Int, bcStride: Int, zStride: Int,
                          u: UnsafePointer<Float>, delta: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafePointer<Float>,
                          z: UnsafePointer<Float>, a: UnsafePointer<Float>, d: UnsafePointer<Float>,
                          state: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>) {
    for channel in channels {
        let h = state + channel * n, aRow = a + channel * n
        for t in 0..<count {
            let dt = delta[t * width + channel], x = u[t * width + channel]
            let bRow = b + t * bcStride, cRow = c + t * bcStride
            let dtx = dt * x
            var acc = SIMD8<Float>()
            var i = 0
            while i + 8 <= n {
                let next = fastExp8(SIMD8(repeating: dt) * load8(aRow + i)) * load8(h + i) + SIMD8(repeating: dtx) * load8(bRow + i)
                store8(next, h + i)
                acc += next * load8(cRow + i)
                i += 8
            }
            var sum = acc.sum()
            while i < n {
                h[i] = fastExp(dt * aRow[i]) * h[i] + dtx * bRow[i]
                sum += h[i] * cRow[i]
                i += 1
            }
            let gate = z[t * zStride + channel]
            y[t * width + channel] = (sum + d[channel] * x) * (gate / (1 + fastExp(-gate)))
        }
    }
}

/// softplus(x) = log(1 + eˣ), as torch computes it (x itself above 20).
public func softplusInPlace(_ x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count where x[i] <= 20 { x[i] = log1pf(expf(x[i])) }
}
