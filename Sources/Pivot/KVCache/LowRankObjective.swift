import PivotKernels

/// One KV head's recorded attention over one chunk (positions 0..<count from an empty cache), each
/// row `headDim` floats, contiguous: what CSKV's factors are trained against.
public struct LowRankHeadChunk {
    public var count: Int
    /// count × (group · headDim): the group's query heads, after RoPE.
    public var queries: UnsafePointer<Float>
    /// count × headDim each: keys after RoPE and before it, values, and the exact attention output of
    /// the group (count × group · headDim).
    public var keys: UnsafePointer<Float>, preKeys: UnsafePointer<Float>, values: UnsafePointer<Float>
    public var exact: UnsafePointer<Float>

    public init(count: Int, queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, preKeys: UnsafePointer<Float>,
                values: UnsafePointer<Float>, exact: UnsafePointer<Float>) {
        self.count = count; self.queries = queries; self.keys = keys; self.preKeys = preKeys; self.values = values; self.exact = exact
    }
}

/// CSKV's training objective for one KV head (Wang et al. 2024 train the channel-shrinking factors on
/// a layer-wise reconstruction loss): the error of the attention output of the group's query heads when
/// the cache holds keys and values as A·Q(B·x), against the exact cache, measured after the output
/// projection — Σ_t e_tᵀ G e_t with G = W_o,gᵀ W_o,g over the group's columns — since that is what the
/// residual stream receives (errors W_o erases cost nothing; the closed form's value metric is the same
/// G per head, without the cross-head terms).
///
/// It mirrors `LowRankKVCache` exactly: query t reads positions older than the newest `window` from
/// latents (keys rebuilt before RoPE, then rotated at their position) and the rest exactly. Latents go
/// through `format`'s storage (F16 or 4-bit) with the straight-through estimator: the forward pass sees
/// the stored latent, the gradient passes the rounding as if it were the identity. nil: float latents
/// (the finite-difference test's smooth problem).
///
/// Parameters of one head, contiguous: encoder and decoder rows of the keys (keyRank × headDim each),
/// then of the values (valueRank × headDim each), as `LowRankPlan` keeps them.
public final class LowRankObjective {
    public let headDim: Int, group: Int, window: Int, capacity: Int
    public let keyRank: Int, valueRank: Int
    let keyFormat: LatentFormat?, valueFormat: LatentFormat?
    /// (group·headDim)², row-major.
    let gramBuffer: FloatBuffer
    var gram: UnsafePointer<Float> { UnsafePointer(gramBuffer.pointer) }
    /// nil: this layer applies no RoPE.
    let rope: RoPETable?
    let interleaved: Bool
    let latentKeys: FloatBuffer, latentValues: FloatBuffer, keysHat: FloatBuffer, valuesHat: FloatBuffer
    let keyGradients: FloatBuffer, valueGradients: FloatBuffer
    let probabilities: FloatBuffer, work: FloatBuffer
    let record: UnsafeMutableRawPointer

    public var parameterCount: Int { 2 * (keyRank + valueRank) * headDim }

    /// `gram`: G, (group·headDim)² row-major; `rope`: the model's rotary embedding when this layer applies
    /// it; `latentBits`: the cache's latent storage (nil: float latents).
    public init(headDim: Int, group: Int, window: Int, capacity: Int, keyRank: Int, valueRank: Int, latentBits: Int?,
                gram: [Float], rope: RotaryGeometry?) {
        precondition(gram.count == group * headDim * group * headDim, "G is (group·headDim)²")
        self.headDim = headDim; self.group = group; self.window = window; self.capacity = capacity
        self.keyRank = keyRank; self.valueRank = valueRank
        keyFormat = latentBits.map { LatentFormat(rank: keyRank, bits: $0) }
        valueFormat = latentBits.map { LatentFormat(rank: valueRank, bits: $0) }
        gramBuffer = FloatBuffer(count: gram.count)
        gramBuffer.pointer.update(from: gram, count: gram.count)
        self.rope = rope?.makeTable(positions: capacity); interleaved = rope?.interleaved ?? true
        let d = headDim
        latentKeys = FloatBuffer(count: capacity * keyRank); latentValues = FloatBuffer(count: capacity * valueRank)
        keysHat = FloatBuffer(count: capacity * d); valuesHat = FloatBuffer(count: capacity * d)
        keyGradients = FloatBuffer(count: capacity * d); valueGradients = FloatBuffer(count: capacity * d)
        probabilities = FloatBuffer(count: group * capacity)
        // Output, error, G·error (group·d each), a d-wide row, a latent row and the rotation's scratch.
        work = FloatBuffer(count: 3 * group * d + 2 * d + max(keyRank, valueRank))
        record = UnsafeMutableRawPointer.allocate(byteCount: 4 * max(keyRank, valueRank) + 64, alignment: 64)
    }

