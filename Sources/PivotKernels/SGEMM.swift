/// Float matrix product for the training pass (forward, input gradient, weight gradient), in the
/// GotoBLAS/BLIS shape: blocks of op(A) and op(B) are packed into contiguous panels
/// (SGEMMPacking.swift) sized for the caches, and a 6×16 register tile (SGEMMMicroKernel.swift)
/// runs over them. `denseMatMul` does one dot product per output and reloads both operands for
/// each; this reuses every loaded value 6 or 16 times from registers.

/// Row-major BLAS semantics: C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
/// op(A) = A (A is m×k, lda ≥ k) or Aᵀ (A stored k×m, lda ≥ m); the same for B (k×n, ldb ≥ n,
/// or stored n×k, ldb ≥ k); ldc ≥ n. beta == 0 overwrites C without reading it.
/// With a pool the columns (or the rows, when C is taller than wide) are split across its threads;
/// `pool == nil` runs on the calling thread.
public func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, pool: ThreadPool?) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size")
    precondition(lda >= max(1, transposeA ? m : k) && ldb >= max(1, transposeB ? k : n) && ldc >= max(1, n),
                 "sgemm: leading dimension smaller than a row")
    if m == 0 || n == 0 { return }
    if k == 0 || alpha == 0 {
        scaleMatrix(c, rows: m, columns: n, ldc: ldc, by: beta)
        return
    }
    let problem = SGEMMProblem(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                               a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    let plan = SGEMMPlan(problem, threads: pool?.threads ?? 1)
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: plan.scratchFloats * plan.chunks * 4, alignment: 64)
        .bindMemory(to: Float.self, capacity: plan.scratchFloats * plan.chunks)
    defer { scratch.deallocate() }
    if plan.chunks == 1 {
        sgemmChunk(problem, plan, chunk: 0, scratch: scratch)
    } else if let pool {
        pool.run(SGEMMJob(problem, plan, scratch: scratch), chunks: plan.chunks)
    }
}

/// The call's operands, passed by value to each chunk.
struct SGEMMProblem {
    var transposeA: Bool, transposeB: Bool
    var m: Int, n: Int, k: Int
    var alpha: Float
    var a: UnsafePointer<Float>, lda: Int
    var b: UnsafePointer<Float>, ldb: Int
    var beta: Float
    var c: UnsafeMutablePointer<Float>, ldc: Int
}

/// Cache blocking: a packed B panel (depth × 16) stays in L1, the packed A block (rows × depth)
/// in L2, the packed B block (depth × columns) in L3.
enum SGEMMBlocking {
    static let depth = 320
    static let rows = 144
    static let columns = 3072
    /// Below this many multiply-adds a call stays on one thread: a dispatch costs a few microseconds.
    static let minimumWorkPerChunk = 1 << 20
}

/// How one call is cut: which dimension the threads split, each chunk's extent, the depth block
/// and each chunk's scratch (packed A block, packed B block, one edge tile).
struct SGEMMPlan {
    var chunks = 1
    var splitColumns = true
    /// Columns (or rows) per chunk, a multiple of the tile's width (or height).
    var chunkExtent: Int
    var depthBlock: Int
    var packedAFloats: Int
    var packedBFloats: Int
    var scratchFloats: Int

    init(_ p: SGEMMProblem, threads: Int) {
        splitColumns = p.n >= p.m
        let tile = splitColumns ? sgemmTileColumns : sgemmTileRows
        let extent = splitColumns ? p.n : p.m
        let panels = (extent + tile - 1) / tile
        let work = p.m * p.n * p.k
        let wanted = max(1, min(threads, panels, work / SGEMMBlocking.minimumWorkPerChunk))
        let panelsPerChunk = (panels + wanted - 1) / wanted
        chunkExtent = panelsPerChunk * tile
        chunks = (panels + panelsPerChunk - 1) / panelsPerChunk
        // Equal depth blocks, so k = 576 runs as 2 × 288 rather than 320 + 256.
        let depthBlocks = (p.k + SGEMMBlocking.depth - 1) / SGEMMBlocking.depth
        depthBlock = (p.k + depthBlocks - 1) / depthBlocks
        let rowsPerChunk = splitColumns ? p.m : min(p.m, chunkExtent)
        let columnsPerChunk = splitColumns ? min(p.n, chunkExtent) : p.n
        let blockRows = roundUp(min(rowsPerChunk, SGEMMBlocking.rows), sgemmTileRows)
        let blockColumns = roundUp(min(columnsPerChunk, SGEMMBlocking.columns), sgemmTileColumns)
        packedAFloats = roundUp(blockRows * depthBlock, 16)
        packedBFloats = roundUp(blockColumns * depthBlock, 16)
        scratchFloats = packedAFloats + packedBFloats + sgemmTileRows * sgemmTileColumns
    }
}

