import PivotKernels

/// CSKV: each KV head stores its keys (before RoPE) and values as `rank` latent channels (see
/// `LowRankKVFactors`), F16 or 4-bit, plus the newest `window` tokens exactly (F32).
///
/// Where the algebra allows, the factor is absorbed: a head's value output Σ_j p_j·(D z_j) is computed as
/// D·(Σ_j p_j z_j), so values are summed in latent space and projected back once per query. Keys cannot
/// be absorbed into the query: RoPE rotates each key by its own position after the projection, so
/// q·R_j(D z_j) has no position-free form. Keys are therefore reconstructed (D z_j, then RoPE at j) once
/// per layer and pass for every position a query of the pass reads from latents, and scored like F32 keys.
///
/// Latents are written as soon as a token arrives and the ring keeps the last `maxBatch + window` exact
/// keys/values, so query t of a batch reads positions older than *its own* window from latents and the
/// rest exactly: batched scoring equals token-by-token decoding, and rollbacks of up to `maxBatch` tokens
/// are exact (longer ones refill the window from the latents). The first `pivots` positions are also kept
/// F32 and read from there, never from latents (IntactKV's prefix, see `PivotedKVCache`).
public final class LowRankKVCache: KVCache {
    public let shape: AttentionShape
    public let capacity: Int
    public let settings: CSKVSettings
    public private(set) var length = 0
    let plan: LowRankPlan
    let window: Int, ringSize: Int
    /// Exact keys (after RoPE) and values of positions 0..<pivots: [layer·kvHeads + head][position][headDim].
    let pivots: Int
    let pivotKeys: FloatBuffer, pivotValues: FloatBuffer
    /// Per vector v = (layer·kvHeads + head)·2 + (0 keys, 1 values).
    let formats: [LatentFormat]
    let recordOffsets: [Int]
    let latents: RawBuffer
    let ringKeys: FloatBuffer, ringValues: FloatBuffer
    /// This layer's keys rebuilt from latents with RoPE: [kvHead][position][headDim].
    let rebuilt: FloatBuffer
    let scratch: FloatBuffer
    let scratchFloats: Int
    let work: FloatBuffer
    /// Decode: per (KV head, span) a tile of rebuilt keys and its latent/rotation scratch.
    let tiles: FloatBuffer
    let tileFloats: Int
    let rope: RoPETable
    var ringValidFrom = 0
    static let queryBlock = 16
    static let rebuildChunk = 64
    /// Decode splits each head's latent positions into up to this many spans.
    static let maxSpans = 8
    private lazy var rebuildJob = RebuildJob(cache: self)
    private lazy var attentionJob = LatentAttentionJob(cache: self)

    public init(shape: AttentionShape, capacity: Int, maxBatch: Int, settings: CSKVSettings, plan: LowRankPlan, pivots: Int = 0) {
        precondition(plan.factors.layers == shape.layers && plan.factors.kvHeads == shape.kvHeads && plan.factors.headDim == shape.headDim,
                     "CSKV factors of another model shape")
        self.shape = shape; self.capacity = capacity; self.settings = settings; self.plan = plan
        let d = shape.headDim, heads = shape.layers * shape.kvHeads
        window = min(settings.window, capacity)
        ringSize = min(capacity, maxBatch + window)
        self.pivots = min(pivots, capacity)
        pivotKeys = FloatBuffer(count: heads * self.pivots * d)
        pivotValues = FloatBuffer(count: heads * self.pivots * d)
        formats = plan.ranks.map { LatentFormat(rank: $0, bits: plan.latentBits) }
        var offsets: [Int] = [], total = 0
        for f in formats { offsets.append(total); total += f.recordBytes * capacity }
        recordOffsets = offsets
        latents = RawBuffer(bytes: total + PackedCodeFormat.padding)
        ringKeys = FloatBuffer(count: heads * ringSize * d)
        ringValues = FloatBuffer(count: heads * ringSize * d)
        rebuilt = FloatBuffer(count: shape.kvHeads * capacity * d)
        scratchFloats = capacity + 2 * d
        let items = max(shape.heads * ((maxBatch + Self.queryBlock - 1) / Self.queryBlock), shape.kvHeads * ((capacity + Self.rebuildChunk - 1) / Self.rebuildChunk))
        scratch = FloatBuffer(count: items * scratchFloats)
        work = FloatBuffer(count: 3 * d)
        tileFloats = Self.rebuildChunk * d + 2 * d
        tiles = FloatBuffer(count: shape.kvHeads * Self.maxSpans * tileFloats)
        rope = plan.rope.makeTable(positions: capacity)
    }

