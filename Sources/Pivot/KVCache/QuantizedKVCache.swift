import PivotKernels

/// F32, F16 and KIVI caches: attention runs on the stored form (`attendPacked`), never on an F32 copy.
/// (F32 stores every position as an exact "pivot"; `DenseKVCache` remains for tools that read entries.)
///
/// KIVI as specified here: keys are quantized per channel over groups of G tokens, values per token over
/// groups of G channels; at least the newest R tokens keep F16 keys and values. Values leave the window
/// one token at a time; keys a whole group at a time once R + G keys are waiting (so between R and
/// R + G − 1 keys are F16; KIVI's reference flushes its whole residual and keeps 0…R − 1). The first P
/// positions are pivots, F32 and never quantized.
///
/// Every token's codes are written as soon as its data is complete (values at once, keys when their
/// group fills), and the F16 ring keeps the last `maxBatch + R + G` tokens. A query then reads what the
/// cache held when it was generated: in a batch, query t takes keys/values older than *its own*
/// boundaries from the codes and newer ones from the ring. So one batched pass scores every token
/// exactly as token-by-token decoding would, and rolling back up to `maxBatch` tokens is exact.
/// A longer rollback refills the window from the codes (dequantized): defined, but not exact.
public final class QuantizedKVCache: KVCache {
    public let shape: AttentionShape
    public let capacity: Int
    public let spec: KVCacheSpec
    public private(set) var length = 0
    let format: PackedCodeFormat?
    let pivots: Int, group: Int, window: Int, ringSize: Int
    /// Where decode slices are counted from: after the pivots (cheap F32 rows) for KIVI, 0 for F32.
    let sliceBase: Int
    let keyGroupBytes: Int, valueRowBytes: Int, maxKeyGroups: Int, packedCapacity: Int
    let pivotKeys: FloatBuffer, pivotValues: FloatBuffer
    let ringKeys: HalfBuffer, ringValues: HalfBuffer
    let keyCodes: RawBuffer, keyScales: HalfBuffer, keyMinimums: HalfBuffer
    let valueCodes: RawBuffer, valueScales: HalfBuffer, valueMinimums: HalfBuffer
    /// Per layer: key groups and value tokens that have codes.
    var packedKeyGroups: [Int], packedValues: [Int]
    /// Ring slots hold exact data for positions ringValidFrom..<length.
    var ringValidFrom = 0
    let gather: FloatBuffer
    /// OTT's outlier keys, when `--outlier-tokens` is set.
    let outliers: OutlierTokenPool?
    let scratch: FloatBuffer
    let scratchFloats: Int
    static let queryBlock = 16
    /// A decode step splits each head's positions into up to this many slices (merged afterwards), so
    /// two threads share three KV heads evenly at long context.
    static let maxSlices = 8
    static let minimumSlice = 256
    private lazy var attentionJob = PackedAttentionJob(cache: self)

    /// KIVI's settings (pivots at least the `pivots` asked for); nil for F32 and F16, which keep every
    /// position exact or in the ring.
    let kivi: KIVISettings?

