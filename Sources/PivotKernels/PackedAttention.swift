/// One KV head of a compressed cache, as attention reads it. A position is in one of three places:
/// - pivots: positions 0..<pivots, F32 and never quantized (IntactKV);
/// - packed: keys per channel in groups of `group` tokens from position `pivots` on, values per token
///   (`PackedCodeFormat`), read up to the boundaries the caller gives for the query;
/// - the F16 ring: everything newer than the boundaries (KIVI's full-precision window), slot
///   `position % ringSize`.
/// With no format (an F16 cache) the ring holds every position and the boundaries are `pivots`.
public struct PackedHead {
    public var headDim: Int
    public var format: PackedCodeFormat?
    public var group: Int
    public var pivots: Int
    public var pivotKeys: UnsafePointer<Float>
    public var pivotValues: UnsafePointer<Float>
    /// Key group m (positions pivots + m·group ..< +group) at m·keyGroupBytes: channel c's octets at c·bytes(codes: group).
    public var keyCodes: UnsafeRawPointer
    /// Per key group: `headDim` F16 scales / minimums.
    public var keyScales: UnsafePointer<UInt16>
    public var keyMinimums: UnsafePointer<UInt16>
    /// Value of position j at (j − pivots)·valueRowBytes.
    public var valueCodes: UnsafeRawPointer
    /// Per value token: headDim/group F16 scales / minimums.
    public var valueScales: UnsafePointer<UInt16>
    public var valueMinimums: UnsafePointer<UInt16>
    public var ringKeys: UnsafePointer<UInt16>
    public var ringValues: UnsafePointer<UInt16>
    public var ringSize: Int
    /// OTT: positions (ascending) whose keys are these F16 rows instead of their group's codes.
    public var outlierPositions: UnsafePointer<Int32>?
    public var outlierKeys: UnsafePointer<UInt16>?
    public var outlierCount: Int

    public init(headDim: Int, format: PackedCodeFormat?, group: Int, pivots: Int,
                pivotKeys: UnsafePointer<Float>, pivotValues: UnsafePointer<Float>,
                keyCodes: UnsafeRawPointer, keyScales: UnsafePointer<UInt16>, keyMinimums: UnsafePointer<UInt16>,
                valueCodes: UnsafeRawPointer, valueScales: UnsafePointer<UInt16>, valueMinimums: UnsafePointer<UInt16>,
                ringKeys: UnsafePointer<UInt16>, ringValues: UnsafePointer<UInt16>, ringSize: Int,
                outlierPositions: UnsafePointer<Int32>? = nil, outlierKeys: UnsafePointer<UInt16>? = nil, outlierCount: Int = 0) {
        self.headDim = headDim; self.format = format; self.group = group; self.pivots = pivots
        self.pivotKeys = pivotKeys; self.pivotValues = pivotValues
        self.keyCodes = keyCodes; self.keyScales = keyScales; self.keyMinimums = keyMinimums
        self.valueCodes = valueCodes; self.valueScales = valueScales; self.valueMinimums = valueMinimums
        self.ringKeys = ringKeys; self.ringValues = ringValues; self.ringSize = ringSize
        self.outlierPositions = outlierPositions; self.outlierKeys = outlierKeys; self.outlierCount = outlierCount
    }

    var keyChannelBytes: Int { format.map { $0.bytes(codes: group) } ?? 0 }
    public var keyGroupBytes: Int { headDim * keyChannelBytes }
    public var valueRowBytes: Int { format.map { $0.bytes(codes: headDim) } ?? 0 }
}

/// Scratch of one attention work item.
public struct AttentionScratch {
    public static let tileTokens = 32
    /// Most query heads one pass of the kernels serves (their accumulators stay in registers).
    static let headChunk = 4
    public let scores: UnsafeMutablePointer<Float>
    public let scoreStride: Int
    let tile: UnsafeMutablePointer<Float>
    let scaledQuery: UnsafeMutablePointer<Float>
    let weights: UnsafeMutablePointer<Float>
    let offsets: UnsafeMutablePointer<Float>
    let totals: UnsafeMutablePointer<Float>

