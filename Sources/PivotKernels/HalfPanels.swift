#if arch(x86_64)
import PivotKernelsAVX512
#endif

/// F16/BF16 weights repacked for the AVX-512 path: panels of 16 rows, column-major inside a panel
/// (column k's 16 halves are 32 contiguous bytes). One widening then gives 16 rows' weights of one
/// column, and a token's x[k] is one broadcast, so a tile of 3 panels × 8 tokens is 24 independent
/// FMA chains with no horizontal sum: the outer-product micro-kernel BLAS and llamafile's tinyBLAS
/// use, where the row-major kernel (`halfMatMulAVX512`) widens 4 rows for only 4 tokens and reduces
/// every output across 16 lanes. Each output is one FMA chain over the columns in order, whatever
/// tile or batch it falls in, so a token's bits are the same alone or in a batch, and the portable
/// loop below gives the same bits as the AVX-512 kernel. Same bytes as the file (the last panel
/// is padded with zero rows), in memory of our own: the file's pages are released, so the weights
/// no longer page from disk. Machines without AVX-512 keep the row-major kernels (`halfMatMul`),
/// whose sums run in another order, so F16 outputs differ in the last bits between the two.
public struct HalfPanels: Sendable, Equatable {
    public static let rowsPerPanel = 16
    public let kind: HalfKind
    public let rows: Int
    public let columns: Int

    public init(kind: HalfKind, rows: Int, columns: Int) {
        precondition(rows > 0 && columns > 0)
        self.kind = kind; self.rows = rows; self.columns = columns
    }

    public var panels: Int { (rows + Self.rowsPerPanel - 1) / Self.rowsPerPanel }
    public var byteCount: Int { panels * Self.rowsPerPanel * columns * 2 }

    /// Repacks row-major [rows][columns] halves at `source` into `out` (`byteCount` bytes).
    public func pack(_ source: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
        let dst = out.bindMemory(to: UInt16.self, capacity: byteCount / 2)
        let columnBlock = 64
        for p in 0..<panels {
            // Blocks of 64 columns, so the 16 source rows' lines stay in L1 while they are transposed.
            var c0 = 0
            while c0 < columns {
                let c1 = min(columns, c0 + columnBlock)
                for r in 0..<Self.rowsPerPanel {
                    let row = p * Self.rowsPerPanel + r
                    for k in c0..<c1 {
                        dst[(p * columns + k) * Self.rowsPerPanel + r] = row < rows ? source.loadUnaligned(fromByteOffset: 2 * (row * columns + k), as: UInt16.self) : 0
                    }
                }
                c0 = c1
            }
        }
    }

    /// The stored bits of (row, column).
    public func bits(_ packed: UnsafeRawPointer, row: Int, column: Int) -> UInt16 {
        let p = row / Self.rowsPerPanel, r = row % Self.rowsPerPanel
        return packed.load(fromByteOffset: 2 * ((p * columns + column) * Self.rowsPerPanel + r), as: UInt16.self)
    }
}

/// out[t·outStride + o] = W[o] · x[t] for the rows of `panels` (16 rows each; rows past `rows` are
/// not written) of a panel-packed matrix. AVX-512 where the CPU has it, else the portable loop
/// (same bits).
public func halfPanelMatMul(_ layout: HalfPanels, weights: UnsafeRawPointer, panels: Range<Int>,
                            x: UnsafePointer<Float>, xStride: Int, tokens: Int, out: UnsafeMutablePointer<Float>, outStride: Int) {
    guard !panels.isEmpty, tokens > 0 else { return }
    #if arch(x86_64)
    if KernelISA.active == .avx512 {
        halfPanelMatMulAVX512(bf16: layout.kind == .bf16, weights: weights, rows: layout.rows, columns: layout.columns, panels: panels,
                              x: x, xStride: xStride, tokens: tokens, out: out, outStride: outStride)
        return
    }
    #endif
    halfPanelMatMulPortable(layout, weights, panels, x, xStride, tokens, out, outStride)
}

/// One 16-lane FMA chain per (panel, token), as the AVX-512 kernel's lanes.
func halfPanelMatMulPortable(_ layout: HalfPanels, _ weights: UnsafeRawPointer, _ panels: Range<Int>,
                             _ x: UnsafePointer<Float>, _ xStride: Int, _ tokens: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    let n = layout.columns
    for p in panels {
        let panel = weights + p * n * 32, first = p * HalfPanels.rowsPerPanel, count = min(HalfPanels.rowsPerPanel, layout.rows - first)
        for t in 0..<tokens {
            let xt = x + t * xStride
            var acc = SIMD16<Float>()
            for k in 0..<n {
                var w = SIMD16<Float>()
                for r in 0..<16 { w[r] = halfToFloat(panel, 16 * k + r, layout.kind) }
                acc = acc.addingProduct(w, SIMD16(repeating: xt[k]))
            }
            for r in 0..<count { out[t * outStride + first + r] = acc[r] }
        }
    }
}
