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

    public init(headDim: Int, format: PackedCodeFormat?, group: Int, pivots: Int,
                pivotKeys: UnsafePointer<Float>, pivotValues: UnsafePointer<Float>,
                keyCodes: UnsafeRawPointer, keyScales: UnsafePointer<UInt16>, keyMinimums: UnsafePointer<UInt16>,
                valueCodes: UnsafeRawPointer, valueScales: UnsafePointer<UInt16>, valueMinimums: UnsafePointer<UInt16>,
                ringKeys: UnsafePointer<UInt16>, ringValues: UnsafePointer<UInt16>, ringSize: Int) {
        self.headDim = headDim; self.format = format; self.group = group; self.pivots = pivots
        self.pivotKeys = pivotKeys; self.pivotValues = pivotValues
        self.keyCodes = keyCodes; self.keyScales = keyScales; self.keyMinimums = keyMinimums
        self.valueCodes = valueCodes; self.valueScales = valueScales; self.valueMinimums = valueMinimums
        self.ringKeys = ringKeys; self.ringValues = ringValues; self.ringSize = ringSize
    }

    var keyChannelBytes: Int { format.map { $0.bytes(codes: group) } ?? 0 }
    public var keyGroupBytes: Int { headDim * keyChannelBytes }
    public var valueRowBytes: Int { format.map { $0.bytes(codes: headDim) } ?? 0 }
}

/// Scratch of one attention work item: scores for `heads` rows of `scoreStride`, and small tiles.
public struct AttentionScratch {
    public static let tileTokens = 32
    public let scores: UnsafeMutablePointer<Float>
    public let scoreStride: Int
    /// max(group, tileTokens) × headDim floats.
    public let tile: UnsafeMutablePointer<Float>
    /// headDim floats.
    public let scaledQuery: UnsafeMutablePointer<Float>

    public init(scores: UnsafeMutablePointer<Float>, scoreStride: Int, tile: UnsafeMutablePointer<Float>, scaledQuery: UnsafeMutablePointer<Float>) {
        self.scores = scores; self.scoreStride = scoreStride; self.tile = tile; self.scaledQuery = scaledQuery
    }

    public static func floats(heads: Int, capacity: Int, headDim: Int, group: Int) -> Int {
        heads * capacity + max(group, tileTokens) * headDim + headDim
    }
}

/// softmax(q·Kᵀ·scale)·V for `heads` query heads that share one KV head (GQA), one query position whose
/// keys are visible up to `count`. Keys of [pivots, keyBoundary) and values of [pivots, valueBoundary)
/// are read packed, newer ones from the ring: the caller picks the boundaries the cache had when this
/// query was generated, so a batch scores each token as token-by-token decoding would.
/// Packed data is widened a tile at a time in L1 (never an F32 copy of the cache) and each tile
/// serves every head of the group. `queries` and `out`: heads × headDim floats, heads adjacent.
public func attendPacked(_ head: PackedHead, queries: UnsafePointer<Float>, heads: Int, count: Int,
                         keyBoundary: Int, valueBoundary: Int, scale: Float, scratch: AttentionScratch,
                         out: UnsafeMutablePointer<Float>) {
    let d = head.headDim, stride = scratch.scoreStride, tile = scratch.tile
    let pivots = min(head.pivots, count)
    for j in 0..<pivots {
        for h in 0..<heads { scratch.scores[h * stride + j] = dotF32(queries + h * d, head.pivotKeys + j * d, count: d) * scale }
    }
    if let format = head.format, keyBoundary > pivots {
        packedKeyScores(head, format: format, queries: queries, heads: heads, groups: (keyBoundary - pivots) / head.group,
                        scale: scale, scratch: scratch)
    }
    for j in max(pivots, keyBoundary)..<count {
        loadHalf(head.ringKeys + (j % head.ringSize) * d, into: tile, count: d)
        for h in 0..<heads { scratch.scores[h * stride + j] = dotF32(queries + h * d, tile, count: d) * scale }
    }
    for h in 0..<heads { softmaxInPlace(scratch.scores + h * stride, count: count) }

    out.update(repeating: 0, count: heads * d)
    if pivots > 0 { accumulate(head.pivotValues, rows: pivots, from: 0, heads: heads, headDim: d, scratch: scratch, out: out) }
    var j = pivots
    if let format = head.format {
        while j < valueBoundary {
            let rows = min(AttentionScratch.tileTokens, valueBoundary - j)
            dequantizeValues(head, format: format, from: j, rows: rows, into: tile)
            accumulate(tile, rows: rows, from: j, heads: heads, headDim: d, scratch: scratch, out: out)
            j += rows
        }
    }
    while j < count {
        let rows = min(AttentionScratch.tileTokens, count - j)
        for r in 0..<rows { loadHalf(head.ringValues + ((j + r) % head.ringSize) * d, into: tile + r * d, count: d) }
        accumulate(tile, rows: rows, from: j, heads: heads, headDim: d, scratch: scratch, out: out)
        j += rows
    }
}

