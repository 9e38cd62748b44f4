#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Packing for `sgemm`: copies a block of op(A) or op(B) into the order the micro-kernel reads.
///
/// Every transpose case is resolved here, so one micro-kernel serves all four; ragged edges are
/// padded with zeros to whole panels, so the kernel never branches on the tile's size.
///
/// Packed A: panels of `sgemmTileRows` rows; inside a panel, depth-major (`dst[p·6 + i]`).
/// Packed B: panels of `sgemmTileColumns` columns; inside a panel, depth-major (`dst[p·16 + j]`).

/// Packs op(A)[rows][depth] (scaled by alpha, so the kernel need not scale) into `dst`.
/// op(A)[i][p] is a[i·lda + p], or a[p·lda + i] when transposed.
func sgemmPackA(transposed: Bool, a: UnsafePointer<Float>, lda: Int, rows: Range<Int>, depth: Range<Int>,
                alpha: Float, into dst: UnsafeMutablePointer<Float>) {
    let mr = sgemmTileRows, kb = depth.count
    var out = dst
    var row = rows.lowerBound
    while row < rows.upperBound {
        let height = min(mr, rows.upperBound - row)
        if transposed {
            // Each depth step is a contiguous run of the panel's rows.
            var src = a + depth.lowerBound * lda + row
            if height == mr {
                for _ in 0..<kb {
                    out[0] = alpha * src[0]; out[1] = alpha * src[1]; out[2] = alpha * src[2]
                    out[3] = alpha * src[3]; out[4] = alpha * src[4]; out[5] = alpha * src[5]
                    out += mr; src += lda
                }
            } else {
                for _ in 0..<kb {
                    for i in 0..<mr { out[i] = i < height ? alpha * src[i] : 0 }
                    out += mr; src += lda
                }
            }
        } else if height == mr {
            packRowsInterleaved6(a + row * lda + depth.lowerBound, lda: lda, depth: kb, alpha: alpha, into: out)
            out += mr * kb
        } else {
            let src = a + row * lda + depth.lowerBound
            for p in 0..<kb {
                for i in 0..<mr { out[i] = i < height ? alpha * src[i * lda + p] : 0 }
                out += mr
            }
        }
        row += mr
    }
}

/// Six rows read side by side into depth-major order, eight depth steps per vector load.
@inline(__always)
private func packRowsInterleaved6(_ src: UnsafePointer<Float>, lda: Int, depth: Int, alpha: Float,
                                  into dst: UnsafeMutablePointer<Float>) {
    let scale = SIMD8<Float>(repeating: alpha)
    var p = 0
    while p + 8 <= depth {
        let r0 = scale * load8(src + p), r1 = scale * load8(src + lda + p)
        let r2 = scale * load8(src + 2 * lda + p), r3 = scale * load8(src + 3 * lda + p)
        let r4 = scale * load8(src + 4 * lda + p), r5 = scale * load8(src + 5 * lda + p)
        let out = dst + p * 6
        for q in 0..<8 {
            out[q * 6] = r0[q]; out[q * 6 + 1] = r1[q]; out[q * 6 + 2] = r2[q]
            out[q * 6 + 3] = r3[q]; out[q * 6 + 4] = r4[q]; out[q * 6 + 5] = r5[q]
        }
        p += 8
    }
    while p < depth {
        for i in 0..<6 { dst[p * 6 + i] = alpha * src[i * lda + p] }
        p += 1
    }
}

/// Packs op(B)[depth][columns] into `dst`. op(B)[p][j] is b[p·ldb + j], or b[j·ldb + p] when transposed.
func sgemmPackB(transposed: Bool, b: UnsafePointer<Float>, ldb: Int, depth: Range<Int>, columns: Range<Int>,
                into dst: UnsafeMutablePointer<Float>) {
    let nr = sgemmTileColumns, kb = depth.count
    var out = dst
    var column = columns.lowerBound
    while column < columns.upperBound {
        let width = min(nr, columns.upperBound - column)
        if transposed {
            packTransposedPanel(b + column * ldb + depth.lowerBound, ldb: ldb, width: width, depth: kb, into: out)
            out += nr * kb
        } else {
            // Each depth step is a contiguous run of the panel's columns.
            var src = b + depth.lowerBound * ldb + column
            if width == nr {
                for _ in 0..<kb {
                    store8(load8(src), out); store8(load8(src + 8), out + 8)
                    out += nr; src += ldb
                }
            } else {
                for _ in 0..<kb {
                    for j in 0..<nr { out[j] = j < width ? src[j] : 0 }
                    out += nr; src += ldb
                }
            }
        }
        column += nr
    }
}