    /// `spec` is `.f32`, `.f16` or `.kivi` (CSKV has its own cache). The first `pivots` positions are
    /// kept F32 whatever the spec (IntactKV's prefix, see `PivotedKVCache`).
    public init(shape: AttentionShape, capacity: Int, maxBatch: Int, spec: KVCacheSpec, pivots lossless: Int = 0) {
        self.shape = shape; self.capacity = capacity; self.spec = spec
        if case .kivi(var settings) = spec {
            settings.pivots = max(settings.pivots, lossless)
            kivi = settings
        } else { kivi = nil }
        precondition(kivi != nil || spec == .f32 || spec == .f16, "QuantizedKVCache holds F32, F16 or KIVI caches")
        let d = shape.headDim, heads = shape.layers * shape.kvHeads
        let format = kivi.map { PackedCodeFormat(bits: $0.bits) }
        self.format = format
        // An F32 cache is all pivots: every position exact F32, read by the same grouped, sliced kernels.
        let exact = spec == .f32
        pivots = kivi.map { min($0.pivots, capacity) } ?? (exact ? capacity : min(lossless, capacity))
        sliceBase = exact ? 0 : pivots
        let group = kivi?.group ?? 8
        self.group = group
        window = kivi?.window ?? KIVISettings.defaultWindow
        ringSize = kivi.map { min(capacity, maxBatch + $0.window + $0.group) } ?? (exact ? 1 : capacity)
        let quantized = kivi != nil
        packedCapacity = quantized ? capacity - pivots : 0
        maxKeyGroups = packedCapacity / group
        keyGroupBytes = format.map { d * $0.bytes(codes: group) } ?? 0
        valueRowBytes = format.map { $0.bytes(codes: d) } ?? 0
        pivotKeys = FloatBuffer(count: heads * pivots * d)
        pivotValues = FloatBuffer(count: heads * pivots * d)
        ringKeys = HalfBuffer(count: heads * ringSize * d)
        ringValues = HalfBuffer(count: heads * ringSize * d)
        keyCodes = RawBuffer(bytes: heads * maxKeyGroups * keyGroupBytes + PackedCodeFormat.padding)
        keyScales = HalfBuffer(count: heads * maxKeyGroups * d)
        keyMinimums = HalfBuffer(count: heads * maxKeyGroups * d)
        valueCodes = RawBuffer(bytes: heads * packedCapacity * valueRowBytes + PackedCodeFormat.padding)
        valueScales = HalfBuffer(count: heads * packedCapacity * (d / group))
        valueMinimums = HalfBuffer(count: heads * packedCapacity * (d / group))
        packedKeyGroups = Array(repeating: 0, count: shape.layers)
        packedValues = Array(repeating: 0, count: shape.layers)
        gather = FloatBuffer(count: group * d)
        outliers = kivi.flatMap { $0.outlierTokens > 0 ? OutlierTokenPool(heads: heads, settings: $0, headDim: d) : nil }
        let groupHeads = shape.heads / shape.kvHeads
        // Per work item: the kernel's scratch, then a slice's unnormalized output and its (max, sum) per head.
        scratchFloats = AttentionScratch.floats(heads: groupHeads, scoreStride: capacity, headDim: d) + groupHeads * (d + 2)
        let items = shape.kvHeads * max(Self.maxSlices, (maxBatch + Self.queryBlock - 1) / Self.queryBlock)
        scratch = FloatBuffer(count: items * scratchFloats)
    }

    @inline(__always) func keyBoundary(count: Int) -> Int { kivi?.keyBoundary(count: count) ?? 0 }
    @inline(__always) func valueBoundary(count: Int) -> Int { kivi?.valueBoundary(count: count) ?? 0 }

    func head(layer: Int, kvHead: Int) -> PackedHead {
        let index = layer * shape.kvHeads + kvHead, d = shape.headDim
        return PackedHead(headDim: d, format: format, group: group, pivots: pivots,
                          pivotKeys: pivotKeys.pointer + index * pivots * d, pivotValues: pivotValues.pointer + index * pivots * d,
                          keyCodes: keyCodes.pointer + index * maxKeyGroups * keyGroupBytes,
                          keyScales: keyScales.pointer + index * maxKeyGroups * d,
                          keyMinimums: keyMinimums.pointer + index * maxKeyGroups * d,
                          valueCodes: valueCodes.pointer + index * packedCapacity * valueRowBytes,
                          valueScales: valueScales.pointer + index * packedCapacity * (d / group),
                          valueMinimums: valueMinimums.pointer + index * packedCapacity * (d / group),
                          ringKeys: ringKeys.pointer + index * ringSize * d, ringValues: ringValues.pointer + index * ringSize * d,
                          ringSize: ringSize,
                          outlierPositions: outliers.map { UnsafePointer($0.positions + index * $0.capacity) },
                          outlierKeys: outliers.map { UnsafePointer($0.keys.pointer + index * $0.capacity * d) },
                          outlierCount: outliers?.counts[index] ?? 0)
    }

