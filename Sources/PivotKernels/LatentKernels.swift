/// How one head's latent vector (its `rank` low-rank channels) is stored per token: F16, or 4-bit
/// codes per token with an F16 scale and minimum (the channels are whitened, so one range fits all).
/// A 4-bit record is [scale][minimum][rank/2 bytes of codes].
public struct LatentFormat: Sendable, Equatable {
    public let rank: Int
    /// nil: F16 latents.
    public let codes: PackedCodeFormat?

    public init(rank: Int, bits: Int) {
        precondition(rank % 8 == 0 && rank > 0, "latent ranks are positive multiples of 8")
        precondition(bits == 16 || bits == 4, "latents are F16 or 4-bit")
        self.rank = rank
        codes = bits == 16 ? nil : PackedCodeFormat(bits: bits)
    }

    /// Bytes of one token's latent record.
    public var recordBytes: Int { codes.map { 4 + $0.bytes(codes: rank) } ?? 2 * rank }

    /// z = E·x (E: `rank` rows of `headDim`), stored at `record`; `z` is scratch of `rank` floats.
    @inline(__always)
    public func encode(_ x: UnsafePointer<Float>, encoder: UnsafePointer<Float>, headDim: Int,
                       z: UnsafeMutablePointer<Float>, into record: UnsafeMutableRawPointer) {
        for c in 0..<rank { z[c] = dotF32(encoder + c * headDim, x, count: headDim) }
        if let codes {
            let params = record.assumingMemoryBound(to: UInt16.self)
            codes.quantizePerToken(z, channels: rank, group: rank, codes: record + 4, scales: params, minimums: params + 1)
        } else {
            storeHalf(z, into: record.assumingMemoryBound(to: UInt16.self), count: rank)
        }
    }

    /// The stored latent as floats.
    @inline(__always)
    public func decode(_ record: UnsafeRawPointer, into z: UnsafeMutablePointer<Float>) {
        if let codes {
            let params = record.assumingMemoryBound(to: UInt16.self)
            let scale = SIMD8<Float>(repeating: Float(Float16(bitPattern: params[0])))
            let minimum = SIMD8<Float>(repeating: Float(Float16(bitPattern: params[1])))
            for o in 0..<(rank / 8) { store8(minimum.addingProduct(scale, codes.unpack(record + 4 + o * codes.bits)), z + o * 8) }
        } else {
            loadHalf(record.assumingMemoryBound(to: UInt16.self), into: z, count: rank)
        }
    }

    /// acc[0..<rank] += Σ_j weights[j] · z_j over `count` records `stride` bytes apart: the value side of
    /// attention in latent space (projected back once per query, not once per token).
    @inline(__always)
    public func accumulate(_ records: UnsafeRawPointer, stride: Int, weights: UnsafePointer<Float>, count: Int,
                           into acc: UnsafeMutablePointer<Float>) {
        let octets = rank / 8
        if let codes {
            // Σ w·(s·q + m) = Σ (w·s)·q + Σ w·m: codes weighted by w·s, minimums summed once.
            var minimumSum: Float = 0
            for j in 0..<count {
                let record = records + j * stride
                let params = record.assumingMemoryBound(to: UInt16.self)
                let w = weights[j]
                let ws = SIMD8<Float>(repeating: w * Float(Float16(bitPattern: params[0])))
                minimumSum += w * Float(Float16(bitPattern: params[1]))
                for o in 0..<octets { store8(load8(acc + o * 8).addingProduct(ws, codes.unpack(record + 4 + o * codes.bits)), acc + o * 8) }
            }
            let m = SIMD8<Float>(repeating: minimumSum)
            for o in 0..<octets { store8(load8(acc + o * 8) + m, acc + o * 8) }
        } else {
            for j in 0..<count {
                let record = records + j * stride
                let w = SIMD8<Float>(repeating: weights[j])
                for o in 0..<octets { store8(load8(acc + o * 8).addingProduct(w, loadHalf8(record, o * 8, .f16)), acc + o * 8) }
            }
        }
    }
}

/// out[0..<headDim] = Σ_c z[c] · decoder[c] (decoder: `rank` rows of `headDim`): a key or value back
/// from its latent — the value accumulation with the latent as weights.
@inline(__always)
public func reconstruct(_ z: UnsafePointer<Float>, rank: Int, decoder: UnsafePointer<Float>, headDim d: Int,
                        into out: UnsafeMutablePointer<Float>) {
    out.update(repeating: 0, count: d)
    accumulateRows(decoder, weights: z, count: rank, headDim: d, into: out)
}
