/// Round-to-nearest quantization into the block-32 formats, as ggml's reference quantizers do it
/// (`quantize_row_*_ref`, which llama-quantize uses without an importance matrix): the scale is
/// computed in float and stored as f16; codes come from C's truncating float→int conversion of
/// x·(1/d) + offset, clamped as ggml clamps. The K-quants' scale searches come later.
extension BlockFormat {
    /// Whether `quantizeRow` can write this format.
    public var canQuantize: Bool { [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0].contains(self) }

    @inline(__always)
    static func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Quantizes `count` floats (a multiple of 32) into `out` (`rowBytes(count)` bytes).
    public func quantizeRow(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        precondition(canQuantize, "\(name) has no quantizer yet")
        for b in 0..<(count / 32) {
            let v = x + b * 32, block = out + b * bytesPerBlock
            switch self {
            case .q8_0:
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(v[j])) }
                let d = amax / 127, id = d != 0 ? 1 / d : 0
                Self.storeHalf(d, block, 0)
                for j in 0..<32 { block.storeBytes(of: Int8((v[j] * id).rounded()), toByteOffset: 2 + j, as: Int8.self) }
            case .q4_0, .q5_0:
                // The value of largest magnitude, with its sign, maps to the lowest code.
                var amax: Float = 0, signedMax: Float = 0
                for j in 0..<32 where amax < abs(v[j]) { amax = abs(v[j]); signedMax = v[j] }
                let five = self == .q5_0
                let d = signedMax / (five ? -16 : -8), id = d != 0 ? 1 / d : 0
                let offset: Float = five ? 16.5 : 8.5, top = five ? 31 : 15
                Self.storeHalf(d, block, 0)
                var qh: UInt32 = 0
                for j in 0..<16 {
                    let q0 = min(top, Int(Int8(truncatingIfNeeded: Int(v[j] * id + offset))))
                    let q1 = min(top, Int(Int8(truncatingIfNeeded: Int(v[j + 16] * id + offset))))
                    block.storeBytes(of: UInt8((q0 & 0x0F) | (q1 & 0x0F) << 4), toByteOffset: (five ? 6 : 2) + j, as: UInt8.self)
                    qh |= UInt32((q0 >> 4) & 1) << UInt32(j) | UInt32((q1 >> 4) & 1) << UInt32(j + 16)
                }
                if five { block.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self) }
            case .q4_1, .q5_1:
                var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
                for j in 0..<32 { lo = min(lo, v[j]); hi = max(hi, v[j]) }
                let five = self == .q5_1
                let d = (hi - lo) / (five ? 31 : 15), id = d != 0 ? 1 / d : 0
                Self.storeHalf(d, block, 0)
                Self.storeHalf(lo, block, 2)
                var qh: UInt32 = 0
                for j in 0..<16 {
                    var q0 = Int(UInt8(truncatingIfNeeded: Int((v[j] - lo) * id + 0.5)))
                    var q1 = Int(UInt8(truncatingIfNeeded: Int((v[j + 16] - lo) * id + 0.5)))
                    if !five { q0 = min(15, q0); q1 = min(15, q1) }
                    block.storeBytes(of: UInt8((q0 & 0x0F) | (q1 & 0x0F) << 4), toByteOffset: (five ? 8 : 4) + j, as: UInt8.self)
                    qh |= UInt32((q0 >> 4) & 1) << UInt32(j) | UInt32((q1 >> 4) & 1) << UInt32(j + 16)
                }
                if five { block.storeBytes(of: qh.littleEndian, toByteOffset: 4, as: UInt32.self) }
            default:
                fatalError("unreachable")
            }
        }
    }
}