    // MARK: Writing

    public func append(layer: Int, keys k: Matrix, values v: Matrix) {
        guard length + k.rows <= capacity else { fatalError("KV cache overflow: \(length) + \(k.rows) > \(capacity)") }
        guard format == nil || k.rows <= ringSize - window - group || ringSize == capacity else {
            fatalError("a pass of \(k.rows) tokens exceeds the cache's batch staging (made for \(ringSize - window - group))")
        }
        let d = shape.headDim
        for h in 0..<shape.kvHeads {
            let index = layer * shape.kvHeads + h
            for t in 0..<k.rows {
                let position = length + t
                if position < pivots {
                    (pivotKeys.pointer + (index * pivots + position) * d).update(from: k.row(t) + h * d, count: d)
                    (pivotValues.pointer + (index * pivots + position) * d).update(from: v.row(t) + h * d, count: d)
                } else {
                    let slot = (index * ringSize + position % ringSize) * d
                    storeHalf(k.row(t) + h * d, into: ringKeys.pointer + slot, count: d)
                    storeHalf(v.row(t) + h * d, into: ringValues.pointer + slot, count: d)
                }
            }
        }
        if format != nil { pack(layer: layer, upTo: length + k.rows) }
    }

    /// Codes for every value token and every complete key group below `end`, from the F16 ring (so the
    /// codes depend only on the stored data, not on how the tokens were batched).
    func pack(layer: Int, upTo end: Int) {
        guard let format else { return }
        let d = shape.headDim, groupsPerRow = d / group
        let values = max(0, end - pivots), keyGroups = values / group
        for h in 0..<shape.kvHeads {
            let head = head(layer: layer, kvHead: h)
            let ringK = UnsafeMutablePointer(mutating: head.ringKeys), ringV = UnsafeMutablePointer(mutating: head.ringValues)
            for i in packedValues[layer]..<values {
                loadHalf(ringV + ((pivots + i) % ringSize) * d, into: gather.pointer, count: d)
                format.quantizePerToken(gather.pointer, channels: d, group: group,
                                        codes: UnsafeMutableRawPointer(mutating: head.valueCodes) + i * valueRowBytes,
                                        scales: UnsafeMutablePointer(mutating: head.valueScales) + i * groupsPerRow,
                                        minimums: UnsafeMutablePointer(mutating: head.valueMinimums) + i * groupsPerRow)
            }
            for m in packedKeyGroups[layer]..<keyGroups {
                for t in 0..<group {
                    loadHalf(ringK + ((pivots + m * group + t) % ringSize) * d, into: gather.pointer + t * d, count: d)
                }
                let excluded = outliers?.pick(head: layer * shape.kvHeads + h, firstPosition: pivots + m * group,
                                              rows: gather.pointer, tokens: group)
                format.quantizePerChannel(gather.pointer, rowStride: d, tokens: group, channels: d,
                                          codes: UnsafeMutableRawPointer(mutating: head.keyCodes) + m * keyGroupBytes,
                                          scales: UnsafeMutablePointer(mutating: head.keyScales) + m * d,
                                          minimums: UnsafeMutablePointer(mutating: head.keyMinimums) + m * d, excluded: excluded)
            }
        }
        packedValues[layer] = values
        packedKeyGroups[layer] = keyGroups
    }

    /// The stored pivot key and value of one position (exact F32).
    public func pivot(layer: Int, kvHead: Int, position: Int) -> (key: [Float], value: [Float]) {
        let d = shape.headDim, at = ((layer * shape.kvHeads + kvHead) * pivots + position) * d
        return (Array(UnsafeBufferPointer(start: pivotKeys.pointer + at, count: d)), Array(UnsafeBufferPointer(start: pivotValues.pointer + at, count: d)))
    }

    public func advance(by tokens: Int) {
        length += tokens
        ringValidFrom = max(ringValidFrom, length - ringSize)
    }