/// Scores of whole packed key groups: per group, codes widened once into a channel-major tile, then per
/// head q∘scale against the codes plus q·minimum, eight tokens per vector.
@inline(__always)
func packedKeyScores(_ head: PackedHead, format: PackedCodeFormat, queries: UnsafePointer<Float>, heads: Int,
                     groups: Int, scale: Float, scratch: AttentionScratch) {
    let d = head.headDim, g = head.group, octets = g / 8, channelBytes = head.keyChannelBytes
    let tile = scratch.tile, scaled = scratch.scaledQuery
    for m in 0..<groups {
        let codes = head.keyCodes + m * head.keyGroupBytes
        for c in 0..<d {
            for o in 0..<octets { store8(format.unpack(codes + c * channelBytes + o * format.bits), tile + c * g + o * 8) }
        }
        let scales = UnsafeRawPointer(head.keyScales + m * d), minimums = UnsafeRawPointer(head.keyMinimums + m * d)
        for h in 0..<heads {
            let q = queries + h * d
            var offsetSum = SIMD8<Float>()
            var c = 0
            while c + 8 <= d {
                let qv = load8(q + c) * scale
                store8(qv * loadHalf8(scales, c, .f16), scaled + c)
                offsetSum = offsetSum.addingProduct(qv, loadHalf8(minimums, c, .f16))
                c += 8
            }
            var offset = horizontalAdd(offsetSum)
            while c < d {
                scaled[c] = q[c] * scale * halfToFloat(scales, c, .f16)
                offset += q[c] * scale * halfToFloat(minimums, c, .f16)
                c += 1
            }
            let row = scratch.scores + h * scratch.scoreStride + head.pivots + m * g
            var o = 0
            while o + 4 <= octets {
                let base = tile + o * 8
                var a0 = SIMD8<Float>(repeating: offset), a1 = a0, a2 = a0, a3 = a0
                for c in 0..<d {
                    let s = SIMD8<Float>(repeating: scaled[c]), t = base + c * g
                    a0 = a0.addingProduct(s, load8(t)); a1 = a1.addingProduct(s, load8(t + 8))
                    a2 = a2.addingProduct(s, load8(t + 16)); a3 = a3.addingProduct(s, load8(t + 24))
                }
                store8(a0, row + o * 8); store8(a1, row + o * 8 + 8); store8(a2, row + o * 8 + 16); store8(a3, row + o * 8 + 24)
                o += 4
            }
            while o < octets {
                var a = SIMD8<Float>(repeating: offset)
                for c in 0..<d { a = a.addingProduct(SIMD8(repeating: scaled[c]), load8(tile + c * g + o * 8)) }
                store8(a, row + o * 8)
                o += 1
            }
        }
    }
}

/// Packed values of positions j..<j+rows widened to floats: scale·code + minimum per channel group.
@inline(__always)
func dequantizeValues(_ head: PackedHead, format: PackedCodeFormat, from j: Int, rows: Int, into tile: UnsafeMutablePointer<Float>) {
    let d = head.headDim, groupsPerRow = d / head.group, octetsPerGroup = head.group / 8
    for r in 0..<rows {
        let index = j + r - head.pivots
        let codes = head.valueCodes + index * head.valueRowBytes
        let scales = head.valueScales + index * groupsPerRow, minimums = head.valueMinimums + index * groupsPerRow
        for g in 0..<groupsPerRow {
            let s = SIMD8<Float>(repeating: Float(Float16(bitPattern: scales[g])))
            let z = SIMD8<Float>(repeating: Float(Float16(bitPattern: minimums[g])))
            for o in 0..<octetsPerGroup {
                let octet = g * octetsPerGroup + o
                store8(z.addingProduct(s, format.unpack(codes + octet * format.bits)), tile + r * d + octet * 8)
            }
        }
    }
}

/// out_h += Σ_r p_h[j + r] · rows[r] for every head.
@inline(__always)
func accumulate(_ rows: UnsafePointer<Float>, rows count: Int, from j: Int, heads: Int, headDim d: Int,
                scratch: AttentionScratch, out: UnsafeMutablePointer<Float>) {
    for h in 0..<heads {
        let p = scratch.scores + h * scratch.scoreStride + j, o = out + h * d
        guard d == 64 else {
            for r in 0..<count { axpyF32(p[r], rows + r * d, o, count: d) }
            continue
        }
        var o0 = load8(o), o1 = load8(o + 8), o2 = load8(o + 16), o3 = load8(o + 24)
        var o4 = load8(o + 32), o5 = load8(o + 40), o6 = load8(o + 48), o7 = load8(o + 56)
        for r in 0..<count {
            let w = SIMD8<Float>(repeating: p[r]), v = rows + r * 64
            o0 = o0.addingProduct(w, load8(v)); o1 = o1.addingProduct(w, load8(v + 8))
            o2 = o2.addingProduct(w, load8(v + 16)); o3 = o3.addingProduct(w, load8(v + 24))
            o4 = o4.addingProduct(w, load8(v + 32)); o5 = o5.addingProduct(w, load8(v + 40))
            o6 = o6.addingProduct(w, load8(v + 48)); o7 = o7.addingProduct(w, load8(v + 56))
        }
        store8(o0, o); store8(o1, o + 8); store8(o2, o + 16); store8(o3, o + 24)
        store8(o4, o + 32); store8(o5, o + 40); store8(o6, o + 48); store8(o7, o + 56)
    }
}