    @inline(__always) func record(_ v: Int, _ position: Int) -> UnsafeMutableRawPointer {
        latents.pointer + recordOffsets[v] + position * formats[v].recordBytes
    }

    @inline(__always) func pivot(_ buffer: FloatBuffer, _ index: Int, _ position: Int) -> UnsafeMutablePointer<Float> {
        buffer.pointer + (index * pivots + position) * shape.headDim
    }

    @inline(__always) func ring(_ buffer: FloatBuffer, _ index: Int, _ position: Int) -> UnsafeMutablePointer<Float> {
        buffer.pointer + (index * ringSize + position % ringSize) * shape.headDim
    }

    // MARK: Writing

    public func append(layer: Int, keys k: Matrix, values v: Matrix) {
        guard length + k.rows <= capacity else { fatalError("KV cache overflow: \(length) + \(k.rows) > \(capacity)") }
        guard k.rows <= ringSize - window || ringSize == capacity else {
            fatalError("a pass of \(k.rows) tokens exceeds the cache's batch staging (made for \(ringSize - window))")
        }
        let d = shape.headDim, preRoPE = work.pointer, z = work.pointer + d, rotation = work.pointer + 2 * d
        let rotated = plan.rope.layers[layer]
        for h in 0..<shape.kvHeads {
            let index = layer * shape.kvHeads + h
            for t in 0..<k.rows {
                let position = length + t, key = k.row(t) + h * d, value = v.row(t) + h * d
                ring(ringKeys, index, position).update(from: key, count: d)
                ring(ringValues, index, position).update(from: value, count: d)
                if position < pivots {
                    pivot(pivotKeys, index, position).update(from: key, count: d)
                    pivot(pivotValues, index, position).update(from: value, count: d)
                }
                preRoPE.update(from: key, count: d)
                if rotated { rope.rotate(preRoPE, position: position, interleaved: plan.rope.interleaved, inverse: true, scratch: rotation) }
                formats[2 * index].encode(preRoPE, encoder: plan.encoder(2 * index), headDim: d, z: z, into: record(2 * index, position))
                formats[2 * index + 1].encode(value, encoder: plan.encoder(2 * index + 1), headDim: d, z: z, into: record(2 * index + 1, position))
            }
        }
    }

    public func advance(by tokens: Int) {
        length += tokens
        ringValidFrom = max(ringValidFrom, length - ringSize)
    }

    public func truncate(to newLength: Int) {
        let target = min(length, max(0, newLength))
        guard target < length else { return }
        let needed = max(0, target - window)
        if needed < min(ringValidFrom, target) { refillRing(from: needed, to: min(ringValidFrom, target)) }
        ringValidFrom = min(ringValidFrom, needed)
        length = target
    }

