/// ggml's K-quant super-blocks of 256 weights (byte offsets within a block):
///
/// - Q2_K (84): scales[16] @0 (low nibble scale, high nibble min, per 16 weights), qs[64] @16
///   (2 bits), d @80, dmin @82; w = d·sc·q − dmin·m
/// - Q3_K (110): hmask[32] @0 (third bit), qs[64] @32 (low 2 bits), scales[12] @96 (16 six-bit
///   scales, biased by 32), d @108; w = d·(sc − 32)·(q − 4·(1 − high bit))
/// - Q4_K (144): d @0, dmin @2, scales[12] @4 (8 six-bit scales and mins, per 32 weights),
///   qs[128] @16 (nibbles); w = d·sc·q − dmin·m
/// - Q5_K (176): as Q4_K with qh[32] @16 (fifth bit) and qs[128] @48
/// - Q6_K (210): ql[128] @0 (low 4 bits), qh[64] @128 (high 2 bits), scales[16] @192 (int8,
///   per 16 weights), d @208; w = d·sc·(q − 32)
///
/// Within each 128 weights the 2-bit (Q2_K, Q3_K) planes are interleaved by shifts of 2 over the
/// same 32 bytes; 4-bit planes take low nibbles for the first 32 weights and high for the next 32.
extension BlockFormat {
    /// The 6-bit scale and min of sub-block j (0..<8) of Q4_K/Q5_K's 12 packed bytes.
    @inline(__always)
    public static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (scale: UInt8, min: UInt8) {
        func byte(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (byte(j) & 63, byte(j + 4) & 63) }
        return ((byte(j + 4) & 0x0F) | ((byte(j - 4) >> 6) << 4), (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4))
    }

    /// Q3_K's scale i (0..<16), unbiased, from its 12 packed bytes (low 4 bits in bytes 0-7, high 2 bits in 8-11).
    @inline(__always)
    public static func scaleQ3K(_ i: Int, _ q: UnsafeRawPointer) -> Int {
        let low = Int(q.load(fromByteOffset: i % 8, as: UInt8.self) >> (i < 8 ? 0 : 4)) & 0x0F
        let high = Int(q.load(fromByteOffset: 8 + i % 4, as: UInt8.self) >> (2 * (i / 4))) & 3
        return (low | high << 4) - 32
    }

    func dequantizeSuperBlock(_ block: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        func byte(_ i: Int) -> Int { Int(block.load(fromByteOffset: i, as: UInt8.self)) }
        switch self {
        case .q2_K:
            let d = loadHalf(block, 80), dmin = loadHalf(block, 82)
            for half in 0..<2 {  // 128 weights from 32 bytes of qs
                for plane in 0..<4 {
                    for part in 0..<2 {
                        let scale = byte(half * 8 + plane * 2 + part)
                        let dl = d * Float(scale & 0x0F), ml = dmin * Float(scale >> 4)
                        for l in 0..<16 {
                            let q = (byte(16 + half * 32 + part * 16 + l) >> (2 * plane)) & 3
                            y[half * 128 + plane * 32 + part * 16 + l] = dl * Float(q) - ml
                        }
                    }
                }
            }
        case .q3_K:
            let d = loadHalf(block, 108)
            for half in 0..<2 {
                for plane in 0..<4 {
                    let bit = half * 4 + plane  // which bit of hmask
                    for part in 0..<2 {
                        let dl = d * Float(Self.scaleQ3K(half * 8 + plane * 2 + part, block + 96))
                        for l in 0..<16 {
                            let index = part * 16 + l
                            let low = (byte(32 + half * 32 + index) >> (2 * plane)) & 3
                            let high = (byte(index) >> bit) & 1
                            y[half * 128 + plane * 32 + index] = dl * Float(low - (high == 1 ? 0 : 4))
                        }
                    }
                }
            }
        case .q4_K, .q5_K:
            let d = loadHalf(block, 0), dmin = loadHalf(block, 2)
            let five = self == .q5_K
            let qs = five ? 48 : 16
            for pair in 0..<4 {  // 64 weights: low nibbles of 32 bytes, then high nibbles
                for nibble in 0..<2 {
                    let (sc, m) = Self.scaleMinK4(pair * 2 + nibble, block + 4)
                    let dl = d * Float(sc), ml = dmin * Float(m)
                    for l in 0..<32 {
                        var q = (byte(qs + pair * 32 + l) >> (4 * nibble)) & 0x0F
                        if five { q |= ((byte(16 + l) >> (pair * 2 + nibble)) & 1) << 4 }
                        y[pair * 64 + nibble * 32 + l] = dl * Float(q) - ml
                    }
                }
            }
        case .q6_K:
            let d = loadHalf(block, 208)
            for half in 0..<2 {
                for l in 0..<32 {
                    let subScale = l / 16
                    let qh = byte(128 + half * 32 + l)
                    for k in 0..<4 {
                        // k = 0, 1: low nibbles of ql[l], ql[l + 32]; k = 2, 3: their high nibbles.
                        let low = (byte(half * 64 + l + 32 * (k & 1)) >> (4 * (k >> 1))) & 0x0F
                        let q = low | (((qh >> (2 * k)) & 3) << 4)
                        let scale = Float(block.load(fromByteOffset: 192 + half * 8 + subScale + 2 * k, as: Int8.self))
                        y[half * 128 + l + 32 * k] = d * scale * Float(q - 32)
                    }
                }
            }
        default:
            fatalError("\(name) is not a K-quant")
        }
    }
}