    /// `base` holds `floats(...)`; scores take `heads` rows of `scoreStride`.
    public init(base: UnsafeMutablePointer<Float>, heads: Int, scoreStride: Int, headDim d: Int) {
        scores = base
        self.scoreStride = scoreStride
        tile = base + heads * scoreStride
        scaledQuery = tile + Self.tileTokens * d
        weights = scaledQuery + Self.headChunk * d
        offsets = weights + Self.tileTokens * Self.headChunk * d
        totals = offsets + Self.headChunk * d
    }

    public static func floats(heads: Int, scoreStride: Int, headDim d: Int) -> Int {
        heads * scoreStride + tileTokens * d + headChunk * d + tileTokens * headChunk * d + headChunk * d + heads
    }
}

/// softmax(q·Kᵀ·scale)·V for `heads` query heads that share one KV head (GQA), one query that sees
/// `count` positions, reading `positions` of them (all of 0..<count, or one slice of a split query;
/// a slice starts at 0 or at a key-group boundary). Keys of [pivots, keyBoundary) and values of
/// [pivots, valueBoundary) are read from codes, newer ones from the ring: the caller passes the
/// boundaries the cache had when this query was generated, so a batch scores each token as
/// token-by-token decoding would. Codes are widened in registers and serve every head of the group.
///
/// `queries`/`out`: heads × headDim, heads adjacent. With `partial` nil, `out` is the attention output;
/// otherwise it is Σ exp(s − m)·v over the slice and partial[2h], partial[2h+1] get m and Σ exp(s − m),
/// to be merged with `mergePartials`.
public func attendPacked(_ head: PackedHead, queries: UnsafePointer<Float>, heads: Int, positions: Range<Int>, count: Int,
                         keyBoundary: Int, valueBoundary: Int, scale: Float, scratch: AttentionScratch,
                         out: UnsafeMutablePointer<Float>, partial: UnsafeMutablePointer<Float>? = nil) {
    let d = head.headDim, stride = scratch.scoreStride, tile = scratch.tile
    let from = positions.lowerBound, to = positions.upperBound, pivotEnd = min(head.pivots, to)
    let scores = scratch.scores - from   // scores[h·stride + j] for j in positions
    if d == 64, from < pivotEnd {
        scoreRows64(queries, heads: heads, rows: head.pivotKeys + from * d, count: pivotEnd - from, scale: scale,
                    scores: scores + from, scoreStride: stride)
    } else {
        for j in min(from, pivotEnd)..<pivotEnd {
            for h in 0..<heads { scores[h * stride + j] = dotF32(queries + h * d, head.pivotKeys + j * d, count: d) * scale }
        }
    }
    let codedKeyEnd = min(to, keyBoundary)
    if let format = head.format, codedKeyEnd > max(from, head.pivots) {
        let first = (max(from, head.pivots) - head.pivots) / head.group, last = (codedKeyEnd - head.pivots) / head.group
        for h0 in Swift.stride(from: 0, to: heads, by: AttentionScratch.headChunk) {
            codedKeyScores(head, format: format, queries: queries + h0 * d, heads: min(AttentionScratch.headChunk, heads - h0),
                           groups: first..<last, scale: scale, scratch: scratch, scores: scores + h0 * stride)
        }
        if let positions = head.outlierPositions, let keys = head.outlierKeys {
            let low = first * head.group + head.pivots
            for i in 0..<head.outlierCount {
                let j = Int(positions[i])
                guard j >= low else { continue }
                guard j < codedKeyEnd else { break }
                loadHalf(keys + i * d, into: tile, count: d)
                for h in 0..<heads { scores[h * stride + j] = dotF32(queries + h * d, tile, count: d) * scale }
            }
        }
    }
    var ringStart = min(to, max(from, pivotEnd, keyBoundary))
    while d == 64, ringStart < to {
        // Keys widened a tile at a time, then scored four per pass.
        let rows = min(AttentionScratch.tileTokens, to - ringStart)
        for r in 0..<rows { loadHalf(head.ringKeys + ((ringStart + r) % head.ringSize) * d, into: tile + r * d, count: d) }
        scoreRows64(queries, heads: heads, rows: tile, count: rows, scale: scale, scores: scores + ringStart, scoreStride: stride)
        ringStart += rows
    }
    for j in ringStart..<to {
        loadHalf(head.ringKeys + (j % head.ringSize) * d, into: tile, count: d)
        for h in 0..<heads { scores[h * stride + j] = dotF32(queries + h * d, tile, count: d) * scale }
    }
    for h in 0..<heads {
        let e = exponentiateInPlace(scores + h * stride + from, count: to - from)
        scratch.totals[h] = e.total
        if let partial { partial[2 * h] = e.largest; partial[2 * h + 1] = e.total }
    }

    out.update(repeating: 0, count: heads * d)
    if pivotEnd > from { accumulate(head.pivotValues + from * d, rows: pivotEnd - from, scores: scores + from, heads: heads, headDim: d, scoreStride: stride, out: out) }
    var j = max(from, pivotEnd)
    if let format = head.format, min(to, valueBoundary) > j {
        let end = min(to, valueBoundary)
        for h0 in Swift.stride(from: 0, to: heads, by: AttentionScratch.headChunk) {
            codedValues(head, format: format, heads: min(AttentionScratch.headChunk, heads - h0), positions: j..<end,
                        scores: scores + h0 * stride, scoreStride: stride, scratch: scratch, out: out + h0 * d)
        }
        j = end
    }
    while j < to {
        let rows = min(AttentionScratch.tileTokens, to - j)
        for r in 0..<rows { loadHalf(head.ringValues + ((j + r) % head.ringSize) * d, into: tile + r * d, count: d) }
        accumulate(tile, rows: rows, scores: scores + j, heads: heads, headDim: d, scoreStride: stride, out: out)
        j += rows
    }
    guard partial == nil else { return }
    for h in 0..<heads {
        let inverse = SIMD8<Float>(repeating: 1 / scratch.totals[h]), o = out + h * d
        var c = 0
        while c + 8 <= d { store8(load8(o + c) * inverse, o + c); c += 8 }
        while c < d { o[c] *= inverse[0]; c += 1 }
    }
}

