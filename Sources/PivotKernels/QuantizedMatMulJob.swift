/// A reusable pool job: one to three quantized weight matrices sharing one Q8 activation matrix,
/// their output rows concatenated and split into chunks (Q/K/V or gate/up run as one dispatch).
public final class QuantizedMatMulJob: ParallelJob {
    public struct Segment {
        public var format: BlockFormat
        public var weights: UnsafeRawPointer
        public var rowBytes: Int
        public var rows: Int
        public var out: UnsafeMutablePointer<Float>
        public var outStride: Int
        /// Set when `weights` are repacked eight rows at a time (then `rowBytes` is unused).
        public var interleaved: InterleavedLayout?
        /// Sparse full-precision corrections added to each row right after its product, in the same chunk.
        public var corrections: SparseCorrections?

        public init(format: BlockFormat, weights: UnsafeRawPointer, rowBytes: Int, rows: Int,
                    out: UnsafeMutablePointer<Float>, outStride: Int, interleaved: InterleavedLayout? = nil) {
            self.format = format; self.weights = weights; self.rowBytes = rowBytes
            self.rows = rows; self.out = out; self.outStride = outStride; self.interleaved = interleaved
        }
    }

    private var segments: (Segment?, Segment?, Segment?) = (nil, nil, nil)
    private var activations: Q8Activations?
    private var chunkSize = 1
    private var totalRows = 0

    public init() {}

    /// Runs the segments over the pool; `act` must already hold the quantized input.
    public func run(_ a: Segment, _ b: Segment? = nil, _ c: Segment? = nil, act: Q8Activations, pool: ThreadPool) {
        segments = (a, b, c)
        activations = act
        totalRows = a.rows + (b?.rows ?? 0) + (c?.rows ?? 0)
        let split = pool.rangeSplit(count: totalRows, minChunk: 16)
        // Whole pairs of 8-row groups per chunk when any weights are interleaved: the AVX-512 tiles
        // take groups two at a time, and a chunk with an odd group count ends on the narrower tiles
        // (still possible at a segment whose own group count is odd; the results are the same).
        let interleaved = a.interleaved != nil || b?.interleaved != nil || c?.interleaved != nil
        let quantum = 2 * InterleavedLayout.rowsPerGroup
        chunkSize = interleaved ? (split.size + quantum - 1) / quantum * quantum : split.size
        pool.run(self, chunks: (totalRows + chunkSize - 1) / chunkSize)
        activations = nil
    }

    public func run(chunk: Int) {
        let start = chunk * chunkSize, end = min(totalRows, start + chunkSize)
        guard let act = activations else { return }
        var offset = 0
        // Three explicit steps rather than a loop over an array literal, which would allocate.
        if let s = segments.0 { runSegment(s, offset: &offset, start: start, end: end, act: act) }
        if let s = segments.1 { runSegment(s, offset: &offset, start: start, end: end, act: act) }
        if let s = segments.2 { runSegment(s, offset: &offset, start: start, end: end, act: act) }
    }

    @inline(__always)
    private func runSegment(_ s: Segment, offset: inout Int, start: Int, end: Int, act: Q8Activations) {
        let lower = max(start, offset) - offset, upper = min(end, offset + s.rows) - offset
        if let layout = s.interleaved {
            // A group of 8 rows belongs to the chunk holding its first row.
            let groupSize = InterleavedLayout.rowsPerGroup
            let first = (max(0, lower) + groupSize - 1) / groupSize, last = (max(0, upper) + groupSize - 1) / groupSize
            if lower < upper && first < last {
                interleavedMatMul(layout, weights: s.weights, groups: first..<last, act: act, out: s.out, outStride: s.outStride)
                s.corrections?.apply(rows: (first * groupSize)..<min(s.rows, last * groupSize), out: s.out, outStride: s.outStride)
            }
        } else if lower < upper {
            quantizedMatMul(s.format, weights: s.weights, rowBytes: s.rowBytes, outputs: lower..<upper,
                            act: act, out: s.out, outStride: s.outStride)
            s.corrections?.apply(rows: lower..<upper, out: s.out, outStride: s.outStride)
        }
        offset += s.rows
    }
}

/// A few weights kept exactly beside quantized ones (LLM-MQ's sparse outliers), in compressed rows:
/// row r's corrections are entries rowStart[r] ..< rowStart[r + 1], each a column and the difference
/// between the float weight and its quantized value, applied to the float input:
/// out[t][r] += Σ values[k] · x[t][columns[k]].
public struct SparseCorrections {
    public let rowStart: UnsafePointer<Int32>
    public let columns: UnsafePointer<Int32>
    public let values: UnsafePointer<Float>
    public let x: UnsafePointer<Float>
    public let xStride: Int
    public let tokens: Int

    public init(rowStart: UnsafePointer<Int32>, columns: UnsafePointer<Int32>, values: UnsafePointer<Float>,
                x: UnsafePointer<Float>, xStride: Int, tokens: Int) {
        self.rowStart = rowStart; self.columns = columns; self.values = values
        self.x = x; self.xStride = xStride; self.tokens = tokens
    }

    /// Adds the corrections of `rows` for every token (each row's sum in column order, then added once).
    @inline(__always)
    public func apply(rows: Range<Int>, out: UnsafeMutablePointer<Float>, outStride: Int) {
        for t in 0..<tokens {
            let input = x + t * xStride, output = out + t * outStride
            for r in rows {
                let start = Int(rowStart[r]), end = Int(rowStart[r + 1])
                guard start < end else { continue }
                var sum: Float = 0
                for k in start..<end { sum += values[k] * input[Int(columns[k])] }
                output[r] += sum
            }
        }
    }
}
