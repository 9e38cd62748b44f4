/// Activations quantized to int8 in blocks of 32, the form the integer dot kernels consume.
///
/// For each row and block: `scale = max|x| / 127`, `q = round(x / scale)`, and
/// `scaledSum = scale * Σq`, which lets the Q4_1 kernel add the block minimum without
/// touching the activations again (Σ (d·q_w + m)·s·q_a = d·s·Σq_w·q_a + m·scaledSum).
public final class Q8Activations {
    public let capacityRows: Int
    public let maxColumns: Int
    public let quants: UnsafeMutablePointer<Int8>
    public let scales: UnsafeMutablePointer<Float>
    public let scaledSums: UnsafeMutablePointer<Float>
    /// Σq over each 16 columns (Q6_K's scale groups subtract 32 times it).
    public let halfSums: UnsafeMutablePointer<Int32>
    public private(set) var rows = 0
    public private(set) var columns = 0
    public var blocksPerRow: Int { columns / 32 }

    public init(capacityRows: Int, maxColumns: Int) {
        self.capacityRows = capacityRows
        self.maxColumns = maxColumns
        quants = .allocate(capacity: capacityRows * maxColumns)
        scales = .allocate(capacity: capacityRows * (maxColumns / 32 + 1))
        scaledSums = .allocate(capacity: capacityRows * (maxColumns / 32 + 1))
        halfSums = .allocate(capacity: capacityRows * (maxColumns / 16 + 1))
    }

    deinit { quants.deallocate(); scales.deallocate(); scaledSums.deallocate(); halfSums.deallocate() }

    /// Quantizes `rows` rows of `columns` floats (row stride `stride`); large batches use the pool.
    public func quantize(_ x: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int, pool: ThreadPool? = nil) {
        precondition(rows <= capacityRows && columns <= maxColumns && columns % 32 == 0,
                     "Q8 activations: \(rows)x\(columns) exceeds \(capacityRows)x\(maxColumns) or is not a multiple of 32")
        self.rows = rows
        self.columns = columns
        let blocks = columns / 32
        let quants = self.quants, scales = self.scales, sums = self.scaledSums, halfSums = self.halfSums
        // A nested function, not a closure value: a stored closure would be heap-allocated per call.
        func quantizeRows(_ range: Range<Int>) {
            for r in range {
                quantizeRow(x + r * stride, quants: quants + r * columns, scales: scales + r * blocks,
                            sums: sums + r * blocks, halfSums: halfSums + r * 2 * blocks, blocks: blocks)
            }
        }
        if let pool, rows >= 16 { pool.parallelRanges(count: rows) { quantizeRows($0) } } else { quantizeRows(0..<rows) }
    }
}

@inline(__always)
func quantizeRow(_ x: UnsafePointer<Float>, quants: UnsafeMutablePointer<Int8>,
                 scales: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>,
                 halfSums: UnsafeMutablePointer<Int32>, blocks: Int) {
    let raw = UnsafeRawPointer(x)
    for b in 0..<blocks {
        var amax = SIMD8<Float>()
        for k in 0..<4 {
            let lane = raw.loadUnaligned(fromByteOffset: (b * 32 + k * 8) * 4, as: SIMD8<Float>.self)
            amax = maximum(amax, abs(lane))
        }
        let maxAbs = horizontalMax(amax)
        let scale = maxAbs / 127
        let inverse: Float = maxAbs > 0 ? 127 / maxAbs : 0
        var first = SIMD8<Int32>(), second = SIMD8<Int32>()
        for k in 0..<4 {
            let lane = raw.loadUnaligned(fromByteOffset: (b * 32 + k * 8) * 4, as: SIMD8<Float>.self)
            let q = roundToInt32(lane * inverse)
            if k < 2 { first &+= q } else { second &+= q }
            UnsafeMutableRawPointer(quants + b * 32 + k * 8)
                .storeBytes(of: SIMD8<Int8>(truncatingIfNeeded: q), as: SIMD8<Int8>.self)
        }
        let low = first.wrappedSum(), high = second.wrappedSum()
        scales[b] = scale
        sums[b] = scale * Float(low &+ high)
        halfSums[2 * b] = low
        halfSums[2 * b + 1] = high
    }
}

@inline(__always) func abs(_ v: SIMD8<Float>) -> SIMD8<Float> {
    unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & SIMD8<UInt32>(repeating: 0x7FFF_FFFF), to: SIMD8<Float>.self)
}
