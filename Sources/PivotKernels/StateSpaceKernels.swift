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
///     Δ = softplus(δ[t][c])
///     h[·][c] ← exp(Δ·A[·][c]) ∘ h[·][c] + Δ·B[t]·u[t][c]      (stateSize values per channel)
///     y[t][c] = (⟨h[·][c], C[t]⟩ + D[c]·u[t][c]) · silu(z[t][c])
///
/// δ is dt_proj's output before softplus. Rows of u, δ and y are `width` apart, of z `zStride`, of B
/// and C `bcStride`. A (negative) and the state are state-major: value i of channel c at i·`channels`
/// + c, where `totalChannels` is the row length; eight channels run side by side in SIMD lanes, each
/// lane the recurrence of transformers' sequential path in token order. The state is updated in place.
public func selectiveScan(count: Int, channels: Range<Int>, totalChannels: Int, width: Int, stateSize n: Int, bcStride: Int, zStride: Int,
                          u: UnsafePointer<Float>, delta: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafePointer<Float>,
                          z: UnsafePointer<Float>, a: UnsafePointer<Float>, d: UnsafePointer<Float>,
                          state: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>) {
    var c0 = channels.lowerBound
    while c0 + 8 <= channels.upperBound {
        let dLanes = load8(d + c0)
        for t in 0..<count {
            let raw = softplus8(load8(delta + t * width + c0))
            let x = load8(u + t * width + c0), dtx = raw * x
            let bRow = b + t * bcStride, cRow = c + t * bcStride
            var acc = SIMD8<Float>()
            for i in 0..<n {
                let h = state + i * totalChannels + c0
                let next = fastExp8(raw * load8(a + i * totalChannels + c0)) * load8(h) + dtx * SIMD8(repeating: bRow[i])
                store8(next, h)
                acc += next * SIMD8(repeating: cRow[i])
            }
            let gate = load8(z + t * zStride + c0)
            store8((acc + dLanes * x) * (gate / (1 + fastExp8(-gate))), y + t * width + c0)
        }
        c0 += 8
    }
    // Channels past the last eight, one at a time.
    for channel in c0..<channels.upperBound {
        for t in 0..<count {
            let dt = softplus(delta[t * width + channel]), x = u[t * width + channel], dtx = dt * x
            var sum: Float = 0
            for i in 0..<n {
                let h = state + i * totalChannels + channel
                h.pointee = fastExp(dt * a[i * totalChannels + channel]) * h.pointee + dtx * b[t * bcStride + i]
                sum += h.pointee * c[t * bcStride + i]
            }
            let gate = z[t * zStride + channel]
            y[t * width + channel] = (sum + d[channel] * x) * (gate / (1 + fastExp(-gate)))
        }
    }
}

/// Mamba-2's structured scan of `count` tokens over heads `heads` (a range, so the pool can split them):
///
///     Δ = softplus(δ[t][h] + dtBias[h]);  α = exp(Δ·A[h])
///     s[h][p][·] ← α·s[h][p][·] + Δ·x[t][h·P + p]·B[t][g][·]      (g = h / headsPerGroup)
///     y[t][h·P + p] = ⟨s[h][p][·], C[t][g][·]⟩ + D[h]·x[t][h·P + p]
///
/// One A and Δ per head, so one exp per head and token; the state runs along SIMD lanes. Rows of x
/// are `xStride` apart, of B and C (each groups × stateSize) `bcStride`, of δ `deltaStride`, of y
/// `yStride`. `state` is heads × headDim × stateSize, updated in place.
public func structuredScan(count: Int, heads: Range<Int>, headDim: Int, stateSize n: Int, headsPerGroup: Int,
                           x: UnsafePointer<Float>, xStride: Int, b: UnsafePointer<Float>, c: UnsafePointer<Float>, bcStride: Int,
                           delta: UnsafePointer<Float>, deltaStride: Int, dtBias: UnsafePointer<Float>,
                           a: UnsafePointer<Float>, d: UnsafePointer<Float>, state: UnsafeMutablePointer<Float>,
                           y: UnsafeMutablePointer<Float>, yStride: Int) {
    for head in heads {
        let group = head / headsPerGroup
        for t in 0..<count {
            let dt = softplus(delta[t * deltaStride + head] + dtBias[head])
            let decay = fastExp(dt * a[head]), decay8 = SIMD8(repeating: decay)
            let bRow = b + t * bcStride + group * n, cRow = c + t * bcStride + group * n
            for p in 0..<headDim {
                let channel = head * headDim + p
                let xv = x[t * xStride + channel], dtx = SIMD8(repeating: dt * xv)
                let s = state + channel * n
                var acc = SIMD8<Float>()
                var i = 0
                while i + 8 <= n {
                    let next = decay8 * load8(s + i) + dtx * load8(bRow + i)
                    store8(next, s + i)
                    acc += next * load8(cRow + i)
                    i += 8
                }
                var sum = acc.sum()
                while i < n {
                    s[i] = decay * s[i] + dt * xv * bRow[i]
                    sum += s[i] * cRow[i]
                    i += 1
                }
                y[t * yStride + channel] = sum + d[head] * xv
            }
        }
    }
}

/// softplus(x) = log(1 + eˣ), as torch computes it (x itself above 20).
@inline(__always) public func softplus(_ x: Float) -> Float { x > 20 ? x : log1pf(expf(x)) }

/// softplus of eight lanes: max(x, 0) + log1p(e^−|x|), with log1p by Kahan's log(w)·y/(w − 1) over
/// Cephes' logf polynomial (a few ulps, as torch's log1p(exp(x)) to rounding); x itself above 20.
@inline(__always) func softplus8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let y = fastExp8(minimum(x, -x)), w = 1 + y
    // log(w) for w in (1, 2]: w = m·2^e with m in [√½, √2).
    let bits = unsafeBitCast(w, to: SIMD8<Int32>.self)
    var e = toFloat((bits &>> 23) &- 126)
    var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: SIMD8<Float>.self)
    let small = m .< 0.707_106_77
    e.replace(with: e - 1, where: small)
    m = m.replacing(with: m + m - 1, where: small).replacing(with: m - 1, where: .!small)
    let z = m * m
    var p = SIMD8<Float>(repeating: 7.037_683_6e-2)
    p = p * m - 1.151_461_0e-1
    p = p * m + 1.167_699_9e-1
    p = p * m - 1.242_014_1e-1
    p = p * m + 1.424_932_3e-1
    p = p * m - 1.666_805_8e-1
    p = p * m + 2.000_071_5e-1
    p = p * m - 2.499_999_4e-1
    p = p * m + 3.333_333_1e-1
    var log = m * z * p - 2.121_944_4e-4 * e - 0.5 * z
    log = m + log + 0.693_359_375 * e
    let log1p = (log * y / (w - 1)).replacing(with: y, where: w .== 1)
    return (maximum(x, SIMD8(repeating: 0)) + log1p).replacing(with: x, where: x .> 20)
}

/// softplus of every element in place (eight at a time, as the scan applies it).
public func softplusInPlace8(_ x: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(softplus8(load8(x + i)), x + i); i += 8 }
    while i < count { x[i] = softplus(x[i]); i += 1 }
}
