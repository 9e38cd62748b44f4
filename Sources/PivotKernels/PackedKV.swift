#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Asymmetric B-bit codes for a quantized KV cache (KIVI), packed eight at a time: an "octet" of eight
/// codes fills B consecutive bytes, code i at bits i·B (little endian). One 32-bit load, a per-lane
/// variable shift and a mask widen an octet for B = 2, 3, 4; B = 8 is one byte per code. Scales and
/// minimums are F16, as KIVI keeps them, and codes are computed against the rounded F16 values so
/// dequantization is exactly `scale·code + minimum`.
public struct PackedCodeFormat: Sendable, Equatable {
    public let bits: Int
    let shifts: SIMD8<UInt32>
    let mask: SIMD8<UInt32>

    public init(bits: Int) {
        precondition([2, 3, 4, 8].contains(bits), "KV code bits must be 2, 3, 4 or 8")
        self.bits = bits
        shifts = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7) &* UInt32(bits)
        mask = SIMD8<UInt32>(repeating: UInt32((1 << bits) - 1))
    }

    /// Largest code.
    public var levels: Int { (1 << bits) - 1 }
    /// Bytes of `count` codes (count a multiple of 8).
    public func bytes(codes count: Int) -> Int { count / 8 * bits }
    /// Readable bytes every packed buffer keeps past its end: a 3-bit octet is read with a 4-byte load.
    public static let padding = 8

    /// The eight codes of the octet at `p`, as floats.
    @inline(__always)
    public func unpack(_ p: UnsafeRawPointer) -> SIMD8<Float> {
        #if arch(x86_64)
        if bits == 8 {
            let raw = _mm_cvtsi64_si128(Int64(bitPattern: p.loadUnaligned(as: UInt64.self)))
            return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(raw))
        }
        let word = _mm256_set1_epi32(Int32(bitPattern: p.loadUnaligned(as: UInt32.self)))
        let codes = _mm256_and_si256(_mm256_srlv_epi32(word, unsafeBitCast(shifts, to: __m256i.self)),
                                     unsafeBitCast(mask, to: __m256i.self))
        return _mm256_cvtepi32_ps(codes)
        #else
        var v = SIMD8<Float>()
        if bits == 8 {
            for i in 0..<8 { v[i] = Float(p.load(fromByteOffset: i, as: UInt8.self)) }
        } else {
            let word = p.loadUnaligned(as: UInt32.self)
            for i in 0..<8 { v[i] = Float((word >> shifts[i]) & mask[i]) }
        }
        return v
        #endif
    }

    /// Writes codes (each 0...levels) of one octet at `p` (`bits` bytes).
    @inline(__always)
    func pack(_ codes: SIMD8<UInt32>, into p: UnsafeMutableRawPointer) {
        if bits == 8 {
            for i in 0..<8 { p.storeBytes(of: UInt8(codes[i]), toByteOffset: i, as: UInt8.self) }
            return
        }
        var word: UInt32 = 0
        for i in 0..<8 { word |= codes[i] << shifts[i] }
        for b in 0..<bits { p.storeBytes(of: UInt8(truncatingIfNeeded: word >> (8 * UInt32(b))), toByteOffset: b, as: UInt8.self) }
    }

    /// F16 scale and minimum of values in [low, high], and the codes' reciprocal step.
    @inline(__always)
    func parameters(low: Float, high: Float) -> (scale: UInt16, minimum: UInt16, inverse: Float, zero: Float) {
        let scale = Float16((high - low) / Float(levels)), minimum = Float16(low)
        let step = Float(scale)
        return (scale.bitPattern, minimum.bitPattern, step > 0 ? 1 / step : 0, Float(minimum))
    }

    @inline(__always)
    func code(_ x: Float, inverse: Float, zero: Float) -> UInt32 {
        let q = ((x - zero) * inverse).rounded(.toNearestOrEven)
        return UInt32(min(Float(levels), max(0, q)))
    }

    /// Keys of one head for `tokens` positions (rows of `channels` floats, `rowStride` apart), quantized
    /// per channel over the tokens (KIVI's keys): channel c's codes are `tokens/8` octets at
    /// c·bytes(codes: tokens); scale and minimum per channel.
    /// Tokens marked in `excluded` (OTT's outliers, kept elsewhere) do not widen the ranges; their codes are clamped.
    public func quantizePerChannel(_ rows: UnsafePointer<Float>, rowStride: Int, tokens: Int, channels: Int,
                                   codes: UnsafeMutableRawPointer, scales: UnsafeMutablePointer<UInt16>,
                                   minimums: UnsafeMutablePointer<UInt16>, excluded: UnsafePointer<Bool>? = nil) {
        precondition(tokens % 8 == 0, "a key group holds a multiple of 8 tokens")
        let channelBytes = bytes(codes: tokens)
        for c in 0..<channels {
            var low = Float.infinity, high = -Float.infinity
            for t in 0..<tokens where excluded?[t] != true { let x = rows[t * rowStride + c]; low = min(low, x); high = max(high, x) }
            let p = parameters(low: low, high: high)
            scales[c] = p.scale; minimums[c] = p.minimum
            for octet in 0..<(tokens / 8) {
                var octetCodes = SIMD8<UInt32>()
                for i in 0..<8 { octetCodes[i] = code(rows[(octet * 8 + i) * rowStride + c], inverse: p.inverse, zero: p.zero) }
                pack(octetCodes, into: codes + c * channelBytes + octet * bits)
            }
        }
    }

    /// Values of one token quantized per token over groups of `group` channels (KIVI's values): codes in
    /// channel order, scale and minimum per group.
    public func quantizePerToken(_ row: UnsafePointer<Float>, channels: Int, group: Int, codes: UnsafeMutableRawPointer,
                                 scales: UnsafeMutablePointer<UInt16>, minimums: UnsafeMutablePointer<UInt16>) {
        precondition(group % 8 == 0 && channels % group == 0, "value groups are a multiple of 8 dividing the head size")
        for g in 0..<(channels / group) {
            let base = row + g * group
            var low = Float.infinity, high = -Float.infinity
            for c in 0..<group { low = min(low, base[c]); high = max(high, base[c]) }
            let p = parameters(low: low, high: high)
            scales[g] = p.scale; minimums[g] = p.minimum
            for octet in 0..<(group / 8) {
                var octetCodes = SIMD8<UInt32>()
                for i in 0..<8 { octetCodes[i] = code(base[octet * 8 + i], inverse: p.inverse, zero: p.zero) }
                pack(octetCodes, into: codes + (g * group / 8 + octet) * bits)
            }
        }
    }
}

/// F16 storage of float rows, round to nearest even (`_mm256_cvtps_ph` takes an immediate Swift cannot pass;
/// with F16C enabled each conversion is one instruction).
@inline(__always)
public func storeHalf(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<UInt16>, count: Int) {
    for i in 0..<count { out[i] = Float16(x[i]).bitPattern }
}

/// F16 rows widened to floats.
@inline(__always)
public func loadHalf(_ x: UnsafePointer<UInt16>, into out: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(loadHalf8(UnsafeRawPointer(x), i, .f16), out + i); i += 8 }
    while i < count { out[i] = Float(Float16(bitPattern: x[i])); i += 1 }
}