/// One B panel from `width` (≤ 16) rows of stored B, each `depth` long: dst[p·16 + j] = src[j·ldb + p].
/// Eight depth steps of eight rows at a time go through registers as an 8×8 transpose.
@inline(__always)
private func packTransposedPanel(_ src: UnsafePointer<Float>, ldb: Int, width: Int, depth: Int,
                                 into dst: UnsafeMutablePointer<Float>) {
    let nr = sgemmTileColumns
    var half = 0
    while half < nr {
        let rows = min(8, max(0, width - half))
        let base = src + half * ldb, out = dst + half
        if rows == 8 {
            var p = 0
            while p + 8 <= depth {
                let t = transpose8x8(load8(base + p), load8(base + ldb + p), load8(base + 2 * ldb + p),
                                     load8(base + 3 * ldb + p), load8(base + 4 * ldb + p), load8(base + 5 * ldb + p),
                                     load8(base + 6 * ldb + p), load8(base + 7 * ldb + p))
                store8(t.0, out + p * nr); store8(t.1, out + (p + 1) * nr)
                store8(t.2, out + (p + 2) * nr); store8(t.3, out + (p + 3) * nr)
                store8(t.4, out + (p + 4) * nr); store8(t.5, out + (p + 5) * nr)
                store8(t.6, out + (p + 6) * nr); store8(t.7, out + (p + 7) * nr)
                p += 8
            }
            while p < depth {
                for j in 0..<8 { out[p * nr + j] = base[j * ldb + p] }
                p += 1
            }
        } else {
            for p in 0..<depth {
                for j in 0..<8 { out[p * nr + j] = j < rows ? base[j * ldb + p] : 0 }
            }
        }
        half += 8
    }
}

/// Rows r0…r7 of an 8×8 block in, its columns out: pairs of rows interleave (32-bit, then
/// 64-bit), then 128-bit halves swap across the two lanes.
@inline(__always)
private func transpose8x8(_ r0: SIMD8<Float>, _ r1: SIMD8<Float>, _ r2: SIMD8<Float>, _ r3: SIMD8<Float>,
                          _ r4: SIMD8<Float>, _ r5: SIMD8<Float>, _ r6: SIMD8<Float>, _ r7: SIMD8<Float>)
    -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
    #if arch(x86_64)
    let t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1)
    let t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3)
    let t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5)
    let t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7)
    @inline(__always) func pairLow(_ x: SIMD8<Float>, _ y: SIMD8<Float>) -> SIMD8<Float> {
        unsafeBitCast(_mm256_unpacklo_pd(unsafeBitCast(x, to: __m256d.self), unsafeBitCast(y, to: __m256d.self)), to: SIMD8<Float>.self)
    }
    @inline(__always) func pairHigh(_ x: SIMD8<Float>, _ y: SIMD8<Float>) -> SIMD8<Float> {
        unsafeBitCast(_mm256_unpackhi_pd(unsafeBitCast(x, to: __m256d.self), unsafeBitCast(y, to: __m256d.self)), to: SIMD8<Float>.self)
    }
    // u0 = column 0 of rows 0–3 | column 4 of rows 0–3; u4 the same for rows 4–7; and so on.
    let u0 = pairLow(t0, t2), u1 = pairHigh(t0, t2), u2 = pairLow(t1, t3), u3 = pairHigh(t1, t3)
    let u4 = pairLow(t4, t6), u5 = pairHigh(t4, t6), u6 = pairLow(t5, t7), u7 = pairHigh(t5, t7)
    return (SIMD8(lowHalf: u0.lowHalf, highHalf: u4.lowHalf), SIMD8(lowHalf: u1.lowHalf, highHalf: u5.lowHalf),
            SIMD8(lowHalf: u2.lowHalf, highHalf: u6.lowHalf), SIMD8(lowHalf: u3.lowHalf, highHalf: u7.lowHalf),
            SIMD8(lowHalf: u0.highHalf, highHalf: u4.highHalf), SIMD8(lowHalf: u1.highHalf, highHalf: u5.highHalf),
            SIMD8(lowHalf: u2.highHalf, highHalf: u6.highHalf), SIMD8(lowHalf: u3.highHalf, highHalf: u7.highHalf))
    #else
    let rows = (r0, r1, r2, r3, r4, r5, r6, r7)
    func column(_ j: Int) -> SIMD8<Float> {
        SIMD8(rows.0[j], rows.1[j], rows.2[j], rows.3[j], rows.4[j], rows.5[j], rows.6[j], rows.7[j])
    }
    return (column(0), column(1), column(2), column(3), column(4), column(5), column(6), column(7))
    #endif
}