    public func truncate(to newLength: Int) {
        let target = min(length, max(0, newLength))
        guard target < length else { return }
        if let format {
            let needed = max(pivots, min(keyBoundary(count: target), valueBoundary(count: target)))
            // Before un-packing. (With pivots, `needed` can exceed a short target: nothing to refill.)
            if needed < min(ringValidFrom, target) { refillRing(from: needed, to: min(ringValidFrom, target), format: format) }
            for layer in 0..<shape.layers {
                packedValues[layer] = min(packedValues[layer], max(0, target - pivots))
                packedKeyGroups[layer] = min(packedKeyGroups[layer], max(0, target - pivots) / group)
                for h in 0..<shape.kvHeads {
                    outliers?.drop(head: layer * shape.kvHeads + h, from: pivots + packedKeyGroups[layer] * group)
                }
            }
            ringValidFrom = min(ringValidFrom, needed)
        }
        length = target
    }

    /// A rollback longer than the ring: the window's positions come back from their codes.
    private func refillRing(from start: Int, to end: Int, format: PackedCodeFormat) {
        let d = shape.headDim, groupsPerRow = d / group, channelBytes = format.bytes(codes: group)
        for layer in 0..<shape.layers {
            for h in 0..<shape.kvHeads {
                let head = head(layer: layer, kvHead: h)
                for position in start..<end {
                    let i = position - pivots, m = i / group, slot = (position % ringSize) * d
                    let ringK = UnsafeMutablePointer(mutating: head.ringKeys) + slot
                    let ringV = UnsafeMutablePointer(mutating: head.ringValues) + slot
                    if let kept = outliers?.key(head: layer * shape.kvHeads + h, position: position) {
                        ringK.update(from: kept, count: d)
                    } else {
                        let octet = (i % group) / 8 * format.bits, lane = i % 8
                        for c in 0..<d {
                            let scale = Float(Float16(bitPattern: head.keyScales[m * d + c]))
                            let minimum = Float(Float16(bitPattern: head.keyMinimums[m * d + c]))
                            let code = format.unpack(head.keyCodes + m * keyGroupBytes + c * channelBytes + octet)[lane]
                            ringK[c] = Float16(scale * code + minimum).bitPattern
                        }
                    }
                    for c in 0..<d {
                        let s = Float(Float16(bitPattern: head.valueScales[i * groupsPerRow + c / group]))
                        let z = Float(Float16(bitPattern: head.valueMinimums[i * groupsPerRow + c / group]))
                        let code = format.unpack(head.valueCodes + i * valueRowBytes + c / 8 * format.bits)[c % 8]
                        ringV[c] = Float16(s * code + z).bitPattern
                    }
                }
            }
        }
    }

    // MARK: Reading

