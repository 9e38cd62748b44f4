/// The register-blocked heart of `sgemm`: a 6×16 tile of C held in twelve SIMD8 accumulators.
///
/// Six rows × two vectors is the largest tile AVX2's sixteen registers hold with room for the two
/// B vectors and one broadcast A value; twelve independent FMA chains cover the FMA latency
/// (4–5 cycles) on both FMA ports. Every operand comes from packed panels (see SGEMMPacking.swift),
/// so the loop reads memory strictly sequentially and needs no edge cases.

/// Rows of C per micro-tile (the height of a packed A panel).
let sgemmTileRows = 6
/// Columns of C per micro-tile (the width of a packed B panel).
let sgemmTileColumns = 16

/// C[0..<6][0..<16] = acc + beta·C, where acc = Σ_p a[p·6 + i] · b[p·16 + j] over `depth` steps.
/// beta == 0 never reads C (it may hold garbage or NaN, as BLAS allows).
@inline(never)
func sgemmMicroKernel6x16(depth: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                          c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float) {
    var c00 = SIMD8<Float>(), c01 = SIMD8<Float>()
    var c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
    var c20 = SIMD8<Float>(), c21 = SIMD8<Float>()
    var c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
    var c40 = SIMD8<Float>(), c41 = SIMD8<Float>()
    var c50 = SIMD8<Float>(), c51 = SIMD8<Float>()
    var pa = a, pb = b
    for _ in 0..<depth {
        let b0 = load8(pb), b1 = load8(pb + 8)
        var x = SIMD8<Float>(repeating: pa[0])
        c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        x = SIMD8<Float>(repeating: pa[1])
        c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
        x = SIMD8<Float>(repeating: pa[2])
        c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
        x = SIMD8<Float>(repeating: pa[3])
        c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
        x = SIMD8<Float>(repeating: pa[4])
        c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
        x = SIMD8<Float>(repeating: pa[5])
        c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
        pa += sgemmTileRows
        pb += sgemmTileColumns
    }
    storeTileRow(c00, c01, c, beta)
    storeTileRow(c10, c11, c + ldc, beta)
    storeTileRow(c20, c21, c + 2 * ldc, beta)
    storeTileRow(c30, c31, c + 3 * ldc, beta)
    storeTileRow(c40, c41, c + 4 * ldc, beta)
    storeTileRow(c50, c51, c + 5 * ldc, beta)
}

/// row[0..<16] = (low, high) + beta·row.
@inline(__always)
private func storeTileRow(_ low: SIMD8<Float>, _ high: SIMD8<Float>, _ row: UnsafeMutablePointer<Float>, _ beta: Float) {
    if beta == 0 {
        store8(low, row); store8(high, row + 8)
    } else if beta == 1 {
        store8(low + load8(row), row); store8(high + load8(row + 8), row + 8)
    } else {
        let scale = SIMD8<Float>(repeating: beta)
        store8(low.addingProduct(scale, load8(row)), row)
        store8(high.addingProduct(scale, load8(row + 8)), row + 8)
    }
}