    deinit { record.deallocate() }

    /// The exact output of the group (every position read exactly), into `out` (count × group·headDim).
    /// `scratch`: count floats (not the objective's own, so one objective serves several chunks at once).
    public func exactOutput(queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int,
                            into out: UnsafeMutablePointer<Float>, scratch p: UnsafeMutablePointer<Float>) {
        let d = headDim, width = group * d, scale = 1 / Float(d).squareRoot()
        for t in 0..<count {
            for a in 0..<group {
                scoreRows(queries + t * width + a * d, keys: keys, count: t + 1, headDim: d, scale: scale, into: p)
                softmaxInPlace(p, count: t + 1)
                let o = out + t * width + a * d
                o.update(repeating: 0, count: d)
                accumulateRows(values, weights: p, count: t + 1, headDim: d, into: o)
            }
        }
    }

    /// Σ_t e_tᵀ G e_t over the chunk (and Σ_t o_tᵀ G o_t of the exact output, to make it relative); with
    /// `gradients`, adds the loss's gradient by `parameters` there.
    public func evaluate(_ chunk: LowRankHeadChunk, parameters: UnsafePointer<Float>,
                  gradients: UnsafeMutablePointer<Float>?) -> (loss: Double, energy: Double) {
        let d = headDim, width = group * d, scale = 1 / Float(d).squareRoot(), n = chunk.count
        let keyEncoder = parameters, keyDecoder = parameters + keyRank * d
        let valueEncoder = keyDecoder + keyRank * d, valueDecoder = valueEncoder + valueRank * d
        let out = work.pointer, error = out + width, weighted = error + width, row = weighted + width
        let z = row + d, rotation = z + max(keyRank, valueRank)
        let latentEnd = max(0, n - window)
        // Keys and values as the cache rebuilds them.
        for j in 0..<latentEnd {
            let zk = latentKeys.pointer + j * keyRank, zv = latentValues.pointer + j * valueRank
            encode(chunk.preKeys + j * d, encoder: keyEncoder, rank: keyRank, format: keyFormat, into: zk)
            encode(chunk.values + j * d, encoder: valueEncoder, rank: valueRank, format: valueFormat, into: zv)
            let key = keysHat.pointer + j * d
            reconstruct(zk, rank: keyRank, decoder: keyDecoder, headDim: d, into: key)
            rope?.rotate(key, position: j, interleaved: interleaved, inverse: false, scratch: rotation)
            reconstruct(zv, rank: valueRank, decoder: valueDecoder, headDim: d, into: valuesHat.pointer + j * d)
        }
        if gradients != nil {
            keyGradients.pointer.update(repeating: 0, count: latentEnd * d)
            valueGradients.pointer.update(repeating: 0, count: latentEnd * d)
        }
        var loss = 0.0, energy = 0.0
        for t in 0..<n {
            let exact = chunk.exact + t * width
            energy += Double(quadratic(exact, exact))
            let count = t + 1, latent = max(0, count - window)
            guard latent > 0 else { continue }
            for a in 0..<group {
                let p = probabilities.pointer + a * capacity, q = chunk.queries + t * width + a * d, o = out + a * d
                scoreRows(q, keys: keysHat.pointer, count: latent, headDim: d, scale: scale, into: p)
                scoreRows(q, keys: chunk.keys + latent * d, count: count - latent, headDim: d, scale: scale, into: p + latent)
                softmaxInPlace(p, count: count)
                o.update(repeating: 0, count: d)
                accumulateRows(valuesHat.pointer, weights: p, count: latent, headDim: d, into: o)
                accumulateRows(chunk.values + latent * d, weights: p + latent, count: count - latent, headDim: d, into: o)
            }
            for i in 0..<width { error[i] = out[i] - exact[i] }
            loss += Double(quadratic(error, error))
            guard gradients != nil else { continue }
            // ∂L/∂o = 2 G e, then back through each head's value mix and softmax to the rebuilt rows.
            for i in 0..<width { weighted[i] = 2 * dotF32(gram + i * width, error, count: width) }
            for a in 0..<group {
                let p = probabilities.pointer + a * capacity, q = chunk.queries + t * width + a * d, g = UnsafePointer(weighted + a * d)
                let mean = dotF32(g, out + a * d, count: d)
                // ∂L/∂s_j = p_j (∂L/∂p_j − Σ_i p_i ∂L/∂p_i), ∂L/∂p_j = g·v_j; only latent rows have parameters.
                for j in 0..<latent {
                    let dp = dotF32(g, valuesHat.pointer + j * d, count: d)
                    let pj = p[j], dsj = pj * (dp - mean) * scale
                    axpyF32(dsj, q, keyGradients.pointer + j * d, count: d)
                    axpyF32(pj, g, valueGradients.pointer + j * d, count: d)
                }
            }
        }
        if let gradients {
            backward(chunk, latentEnd: latentEnd, parameters: parameters, gradients: gradients, row: row, scratch: rotation)
        }
        return (loss, energy)
    }

