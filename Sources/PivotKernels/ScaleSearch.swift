/// ggml's scale searches for its quantizers (ggml-quants.c: `make_qx_quants`, `make_q3_quants`,
/// `make_qkx2_quants`, `make_qkx3_quants`, `make_qp_quants`), written again operation for operation
/// in the same float order, so that Pivot's K-quant files are byte-identical to llama-quantize's.
/// (ggml-base is compiled without FMA contraction; Swift does not contract either.)
///
/// Each search picks a scale (and for the "qkx" ones a minimum) for a small group of weights,
/// trying a few candidate inverse scales around the naive max/nmax and keeping the one with the
/// least weighted squared error; the codes `L` it leaves are the codes for that scale.
public enum ScaleSearch {
    /// Below this magnitude a group counts as all zero.
    static let groupMaxEpsilon: Float = 1e-15

    /// ggml's `nearest_int`: round half to even through the 1.5·2²³ trick (|x| ≤ 2²²).
    @inline(__always)
    public static func nearestInt(_ x: Float) -> Int {
        Int(Int32(bitPattern: (x + 12582912).bitPattern & 0x007F_FFFF)) - 0x0040_0000
    }

    /// How `make_qx_quants` weighs element i when no importance is given.
    @inline(__always)
    private static func defaultWeight(_ x: Float, rmseType: Int) -> Float {
        switch rmseType {
        case 1: return x * x
        case 2: return 1
        case 3: return abs(x)
        default: return abs(x).squareRoot()
        }
    }

    /// Symmetric codes in 0..<2·nmax (stored biased by nmax) and their scale.
    static func qx(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>,
                   rmseType: Int, weights qw: UnsafePointer<Float>?) -> Float {
        var maxValue: Float = 0, amax: Float = 0
        for i in 0..<n { let ax = abs(x[i]); if ax > amax { amax = ax; maxValue = x[i] } }
        if amax < groupMaxEpsilon { for i in 0..<n { L[i] = 0 }; return 0 }
        var iscale = Float(-nmax) / maxValue
        func code(_ v: Float) -> Int { max(-nmax, min(nmax - 1, nearestInt(v))) }
        if rmseType == 0 {
            for i in 0..<n { L[i] = Int8(truncatingIfNeeded: nmax + code(iscale * x[i])) }
            return 1 / iscale
        }
        var rmse = rmseType
        var returnEarly = false
        if rmse < 0 { rmse = -rmse; returnEarly = true }
        func weight(_ i: Int) -> Float { qw.map { $0[i] } ?? defaultWeight(x[i], rmseType: rmse) }
        var sumlx: Float = 0, suml2: Float = 0
        for i in 0..<n {
            let l = code(iscale * x[i])
            L[i] = Int8(truncatingIfNeeded: l + nmax)
            let w = weight(i)
            sumlx += w * x[i] * Float(l)
            suml2 += w * Float(l) * Float(l)
        }
        var scale: Float = suml2 != 0 ? sumlx / suml2 : 0
        if returnEarly { return suml2 > 0 ? 0.5 * (scale + 1 / iscale) : 1 / iscale }
        var best = scale * sumlx
        for step in -9...9 where step != 0 {
            iscale = -(Float(nmax) + 0.1 * Float(step)) / maxValue
            sumlx = 0; suml2 = 0
            for i in 0..<n {
                let l = code(iscale * x[i])
                let w = weight(i)
                sumlx += w * x[i] * Float(l)
                suml2 += w * Float(l) * Float(l)
            }
            if suml2 > 0 && sumlx * sumlx > best * suml2 {
                for i in 0..<n { L[i] = Int8(truncatingIfNeeded: nmax + code(iscale * x[i])) }
                scale = sumlx / suml2; best = scale * sumlx
            }
        }
        return scale
    }

