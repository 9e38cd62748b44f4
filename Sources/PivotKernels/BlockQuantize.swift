/// Quantization of a row into any block format, byte-identical to llama-quantize.
///
/// Without importance weights the block-32 formats are round-to-nearest, as ggml's reference
/// quantizers (`quantize_row_*_ref`): the scale is computed in float and stored as f16; codes come
/// from C's truncating float→int conversion of x·(1/d) + offset, clamped as ggml clamps. With
/// importance weights (llama.cpp's imatrix: per input column, the mean x² of calibration
/// activations) they use ggml's weighted scale searches (`quantize_row_*_impl`). K-quants:
/// `KQuantize.swift`.
extension BlockFormat {
    /// Quantizes one row of `count` floats into `out` (`rowBytes(count)` bytes). `importance`, when
    /// given, holds `count` non-negative per-column weights (ignored by Q8_0, as in ggml).
    public func quantizeRow(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer,
                            importance: UnsafePointer<Float>?) {
        if isExtension { return quantizeGroupRow(x, count: count, into: out, importance: importance) }
        if isKQuant {
            KScratch.with { scratch in
                for b in 0..<(count / 256) {
                    quantizeSuperBlock(x + 256 * b, into: out + b * bytesPerBlock, importance: importance.map { $0 + 256 * b }, scratch)
                }
            }
        } else if let importance, self != .q8_0 {
            quantizeWeightedRow(x, count: count, into: out, importance: importance)
        } else {
            quantizeRow(x, count: count, into: out)
        }
    }

    /// ggml's `quantize_row_q4_0_impl` … `q5_1_impl`: each block's weights are importance ×
    /// sqrt(σ² + x²), σ² the row's mean square; symmetric types search with `make_qx_quants`,
    /// types with a minimum with `make_qkx3_quants`.
    private func quantizeWeightedRow(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer,
                                     importance: UnsafePointer<Float>) {
        let sigma2 = Self.sumOfSquares(x, count) / Float(count)
        KScratch.with { s in
            for b in 0..<(count / 32) {
                let xb = x + 32 * b, block = out + b * bytesPerBlock
                _ = s.importanceWeights(xb, importance + 32 * b, sigma2: sigma2, count: 32)
                let five = self == .q5_0 || self == .q5_1
                switch self {
                case .q4_0, .q5_0:
                    let d = ScaleSearch.qx(32, five ? 16 : 8, xb, s.signedL, rmseType: 1, weights: s.weights)
                    Self.storeHalf(d, block, 0)
                case .q4_1, .q5_1:
                    var minimum: Float = 0
                    let d = ScaleSearch.qkx(32, five ? 31 : 15, xb, weights: s.weights, s.L, theMin: &minimum, s.Laux,
                                            rmin: -0.9, rdelta: 0.05, nstep: 36, useMAD: false)
                    Self.storeHalf(d, block, 0)
                    Self.storeHalf(-minimum, block, 2)
                default:
                    fatalError("unreachable")
                }
                let nibbles = (self == .q4_1 ? 4 : self == .q4_0 ? 2 : self == .q5_0 ? 6 : 8)
                var qh: UInt32 = 0
                for j in 0..<16 {
                    let q0 = s.L[j], q1 = s.L[j + 16]
                    block.storeBytes(of: (q0 & 0x0F) | (q1 & 0x0F) << 4, toByteOffset: nibbles + j, as: UInt8.self)
                    qh |= UInt32((q0 >> 4) & 1) << UInt32(j) | UInt32((q1 >> 4) & 1) << UInt32(j + 16)
                }
                if five { block.storeBytes(of: qh.littleEndian, toByteOffset: self == .q5_0 ? 2 : 4, as: UInt32.self) }
            }
        }
    }

    @inline(__always)
    static func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Round-to-nearest into a block-32 format: `count` floats (a multiple of 32) into `out`.
    public func quantizeRow(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        if isKQuant || isExtension { return quantizeRow(x, count: count, into: out, importance: nil) }
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