    /// A rollback longer than the ring: the window's keys/values come back from their latents.
    private func refillRing(from start: Int, to end: Int) {
        let d = shape.headDim, z = work.pointer + d, rotation = work.pointer + 2 * d
        for layer in 0..<shape.layers {
            for h in 0..<shape.kvHeads {
                let index = layer * shape.kvHeads + h
                for position in start..<end {
                    let key = ring(ringKeys, index, position)
                    if position < pivots {
                        key.update(from: pivot(pivotKeys, index, position), count: d)
                        ring(ringValues, index, position).update(from: pivot(pivotValues, index, position), count: d)
                        continue
                    }
                    formats[2 * index].decode(record(2 * index, position), into: z)
                    reconstruct(z, rank: formats[2 * index].rank, decoder: plan.decoder(2 * index), headDim: d, into: key)
                    if plan.rope.layers[layer] { rope.rotate(key, position: position, interleaved: plan.rope.interleaved, inverse: false, scratch: rotation) }
                    formats[2 * index + 1].decode(record(2 * index + 1, position), into: z)
                    reconstruct(z, rank: formats[2 * index + 1].rank, decoder: plan.decoder(2 * index + 1), headDim: d, into: ring(ringValues, index, position))
                }
            }
        }
    }

    // MARK: Reading

    public func attend(layer: Int, queries: Matrix, into out: Matrix, pool: ThreadPool) {
        // Positions below `latentEnd` are read from latents by at least the batch's last query.
        let latentEnd = max(0, length + queries.rows - window)
        let decode = queries.rows == 1
        if latentEnd > 0 {
            let rebuild = rebuildJob
            rebuild.layer = layer
            rebuild.end = latentEnd
            if decode {
                // One query: keys are rebuilt a tile at a time and scored at once (never written out).
                rebuild.query = UnsafePointer(queries.row(0))
                let spans = min(Self.maxSpans, (latentEnd + 255) / 256)
                rebuild.spanLength = ((latentEnd + spans - 1) / spans + Self.rebuildChunk - 1) / Self.rebuildChunk * Self.rebuildChunk
                rebuild.chunks = (latentEnd + rebuild.spanLength - 1) / rebuild.spanLength
            } else {
                rebuild.query = nil
                rebuild.chunks = (latentEnd + Self.rebuildChunk - 1) / Self.rebuildChunk
            }
            pool.run(rebuild, chunks: shape.kvHeads * rebuild.chunks)
            rebuild.query = nil
        }
        let job = attentionJob
        job.latentScored = decode
        job.layer = layer
        job.queries = queries
        job.out = out
        job.start = length
        job.blocks = (queries.rows + Self.queryBlock - 1) / Self.queryBlock
        pool.run(job, chunks: shape.heads * job.blocks)
        job.queries = nil
        job.out = nil
    }

    /// Work items: (KV head, 64 positions): latents → keys with RoPE, into `rebuilt`. For one query,
    /// (KV head, span): each tile of 64 keys is rebuilt in the item's scratch and scored for every query
    /// head of the group straight into its score row.
    final class RebuildJob: ParallelJob {
        unowned let cache: LowRankKVCache
        var layer = 0, end = 0, chunks = 1, spanLength = 0
        var query: UnsafePointer<Float>?
        init(cache: LowRankKVCache) { self.cache = cache }

        func run(chunk item: Int) {
            let c = cache, d = c.shape.headDim, tile = LowRankKVCache.rebuildChunk
            let h = item % c.shape.kvHeads, chunk = item / c.shape.kvHeads
            let v = 2 * (layer * c.shape.kvHeads + h), format = c.formats[v], decoder = c.plan.decoder(v)
            let rotated = c.plan.rope.layers[layer], interleaved = c.plan.rope.interleaved
            // Batches use the attention scratch (free until attention runs); decode keeps it for the scores.
            let tileKeys = c.tiles.pointer + item * c.tileFloats
            let z = query == nil ? c.scratch.pointer + item * c.scratchFloats : tileKeys + tile * d, rotation = z + d
            let length = query == nil ? tile : spanLength
            let first = chunk * length, last = min(end, first + length)
            guard first < last else { return }
            var lower = first
            while lower < last {
                let upper = min(last, lower + tile)
                let keys = query == nil ? c.rebuilt.pointer + h * c.capacity * d : tileKeys - lower * d
                for position in lower..<upper {
                    let key = keys + position * d
                    if position < c.pivots {
                        key.update(from: c.pivot(c.pivotKeys, layer * c.shape.kvHeads + h, position), count: d)
                        continue
                    }
                    format.decode(c.record(v, position), into: z)
                    reconstruct(z, rank: format.rank, decoder: decoder, headDim: d, into: key)
                    if rotated { c.rope.rotate(key, position: position, interleaved: interleaved, inverse: false, scratch: rotation) }
                }
                if let query {
                    let group = c.shape.heads / c.shape.kvHeads, scale = 1 / Float(d).squareRoot()
                    for head in (h * group)..<((h + 1) * group) {
                        scoreRows(query + head * d, keys: tileKeys, count: upper - lower, headDim: d, scale: scale,
                                  into: c.scratch.pointer + head * c.scratchFloats + lower)
                    }
                }
                lower = upper
            }
        }
    }