/// Merges `slices` partial results (from `attendPacked(partial:)`) of `heads` heads into normalized outputs:
/// out = Σ e^(m_s − M)·o_s / Σ e^(m_s − M)·l_s.
public func mergePartials(_ outputs: UnsafePointer<Float>, partials: UnsafePointer<Float>, slices: Int, sliceStride: Int,
                          partialStride: Int, heads: Int, headDim d: Int, into out: UnsafeMutablePointer<Float>) {
    for h in 0..<heads {
        var top = -Float.infinity
        for s in 0..<slices { top = max(top, partials[s * partialStride + 2 * h]) }
        var total: Float = 0
        let o = out + h * d
        o.update(repeating: 0, count: d)
        for s in 0..<slices {
            let w = fastExp(partials[s * partialStride + 2 * h] - top)
            total += w * partials[s * partialStride + 2 * h + 1]
            axpyF32(w, outputs + s * sliceStride + h * d, o, count: d)
        }
        let inverse = 1 / total
        for c in 0..<d { o[c] *= inverse }
    }
}

/// out_h += Σ_r p_h[r] · rows[r] for every head (rows: F32, `headDim` apart).
@inline(__always)
func accumulate(_ rows: UnsafePointer<Float>, rows count: Int, scores: UnsafePointer<Float>, heads: Int, headDim d: Int,
                scoreStride: Int, out: UnsafeMutablePointer<Float>) {
    if d == 64 {
        accumulateRows64(rows, weights: scores, weightStride: scoreStride, heads: heads, count: count, into: out)
        return
    }
    for h in 0..<heads {
        let p = scores + h * scoreStride, o = out + h * d
        for r in 0..<count { axpyF32(p[r], rows + r * d, o, count: d) }
    }
}