    public func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) {
        let job = attentionJob
        job.layer = layer
        job.queries = queries
        job.out = out
        job.start = length
        let visible = length + 1 - sliceBase
        if queries.rows == 1 && visible >= 2 * Self.minimumSlice {
            // One query: slices aligned to key groups, merged below.
            let unit = format == nil ? 8 : group
            let wanted = min(Self.maxSlices, visible / Self.minimumSlice)
            job.sliceLength = ((visible + wanted - 1) / wanted + unit - 1) / unit * unit
            job.slices = (visible + job.sliceLength - 1) / job.sliceLength
            pool.run(job, chunks: shape.kvHeads * job.slices)
            mergeSlices(job.slices, out: out)
        } else {
            job.slices = 0
            job.blocks = (queries.rows + Self.queryBlock - 1) / Self.queryBlock
            pool.run(job, chunks: shape.kvHeads * job.blocks)
        }
        job.queries = nil
        job.out = nil
    }

    private func mergeSlices(_ slices: Int, out: Matrix) {
        let heads = shape.heads / shape.kvHeads, d = shape.headDim
        for kvHead in 0..<shape.kvHeads {
            let first = sliceResult(item: kvHead)
            mergePartials(first.output, partials: first.stats, slices: slices, sliceStride: shape.kvHeads * scratchFloats,
                          partialStride: shape.kvHeads * scratchFloats, heads: heads, headDim: d, into: out.row(0) + kvHead * heads * d)
        }
    }

    /// Where work item `item` keeps its scratch, and a slice's output and statistics.
    func scratch(item: Int) -> AttentionScratch {
        AttentionScratch(base: scratch.pointer + item * scratchFloats, heads: shape.heads / shape.kvHeads, scoreStride: capacity, headDim: shape.headDim)
    }

    func sliceResult(item: Int) -> (output: UnsafeMutablePointer<Float>, stats: UnsafeMutablePointer<Float>) {
        let heads = shape.heads / shape.kvHeads
        let output = scratch.pointer + (item + 1) * scratchFloats - heads * (shape.headDim + 2)
        return (output, output + heads * shape.headDim)
    }

    /// Work items: (KV head, block of 16 queries), every query head of the group at once so codes are
    /// widened once for all of them; or for one query, (KV head, slice of positions).
    final class PackedAttentionJob: ParallelJob {
        unowned let cache: QuantizedKVCache
        var layer = 0, start = 0, blocks = 1, slices = 0, sliceLength = 0
        var queries: Matrix?
        var out: Matrix?

        init(cache: QuantizedKVCache) { self.cache = cache }

        func run(chunk item: Int) {
            guard let queries, let out else { return }
            let c = cache, shape = c.shape, d = shape.headDim
            let kvHead = item % shape.kvHeads, heads = shape.heads / shape.kvHeads
            let head = c.head(layer: layer, kvHead: kvHead), scratch = c.scratch(item: item)
            let scale = 1 / Float(d).squareRoot()
            if slices > 0 {
                let slice = item / shape.kvHeads, count = start + 1
                let lower = slice == 0 ? 0 : c.sliceBase + slice * sliceLength, upper = min(count, c.sliceBase + (slice + 1) * sliceLength)
                let result = c.sliceResult(item: item)
                attendPacked(head, queries: queries.row(0) + kvHead * heads * d, heads: heads, positions: lower..<upper, count: count,
                             keyBoundary: c.keyBoundary(count: count), valueBoundary: c.valueBoundary(count: count),
                             scale: scale, scratch: scratch, out: result.output, partial: result.stats)
                return
            }
            let block = item / shape.kvHeads
            for t in (block * QuantizedKVCache.queryBlock)..<min(queries.rows, (block + 1) * QuantizedKVCache.queryBlock) {
                let count = start + t + 1
                attendPacked(head, queries: queries.row(t) + kvHead * heads * d, heads: heads, positions: 0..<count, count: count,
                             keyBoundary: c.keyBoundary(count: count), valueBoundary: c.valueBoundary(count: count),
                             scale: scale, scratch: scratch, out: out.row(t) + kvHead * heads * d)
            }
        }
    }

    /// OTT pool entries of one layer and KV head (0 without outlier tokens).
    public func outlierCount(layer: Int, kvHead: Int) -> Int { outliers?.counts[layer * shape.kvHeads + kvHead] ?? 0 }

    public var bytesPerToken: Double { (kivi.map { KVCacheSpec.kivi($0) } ?? spec).bytes(atLength: capacity, shape: shape) / Double(capacity) }
}

/// F16 storage, 64-byte aligned, zeroed (large blocks lazily: `ZeroedMemory`).
final class HalfBuffer {
    let pointer: UnsafeMutablePointer<UInt16>
    private let bytes: Int
    init(count: Int) {
        bytes = max(1, count) * 2
        pointer = ZeroedMemory.allocate(bytes: bytes).bindMemory(to: UInt16.self, capacity: max(1, count))
    }
    deinit { ZeroedMemory.deallocate(UnsafeMutableRawPointer(pointer), bytes: bytes) }
}

/// Byte storage, 64-byte aligned, zeroed (large blocks lazily: `ZeroedMemory`).
final class RawBuffer {
    let pointer: UnsafeMutableRawPointer
    private let bytes: Int
    init(bytes: Int) {
        self.bytes = bytes
        pointer = ZeroedMemory.allocate(bytes: bytes)
    }
    deinit { ZeroedMemory.deallocate(pointer, bytes: bytes) }
}