    /// Work items: (query head, block of 16 queries). Query t reads positions below its own window from
    /// the rebuilt keys and latent values, the rest from the exact ring.
    final class LatentAttentionJob: ParallelJob {
        unowned let cache: LowRankKVCache
        var layer = 0, start = 0, blocks = 1
        /// Decode: the rebuild already scored the latent positions.
        var latentScored = false
        var queries: Matrix?
        var out: Matrix?
        init(cache: LowRankKVCache) { self.cache = cache }

        func run(chunk item: Int) {
            guard let queries, let out else { return }
            let c = cache, shape = c.shape, d = shape.headDim
            let h = item % shape.heads, block = item / shape.heads
            let kvHead = h / (shape.heads / shape.kvHeads), index = layer * shape.kvHeads + kvHead
            let valueFormat = c.formats[2 * index + 1], valueDecoder = c.plan.decoder(2 * index + 1)
            let values = UnsafeRawPointer(c.record(2 * index + 1, 0)), stride = valueFormat.recordBytes
            let keys = UnsafePointer(c.rebuilt.pointer + kvHead * c.capacity * d)
            let scores = c.scratch.pointer + item * c.scratchFloats, latentSum = scores + c.capacity
            let scale = 1 / Float(d).squareRoot()
            let lower = block * LowRankKVCache.queryBlock, upper = min(queries.rows, lower + LowRankKVCache.queryBlock)
            guard lower < upper else { return }
            for t in lower..<upper {
                let count = start + t + 1, latent = max(0, count - c.window)
                let q = UnsafePointer(queries.row(t) + h * d), o = out.row(t) + h * d
                if !latentScored { scoreRows(q, keys: keys, count: latent, headDim: d, scale: scale, into: scores) }
                c.forEachRingSpan(latent, count) { position, slot, n in
                    scoreRows(q, keys: c.ringKeys.pointer + (index * c.ringSize + slot) * d, count: n, headDim: d, scale: scale, into: scores + position)
                }
                softmaxInPlace(scores, count: count)
                latentSum.update(repeating: 0, count: valueFormat.rank)
                let exact = min(c.pivots, latent)
                valueFormat.accumulate(values + exact * stride, stride: stride, weights: scores + exact, count: latent - exact, into: latentSum)
                reconstruct(latentSum, rank: valueFormat.rank, decoder: valueDecoder, headDim: d, into: o)
                if exact > 0 { accumulateRows(c.pivot(c.pivotValues, index, 0), weights: scores, count: exact, headDim: d, into: o) }
                c.forEachRingSpan(latent, count) { position, slot, n in
                    accumulateRows(c.ringValues.pointer + (index * c.ringSize + slot) * d, weights: scores + position, count: n, headDim: d, into: o)
                }
            }
        }
    }

    /// Positions lower..<upper as contiguous ring spans: (first position, its slot, count).
    @inline(__always) func forEachRingSpan(_ lower: Int, _ upper: Int, _ body: (Int, Int, Int) -> Void) {
        var position = lower
        while position < upper {
            let slot = position % ringSize, n = min(upper - position, ringSize - slot)
            body(position, slot, n)
            position += n
        }
    }

    public var bytesPerToken: Double { settings.bytes(atLength: capacity, shape: shape) / Double(capacity) }
}
