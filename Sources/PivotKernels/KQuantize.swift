/// ggml's K-quant quantizers, one super-block of 256 weights at a time, in the byte layout of
/// `KQuants.swift`. Without importance weights these are ggml's `quantize_row_q*_K_ref` (what
/// llama-quantize runs without an imatrix); with them, the `quantize_row_q*_K_impl` searches, where
/// the importance of input column c (mean x² over calibration tokens) weighs each weight's error.
///
/// Shape of every one: a scale (and min) search per sub-block of 16 or 32 (`ScaleSearch`), the
/// sub-block scales themselves quantized to 4, 6 or 8 bits against one f16 super-scale, then the
/// codes recomputed against the scales actually stored, and packed.
extension BlockFormat {
    /// Per-super-block working memory, so a row allocates once.
    struct KScratch {
        let L: UnsafeMutablePointer<UInt8>, Ls: UnsafeMutablePointer<UInt8>, Lm: UnsafeMutablePointer<UInt8>
        let Laux: UnsafeMutablePointer<UInt8>
        let scales: UnsafeMutablePointer<Float>, mins: UnsafeMutablePointer<Float>
        let weights: UnsafeMutablePointer<Float>, sw: UnsafeMutablePointer<Float>
        var signedL: UnsafeMutablePointer<Int8> { UnsafeMutableRawPointer(L).assumingMemoryBound(to: Int8.self) }

        /// `weights[0..<n]` = importance · sqrt(σ² + x²) for n weights from `x`; returns their sum (in order).
        func importanceWeights(_ x: UnsafePointer<Float>, _ qw: UnsafePointer<Float>, sigma2: Float, count n: Int) -> Float {
            var sum: Float = 0
            for l in 0..<n { weights[l] = qw[l] * (sigma2 + x[l] * x[l]).squareRoot() }
            for l in 0..<n { sum += weights[l] }
            return sum
        }

