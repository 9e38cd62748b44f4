#if arch(x86_64)
import _Builtin_intrinsics.intel

/// F16/BF16 panels (PivotKernels' `HalfPanels`: 16 rows per panel, column-major inside it) × float
/// activations: tiles of up to 3 panels × 8 tokens. Per column, 3 widenings and 8 broadcasts feed
/// 24 FMAs into 24 accumulators (48 rows × 8 tokens), and each accumulator lane is one output's
/// chain over the columns in order — no horizontal sums, and the same bits in every tile shape.

/// How far ahead of a one-token tile's loads each panel's lines are requested: 64 columns (2 KiB).
/// The hardware prefetchers alone left decode at 75–85 t/s on the BF16 file; 1–4 KiB ahead gave
/// 98–112 (BENCHMARKS, "Kernels, third pass").
let panelPrefetchDistance = 2048

/// One panel's accumulators for up to 8 tokens.
struct PanelSums {
    var v0, v1, v2, v3, v4, v5, v6, v7: __m512

    @inline(__always) init() {
        let z = _mm512_setzero_ps()
        v0 = z; v1 = z; v2 = z; v3 = z; v4 = z; v5 = z; v6 = z; v7 = z
    }

    /// Token j's sums += w · b.
    @inline(__always) mutating func add(_ j: Int, _ w: __m512, _ b: __m512) {
        switch j {
        case 0: v0 = _mm512_fmadd_ps(w, b, v0)
        case 1: v1 = _mm512_fmadd_ps(w, b, v1)
        case 2: v2 = _mm512_fmadd_ps(w, b, v2)
        case 3: v3 = _mm512_fmadd_ps(w, b, v3)
        case 4: v4 = _mm512_fmadd_ps(w, b, v4)
        case 5: v5 = _mm512_fmadd_ps(w, b, v5)
        case 6: v6 = _mm512_fmadd_ps(w, b, v6)
        default: v7 = _mm512_fmadd_ps(w, b, v7)
        }
    }

    @inline(__always) func token(_ j: Int) -> __m512 {
        switch j {
        case 0: return v0
        case 1: return v1
        case 2: return v2
        case 3: return v3
        case 4: return v4
        case 5: return v5
        case 6: return v6
        default: return v7
        }
    }
}

/// Panels p0 ..< p0 + panelCount (≤ 3) × tokens t ..< t + tokenCount (≤ 8); both counts are
/// constants at every call site, so the unused accumulators vanish. (Six panels for the 1- and
/// 4-token tiles decoded no faster.)
@inline(__always)
func panelTile<W: HalfWidening>(_ weights: UnsafeRawPointer, _ n: Int, _ rows: Int, _ p0: Int, panelCount: Int,
                                _ x: UnsafePointer<Float>, _ xStride: Int, _ t: Int, tokenCount: Int,
                                _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ w: W.Type, streaming: Bool) {
    var s0 = PanelSums(), s1 = PanelSums(), s2 = PanelSums()
    let w0 = weights + p0 * n * 32, w1 = w0 + n * 32, w2 = w1 + n * 32
    let xt = x + t * xStride
    for k in 0..<n {
        if streaming && tokenCount == 1 && k & 1 == 0 {
            // Decode streams each panel once: ask for the lines a little ahead of the widenings.
            prefetch(w0 + 32 * k + panelPrefetchDistance)
            if panelCount > 1 { prefetch(w1 + 32 * k + panelPrefetchDistance) }
            if panelCount > 2 { prefetch(w2 + 32 * k + panelPrefetchDistance) }
        }
        let r0 = W.widen16(w0 + 32 * k)
        let r1 = panelCount > 1 ? W.widen16(w1 + 32 * k) : r0
        let r2 = panelCount > 2 ? W.widen16(w2 + 32 * k) : r0
        for j in 0..<tokenCount {
            let b = _mm512_set1_ps(xt[j * xStride + k])
            s0.add(j, r0, b)
            if panelCount > 1 { s1.add(j, r1, b) }
            if panelCount > 2 { s2.add(j, r2, b) }
        }
    }
    for p in 0..<panelCount {
        let sums = p == 0 ? s0 : p == 1 ? s1 : s2
        let first = (p0 + p) * 16, count = min(16, rows - first)
        let mask: __mmask16 = count == 16 ? 0xFFFF : __mmask16((1 << count) - 1)
        for j in 0..<tokenCount { _mm512_mask_storeu_ps(out + (t + j) * outStride + first, mask, sums.token(j)) }
    }
}

/// Every token over panels `panels`: strips of panels that stay in L2 while the 8-token tiles
/// (then a 4-token tile, then single tokens) pass over them.
@inline(__always)
func panelTiles<W: HalfWidening>(_ weights: UnsafeRawPointer, _ n: Int, _ rows: Int, _ panels: Range<Int>,
                                 _ x: UnsafePointer<Float>, _ xStride: Int, _ tokens: Int,
                                 _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ w: W.Type) {
    @inline(__always) func sweep(_ strip: Range<Int>, _ t: Int, _ tokenCount: Int) {
        var p = strip.lowerBound
        while p + 3 <= strip.upperBound {
            panelTile(weights, n, rows, p, panelCount: 3, x, xStride, t, tokenCount: tokenCount, out, outStride, w, streaming: tokens == 1)
            p += 3
        }
        while p < strip.upperBound {
            panelTile(weights, n, rows, p, panelCount: 1, x, xStride, t, tokenCount: tokenCount, out, outStride, w, streaming: tokens == 1)
            p += 1
        }
    }
    let stripLength = max(3, (192 * 1024) / (32 * n) / 3 * 3)
    var start = panels.lowerBound
    while start < panels.upperBound {
        let strip = start..<min(panels.upperBound, start + stripLength)
        var t = 0
        while t + 8 <= tokens { sweep(strip, t, 8); t += 8 }
        if t + 4 <= tokens { sweep(strip, t, 4); t += 4 }
        while t < tokens { sweep(strip, t, 1); t += 1 }
        start = strip.upperBound
    }
}

/// out[t·outStride + o] = W[o] · x[t] for the rows of `panels` (16 rows each; rows at or past
/// `rows` are not written) of a panel-packed 16-bit matrix (bfloat16 when `bf16`, else IEEE halves).
@inline(never)
public func halfPanelMatMulAVX512(bf16: Bool, weights: UnsafeRawPointer, rows: Int, columns n: Int, panels: Range<Int>,
                                  x: UnsafePointer<Float>, xStride: Int, tokens: Int, out: UnsafeMutablePointer<Float>, outStride: Int) {
    if bf16 {
        panelTiles(weights, n, rows, panels, x, xStride, tokens, out, outStride, BF16Widening.self)
    } else {
        panelTiles(weights, n, rows, panels, x, xStride, tokens, out, outStride, F16Widening.self)
    }
}
#endif