    /// From the rebuilt rows' gradients to the encoder and decoder rows: x̂ = Dᵀ ẑ, ẑ ≈ E x (straight through).
    private func backward(_ chunk: LowRankHeadChunk, latentEnd: Int, parameters: UnsafePointer<Float>,
                          gradients: UnsafeMutablePointer<Float>, row: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let d = headDim
        let factor = Float((rope?.attentionFactor ?? 1) * (rope?.attentionFactor ?? 1))
        var offset = 0
        for kind in 0..<2 {
            let rank = kind == 0 ? keyRank : valueRank
            let encoder = parameters + offset, decoder = encoder + rank * d
            let encoderGradient = gradients + offset, decoderGradient = encoderGradient + rank * d
            let latents = (kind == 0 ? latentKeys : latentValues).pointer
            let rows = (kind == 0 ? keyGradients : valueGradients).pointer
            let inputs = kind == 0 ? chunk.preKeys : chunk.values
            for j in 0..<latentEnd {
                row.update(from: rows + j * d, count: d)
                // Rᵀ = f²·R⁻¹ (the table's forward rotation carries the attention factor f).
                if kind == 0, let rope {
                    rope.rotate(row, position: j, interleaved: interleaved, inverse: true, scratch: scratch)
                    if factor != 1 { for i in 0..<d { row[i] *= factor } }
                }
                let zj = latents + j * rank, x = inputs + j * d
                for c in 0..<rank {
                    axpyF32(zj[c], row, decoderGradient + c * d, count: d)
                    axpyF32(dotF32(decoder + c * d, row, count: d), x, encoderGradient + c * d, count: d)
                }
            }
            offset += 2 * rank * d
        }
    }

    /// ẑ: the latent as the cache stores and reads it back (or in float without a format).
    private func encode(_ x: UnsafePointer<Float>, encoder: UnsafePointer<Float>, rank: Int, format: LatentFormat?,
                        into z: UnsafeMutablePointer<Float>) {
        if let format {
            format.encode(x, encoder: encoder, headDim: headDim, z: z, into: record)
            format.decode(record, into: z)
        } else {
            for c in 0..<rank { z[c] = dotF32(encoder + c * headDim, x, count: headDim) }
        }
    }

    /// aᵀ G b over the group's width.
    private func quadratic(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> Float {
        let width = group * headDim
        var sum: Float = 0
        for i in 0..<width where a[i] != 0 { sum += a[i] * dotF32(gram + i * width, b, count: width) }
        return sum
    }
}