@inline(__always) private func roundUp(_ x: Int, _ multiple: Int) -> Int { (x + multiple - 1) / multiple * multiple }

/// The pool's view of one call; allocated once per call, outside every loop.
private final class SGEMMJob: ParallelJob {
    let problem: SGEMMProblem
    let plan: SGEMMPlan
    let scratch: UnsafeMutablePointer<Float>

    init(_ problem: SGEMMProblem, _ plan: SGEMMPlan, scratch: UnsafeMutablePointer<Float>) {
        self.problem = problem; self.plan = plan; self.scratch = scratch
    }

    func run(chunk: Int) { sgemmChunk(problem, plan, chunk: chunk, scratch: scratch) }
}

/// One chunk's columns (or rows) of C, with that chunk's own slice of the scratch.
private func sgemmChunk(_ p: SGEMMProblem, _ plan: SGEMMPlan, chunk: Int, scratch: UnsafeMutablePointer<Float>) {
    let start = chunk * plan.chunkExtent
    let rows = plan.splitColumns ? 0..<p.m : start..<min(p.m, start + plan.chunkExtent)
    let columns = plan.splitColumns ? start..<min(p.n, start + plan.chunkExtent) : 0..<p.n
    let packedA = scratch + chunk * plan.scratchFloats
    let packedB = packedA + plan.packedAFloats
    let edgeTile = packedB + plan.packedBFloats
    var jc = columns.lowerBound
    while jc < columns.upperBound {
        let columnBlock = jc..<min(columns.upperBound, jc + SGEMMBlocking.columns)
        var pc = 0
        while pc < p.k {
            let depth = pc..<min(p.k, pc + plan.depthBlock)
            // Later depth blocks add onto what the first one wrote.
            let beta = pc == 0 ? p.beta : 1
            sgemmPackB(transposed: p.transposeB, b: p.b, ldb: p.ldb, depth: depth, columns: columnBlock, into: packedB)
            var ic = rows.lowerBound
            while ic < rows.upperBound {
                let rowBlock = ic..<min(rows.upperBound, ic + SGEMMBlocking.rows)
                sgemmPackA(transposed: p.transposeA, a: p.a, lda: p.lda, rows: rowBlock, depth: depth,
                           alpha: p.alpha, into: packedA)
                multiplyPackedBlocks(depth: depth.count, packedA: packedA, rows: rowBlock, packedB: packedB,
                                     columns: columnBlock, c: p.c, ldc: p.ldc, beta: beta, edgeTile: edgeTile)
                ic = rowBlock.upperBound
            }
            pc = depth.upperBound
        }
        jc = columnBlock.upperBound
    }
}

/// C[rows][columns] = packedA · packedB + beta·C, one micro-tile at a time: each B panel stays
/// in L1 while every A panel of the block streams past it. Ragged tiles go through `edgeTile`.
private func multiplyPackedBlocks(depth: Int, packedA: UnsafePointer<Float>, rows: Range<Int>,
                                  packedB: UnsafePointer<Float>, columns: Range<Int>,
                                  c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float,
                                  edgeTile: UnsafeMutablePointer<Float>) {
    let mr = sgemmTileRows, nr = sgemmTileColumns
    var panelB = packedB
    var j = columns.lowerBound
    while j < columns.upperBound {
        let width = min(nr, columns.upperBound - j)
        var panelA = packedA
        var i = rows.lowerBound
        while i < rows.upperBound {
            let height = min(mr, rows.upperBound - i)
            let target = c + i * ldc + j
            if width == nr && height == mr {
                sgemmMicroKernel6x16(depth: depth, a: panelA, b: panelB, c: target, ldc: ldc, beta: beta)
            } else {
                sgemmMicroKernel6x16(depth: depth, a: panelA, b: panelB, c: edgeTile, ldc: nr, beta: 0)
                for r in 0..<height {
                    let row = target + r * ldc, tileRow = edgeTile + r * nr
                    if beta == 0 {
                        for col in 0..<width { row[col] = tileRow[col] }
                    } else {
                        for col in 0..<width { row[col] = tileRow[col] + beta * row[col] }
                    }
                }
            }
            panelA += mr * depth
            i += mr
        }
        panelB += nr * depth
        j += nr
    }
}

/// C = beta·C (beta == 0 writes zeros without reading C), for alpha == 0 or an empty depth.
private func scaleMatrix(_ c: UnsafeMutablePointer<Float>, rows: Int, columns: Int, ldc: Int, by beta: Float) {
    if beta == 1 { return }
    for r in 0..<rows {
        let row = c + r * ldc
        if beta == 0 {
            row.update(repeating: 0, count: columns)
        } else {
            for col in 0..<columns { row[col] *= beta }
        }
    }
}