        static func with<R>(_ body: (KScratch) -> R) -> R {
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 16 + 16 + 32) { bytes in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 * 3 + 32) { floats in
                    let b = bytes.baseAddress!, f = floats.baseAddress!
                    return body(KScratch(L: b, Ls: b + 256, Lm: b + 272, Laux: b + 288,
                                         scales: f, mins: f + 16, weights: f + 32, sw: f + 64))
                }
            }
        }
    }

    /// Σ x² over n values, in order (ggml's σ² of a super-block).
    @inline(__always) static func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var sum: Float = 0
        for j in 0..<n { sum += x[j] * x[j] }
        return sum
    }

    /// Q2_K/Q3_K's 2-bit planes: each byte of 32 holds weights l, l+32, l+64, l+96 of a 128-half.
    static func pack2Bit(_ L: UnsafePointer<UInt8>, into qs: UnsafeMutableRawPointer) {
        for j in stride(from: 0, to: 256, by: 128) {
            for l in 0..<32 {
                let byte = L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6
                qs.storeBytes(of: byte, toByteOffset: j / 4 + l, as: UInt8.self)
            }
        }
    }

    /// Q4_K/Q5_K's eight 6-bit scales and mins in 12 bytes (inverse of `scaleMinK4`).
    public static func packScaleMinK4(_ ls: UnsafePointer<UInt8>, _ lm: UnsafePointer<UInt8>, into s: UnsafeMutableRawPointer) {
        let b = s.assumingMemoryBound(to: UInt8.self)
        for j in 0..<12 { b[j] = 0 }
        for j in 0..<8 {
            if j < 4 { b[j] = ls[j]; b[j + 4] = lm[j] }
            else {
                b[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4)
                b[j - 4] |= (ls[j] >> 4) << 6
                b[j] |= (lm[j] >> 4) << 6
            }
        }
    }

    /// Q3_K's sixteen 6-bit scales (already biased to 0...63) in 12 bytes (inverse of `scaleQ3K`).
    public static func packScalesQ3K(_ scale: (Int) -> Int, into s: UnsafeMutableRawPointer) {
        let b = s.assumingMemoryBound(to: UInt8.self)
        for j in 0..<12 { b[j] = 0 }
        for j in 0..<16 {
            var l = scale(j)
            if j < 8 { b[j] = UInt8(truncatingIfNeeded: l & 0x0F) } else { b[j - 8] |= UInt8(truncatingIfNeeded: (l & 0x0F) << 4) }
            l >>= 4
            b[j % 4 + 8] |= UInt8(truncatingIfNeeded: l << (2 * (j / 4)))
        }
    }

    /// One super-block; `qw` (256 importances of these columns) selects the importance search.
    func quantizeSuperBlock(_ x: UnsafePointer<Float>, into y: UnsafeMutableRawPointer, importance qw: UnsafePointer<Float>?, _ s: KScratch) {
        switch self {
        case .q2_K: Self.quantizeQ2K(x, y, qw, s)
        case .q3_K: Self.quantizeQ3K(x, y, qw, s)
        case .q4_K, .q5_K: quantizeQ45K(x, y, qw, s)
        case .q6_K: Self.quantizeQ6K(x, y, qw, s)
        default: fatalError("\(name) is not a K-quant")
        }
    }

    private static func quantizeQ2K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ qw: UnsafePointer<Float>?, _ s: KScratch) {
        let sc = y.assumingMemoryBound(to: UInt8.self)  // scales[16] @0
        if let qw {
            let sigma2 = sumOfSquares(x, 256) / 256
            for j in 0..<16 {
                s.sw[j] = s.importanceWeights(x + 16 * j, qw + 16 * j, sigma2: sigma2, count: 16)
                s.scales[j] = ScaleSearch.qkx(16, 3, x + 16 * j, weights: s.weights, s.L + 16 * j, theMin: &s.mins[j], s.Laux,
                                              rmin: -0.9, rdelta: 0.05, nstep: 36, useMAD: false)
            }
            let dm = ScaleSearch.qp(16, 15, s.scales, s.Ls, weights: s.sw)
            let mm = ScaleSearch.qp(16, 15, s.mins, s.Lm, weights: s.sw)
            storeHalf(dm, y, 80); storeHalf(mm, y, 82)
            for j in 0..<16 { sc[j] = s.Ls[j] | (s.Lm[j] << 4) }
        } else {
            var maxScale: Float = 0, maxMin: Float = 0
            for j in 0..<16 {
                for l in 0..<16 { s.weights[l] = abs(x[16 * j + l]) }
                s.scales[j] = ScaleSearch.qkx(16, 3, x + 16 * j, weights: s.weights, s.L + 16 * j, theMin: &s.mins[j], s.Laux,
                                              rmin: -0.5, rdelta: 0.1, nstep: 15, useMAD: true)
                if s.scales[j] > maxScale { maxScale = s.scales[j] }
                if s.mins[j] > maxMin { maxMin = s.mins[j] }
            }
            if maxScale > 0 {
                let iscale = 15 / maxScale
                for j in 0..<16 { sc[j] = UInt8(truncatingIfNeeded: ScaleSearch.nearestInt(iscale * s.scales[j])) }
                storeHalf(maxScale / 15, y, 80)
            } else {
                for j in 0..<16 { sc[j] = 0 }
                storeHalf(0, y, 80)
            }
            if maxMin > 0 {
                let iscale = 15 / maxMin
                for j in 0..<16 { sc[j] |= UInt8(truncatingIfNeeded: ScaleSearch.nearestInt(iscale * s.mins[j]) << 4) }
                storeHalf(maxMin / 15, y, 82)
            } else {
                storeHalf(0, y, 82)
            }
        }
        let d = loadHalf(y, 80), dmin = loadHalf(y, 82)
        for j in 0..<16 {
            let dl = d * Float(sc[j] & 0x0F)
            if dl == 0 { continue }
            let ml = dmin * Float(sc[j] >> 4)
            for i in 0..<16 {
                s.L[16 * j + i] = UInt8(max(0, min(3, ScaleSearch.nearestInt((x[16 * j + i] + ml) / dl))))
            }
        }
        pack2Bit(s.L, into: y + 16)
    }

    private static func quantizeQ3K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ qw: UnsafePointer<Float>?, _ s: KScratch) {
        let L = s.signedL
        if let qw {
            let sigma2 = 2 * sumOfSquares(x, 256) / 256
            for j in 0..<16 {
                s.sw[j] = s.importanceWeights(x + 16 * j, qw + 16 * j, sigma2: sigma2, count: 16)
                s.scales[j] = ScaleSearch.qx(16, 4, x + 16 * j, L + 16 * j, rmseType: 1, weights: s.weights)
            }
            let signedLs = UnsafeMutableRawPointer(s.Ls).assumingMemoryBound(to: Int8.self)
            let dBlock = ScaleSearch.qx(16, 32, s.scales, signedLs, rmseType: 1, weights: s.sw)
            packScalesQ3K({ Int(signedLs[$0]) }, into: y + 96)
            storeHalf(dBlock, y, 108)
        } else {
            var maxScale: Float = 0, amax: Float = 0
            for j in 0..<16 {
                s.scales[j] = ScaleSearch.q3(16, 4, x + 16 * j, L + 16 * j, rmse: true)
                let scale = abs(s.scales[j])
                if scale > amax { amax = scale; maxScale = s.scales[j] }
            }
            if maxScale != 0 {
                let iscale = -32 / maxScale
                packScalesQ3K({ j in
                    let l = Int(Int8(truncatingIfNeeded: ScaleSearch.nearestInt(iscale * s.scales[j])))
                    return max(-32, min(31, l)) + 32
                }, into: y + 96)
                storeHalf(1 / iscale, y, 108)
            } else {
                for j in 0..<12 { y.storeBytes(of: 0, toByteOffset: 96 + j, as: UInt8.self) }
                storeHalf(0, y, 108)
            }
        }
        let d = loadHalf(y, 108)
        for j in 0..<16 {
            let dl = d * Float(scaleQ3K(j, y + 96))
            if dl == 0 { continue }
            for i in 0..<16 {
                L[16 * j + i] = Int8(max(-4, min(3, ScaleSearch.nearestInt(x[16 * j + i] / dl))) + 4)
            }
        }
        // The third bit of weight j goes to bit j / 32 of hmask byte j % 32.
        let hmask = y.assumingMemoryBound(to: UInt8.self)
        for m in 0..<32 { hmask[m] = 0 }
        for j in 0..<256 where L[j] > 3 {
            hmask[j % 32] |= UInt8(1) << UInt8(j / 32)
            L[j] -= 4
        }
        pack2Bit(s.L, into: y + 32)
    }

    private func quantizeQ45K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ qw: UnsafePointer<Float>?, _ s: KScratch) {
        let five = self == .q5_K
        let nmax = five ? 31 : 15
        if let qw {
            let sigma2 = 2 * Self.sumOfSquares(x, 256) / 256
            for j in 0..<8 {
                s.sw[j] = s.importanceWeights(x + 32 * j, qw + 32 * j, sigma2: sigma2, count: 32)
                s.scales[j] = ScaleSearch.qkx(32, nmax, x + 32 * j, weights: s.weights, s.L + 32 * j, theMin: &s.mins[j], s.Laux,
                                              rmin: -0.9, rdelta: 0.05, nstep: 36, useMAD: false)
            }
            let dBlock = ScaleSearch.qp(8, 63, s.scales, s.Ls, weights: s.sw)
            let mBlock = ScaleSearch.qp(8, 63, s.mins, s.Lm, weights: s.sw)
            for j in 0..<8 { s.Ls[j] = min(63, s.Ls[j]); s.Lm[j] = min(63, s.Lm[j]) }
            Self.packScaleMinK4(s.Ls, s.Lm, into: y + 4)
            Self.storeHalf(dBlock, y, 0); Self.storeHalf(mBlock, y, 2)
        } else {
            var maxScale: Float = 0, maxMin: Float = 0
            for j in 0..<8 {
                let avx = (Self.sumOfSquares(x + 32 * j, 32) / 32).squareRoot()
                for l in 0..<32 { s.weights[l] = avx + abs(x[32 * j + l]) }
                s.scales[j] = ScaleSearch.qkx(32, nmax, x + 32 * j, weights: s.weights, s.L + 32 * j, theMin: &s.mins[j], s.Laux,
                                              rmin: five ? -0.5 : -1, rdelta: 0.1, nstep: five ? 15 : 20, useMAD: false)
                if s.scales[j] > maxScale { maxScale = s.scales[j] }
                if s.mins[j] > maxMin { maxMin = s.mins[j] }
            }
            let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
            let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
            for j in 0..<8 {
                s.Ls[j] = min(63, UInt8(truncatingIfNeeded: ScaleSearch.nearestInt(invScale * s.scales[j])))
                s.Lm[j] = min(63, UInt8(truncatingIfNeeded: ScaleSearch.nearestInt(invMin * s.mins[j])))
            }
            Self.packScaleMinK4(s.Ls, s.Lm, into: y + 4)
            Self.storeHalf(maxScale / 63, y, 0); Self.storeHalf(maxMin / 63, y, 2)
        }
        let d = loadHalf(y, 0), dmin = loadHalf(y, 2)
        for j in 0..<8 {
            let (sc, m) = Self.scaleMinK4(j, y + 4)
            let dl = d * Float(sc)
            if dl == 0 { continue }
            let ml = dmin * Float(m)
            for i in 0..<32 {
                s.L[32 * j + i] = UInt8(max(0, min(nmax, ScaleSearch.nearestInt((x[32 * j + i] + ml) / dl))))
            }
        }
        let qs = y.assumingMemoryBound(to: UInt8.self) + (five ? 48 : 16)
        if five {
            let qh = y.assumingMemoryBound(to: UInt8.self) + 16
            for j in 0..<32 { qh[j] = 0 }
            for pair in 0..<4 {
                for j in 0..<32 {
                    var l1 = s.L[64 * pair + j], l2 = s.L[64 * pair + j + 32]
                    if l1 > 15 { l1 -= 16; qh[j] |= UInt8(1) << UInt8(2 * pair) }
                    if l2 > 15 { l2 -= 16; qh[j] |= UInt8(2) << UInt8(2 * pair) }
                    qs[32 * pair + j] = l1 | l2 << 4
                }
            }
        } else {
            for pair in 0..<4 {
                for l in 0..<32 { qs[32 * pair + l] = s.L[64 * pair + l] | s.L[64 * pair + l + 32] << 4 }
            }
        }
    }

    private static func quantizeQ6K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ qw: UnsafePointer<Float>?, _ s: KScratch) {
        let L = s.signedL
        var maxScale: Float = 0, maxAbsScale: Float = 0
        for ib in 0..<16 {
            let scale = ScaleSearch.qx(16, 32, x + 16 * ib, L + 16 * ib, rmseType: 1, weights: qw.map { $0 + 16 * ib })
            s.scales[ib] = scale
            if abs(scale) > maxAbsScale { maxAbsScale = abs(scale); maxScale = scale }
        }
        if maxAbsScale < ScaleSearch.groupMaxEpsilon {
            for i in 0..<210 { y.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
            return
        }
        let iscale = -128 / maxScale
        storeHalf(1 / iscale, y, 208)
        let scales = (y + 192).assumingMemoryBound(to: Int8.self)
        for ib in 0..<16 { scales[ib] = Int8(truncatingIfNeeded: min(127, ScaleSearch.nearestInt(iscale * s.scales[ib]))) }
        let d = loadHalf(y, 208)
        for j in 0..<16 {
            let dl = d * Float(scales[j])
            if dl == 0 { continue }
            for i in 0..<16 {
                L[16 * j + i] = Int8(max(-32, min(31, ScaleSearch.nearestInt(x[16 * j + i] / dl))) + 32)
            }
        }
        let ql = y.assumingMemoryBound(to: UInt8.self), qh = ql + 128
        for half in 0..<2 {
            let j = 128 * half
            for l in 0..<32 {
                func code(_ k: Int) -> UInt8 { UInt8(bitPattern: L[j + l + 32 * k]) }
                ql[64 * half + l] = (code(0) & 0x0F) | (code(2) & 0x0F) << 4
                ql[64 * half + l + 32] = (code(1) & 0x0F) | (code(3) & 0x0F) << 4
                qh[32 * half + l] = code(0) >> 4 | (code(1) >> 4) << 2 | (code(2) >> 4) << 4 | (code(3) >> 4) << 6
            }
        }
    }
}