    /// Q3_K's symmetric search: codes refined one element at a time, weights x².
    static func q3(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>, rmse: Bool) -> Float {
        var maxValue: Float = 0, amax: Float = 0
        for i in 0..<n { let ax = abs(x[i]); if ax > amax { amax = ax; maxValue = x[i] } }
        if amax < groupMaxEpsilon { for i in 0..<n { L[i] = 0 }; return 0 }
        let iscale = Float(-nmax) / maxValue
        func clamp(_ l: Int) -> Int { max(-nmax, min(nmax - 1, l)) }
        guard rmse else {
            for i in 0..<n { L[i] = Int8(truncatingIfNeeded: clamp(nearestInt(iscale * x[i])) + nmax) }
            return 1 / iscale
        }
        var sumlx: Float = 0, suml2: Float = 0
        for i in 0..<n {
            let l = clamp(nearestInt(iscale * x[i]))
            L[i] = Int8(truncatingIfNeeded: l)
            let w = x[i] * x[i]
            sumlx += w * x[i] * Float(l)
            suml2 += w * Float(l) * Float(l)
        }
        for _ in 0..<5 {
            var changed = 0
            for i in 0..<n {
                let w = x[i] * x[i]
                let li = Float(L[i])
                var slx = sumlx - w * x[i] * li
                if slx > 0 {
                    var sl2 = suml2 - w * li * li
                    let newL = clamp(nearestInt(x[i] * sl2 / slx))
                    if newL != Int(L[i]) {
                        slx += w * x[i] * Float(newL)
                        sl2 += w * Float(newL) * Float(newL)
                        if sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            L[i] = Int8(truncatingIfNeeded: newL); sumlx = slx; suml2 = sl2
                            changed += 1
                        }
                    }
                }
            }
            if changed == 0 { break }
        }
        for i in 0..<n { L[i] = Int8(truncatingIfNeeded: Int(L[i]) + nmax) }
        return suml2 > 0 ? sumlx / suml2 : 0
    }

    /// Asymmetric codes in 0...nmax with a minimum ≤ 0 (returned negated in `theMin`), least weighted
    /// error over nstep+1 candidate scales: `make_qkx2_quants` and `make_qkx3_quants` (the same
    /// search; qkx3 alone accepts nil `weights`, meaning x²). `useMAD` false is squared error.
    static func qkx(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, weights: UnsafePointer<Float>?,
                    _ L: UnsafeMutablePointer<UInt8>, theMin: inout Float, _ Laux: UnsafeMutablePointer<UInt8>,
                    rmin: Float, rdelta: Float, nstep: Int, useMAD: Bool) -> Float {
        func weight(_ i: Int) -> Float { weights.map { $0[i] } ?? x[i] * x[i] }
        var minValue = x[0], maxValue = x[0]
        var sumW = weight(0)
        var sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < minValue { minValue = x[i] }
            if x[i] > maxValue { maxValue = x[i] }
            let w = weight(i)
            sumW += w
            sumX += w * x[i]
        }
        if minValue > 0 { minValue = 0 }
        if maxValue <= minValue {  // qkx2 tests ==: the same, as min ≤ max here
            for i in 0..<n { L[i] = 0 }
            theMin = -minValue
            return 0
        }
        var iscale = Float(nmax) / (maxValue - minValue)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = nearestInt(iscale * (x[i] - minValue))
            L[i] = UInt8(truncatingIfNeeded: max(0, min(nmax, l)))
            var diff = scale * Float(L[i]) + minValue - x[i]
            diff = useMAD ? abs(diff) : diff * diff
            bestError += weight(i) * diff
        }
        if nstep < 1 { theMin = -minValue; return scale }
        for step in 0...nstep {
            iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (maxValue - minValue)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = max(0, min(nmax, nearestInt(iscale * (x[i] - minValue))))
                Laux[i] = UInt8(truncatingIfNeeded: l)
                let w = weight(i)
                sumL += w * Float(l)
                sumL2 += w * Float(l) * Float(l)
                sumXL += w * Float(l) * x[i]
            }
            let D = sumW * sumL2 - sumL * sumL
            if D > 0 {
                var thisScale = (sumW * sumXL - sumX * sumL) / D
                var thisMin = (sumL2 * sumX - sumL * sumXL) / D
                if thisMin > 0 { thisMin = 0; thisScale = sumXL / sumL2 }
                var error: Float = 0
                for i in 0..<n {
                    var diff = thisScale * Float(Laux[i]) + thisMin - x[i]
                    diff = useMAD ? abs(diff) : diff * diff
                    error += weight(i) * diff
                }
                if error < bestError {
                    for i in 0..<n { L[i] = Laux[i] }
                    bestError = error; scale = thisScale; minValue = thisMin
                }
            }
        }
        theMin = -minValue
        return scale
    }

    /// Codes in 0...nmax for non-negative values (the sub-block scales of the imatrix K-quants).
    static func qp(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<UInt8>,
                   weights qw: UnsafePointer<Float>) -> Float {
        var maxValue: Float = 0
        for i in 0..<n { maxValue = max(maxValue, x[i]) }
        if maxValue < groupMaxEpsilon { for i in 0..<n { L[i] = 0 }; return 0 }
        var iscale = Float(nmax) / maxValue
        for i in 0..<n { L[i] = UInt8(truncatingIfNeeded: nearestInt(iscale * x[i])) }
        let scale = 1 / iscale
        var bestMSE: Float = 0
        for i in 0..<n {
            let diff = x[i] - scale * Float(L[i])
            bestMSE += qw[i] * diff * diff
        }
        for step in -4...4 where step != 0 {
            let iscaleStep = (0.1 * Float(step) + Float(nmax)) / maxValue
            let scaleStep = 1 / iscaleStep
            var mse: Float = 0
            for i in 0..<n {
                let l = min(nmax, nearestInt(iscaleStep * x[i]))
                let diff = x[i] - scaleStep * Float(l)
                mse += qw[i] * diff * diff
            }
            if mse < bestMSE { bestMSE = mse; iscale = iscaleStep }
        }
        var sumlx: Float = 0, suml2: Float = 0
        for i in 0..<n {
            let l = min(nmax, nearestInt(iscale * x[i]))
            L[i] = UInt8(truncatingIfNeeded: l)
            sumlx += qw[i] * x[i] * Float(l)
            suml2 += qw[i] * Float(l) * Float(l)
        }
        for _ in 0..<5 {
            var changed = 0
            for i in 0..<n {
                let w = qw[i], li = Float(L[i])
                var slx = sumlx - w * x[i] * li
                var sl2 = suml2 - w * li * li
                if slx > 0 && sl2 > 0 {
                    let newL = min(nmax, nearestInt(x[i] * sl2 / slx))
                    if newL != Int(L[i]) {
                        slx += w * x[i] * Float(newL)
                        sl2 += w * Float(newL) * Float(newL)
                        if slx * slx * suml2 > sumlx * sumlx * sl2 {
                            L[i] = UInt8(truncatingIfNeeded: newL); sumlx = slx; suml2 = sl2
                            changed += 1
                        }
                    }
                }
            }
            if changed == 0 { break }
        }
        return suml2 > 0 ? sumlx / suml2 : 0
    }
}
