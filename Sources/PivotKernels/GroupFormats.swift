#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Pivot's group-wise 2-, 3- and 4-bit formats: the form the GPTQ and LLM-MQ papers use, for rows
/// where GGUF has nothing below 4 bits (its 2- and 3-bit K-quants need rows of 256; this model's
/// projections but ffn_down are 576 wide). Not GGML types: llama.cpp refuses a file holding them.
///
/// A block is one group of G weights (32, 64 or 128): f16 scale d, f16 minimum m, then per run of
/// 32 weights its codes q (0 ..< 2^bits); a weight is d·q + m.
/// - 2-bit: 8 bytes per run; weight j is bits 2(j/8)… of byte j % 8.
/// - 4-bit: 16 bytes per run; weight j is the low nibble of byte j (j < 16), else the high nibble of byte j − 16.
/// - 3-bit: the 2-bit planes of every run, then 4 bytes per run: bit j = bit 2 of weight j's code.
/// Each run of 32 decodes with a few vector shifts into the bytes one `vpmaddubsw` multiplies with
/// an activation block, the minimum going through the block's activation sum, as Q4_1's does. That
/// one-row kernel serves matrices whose rows do not come in eights; the others are repacked into
/// the eight-row interleaved layout at load (`InterleavedGroupwise.swift`).
extension BlockFormat {
    /// Code bits of a group-wise format (nil for GGML formats).
    public var groupBits: Int? {
        switch self {
        case .q2_g32, .q2_g64, .q2_g128: return 2
        case .q3_g32, .q3_g64, .q3_g128: return 3
        case .q4_g64, .q4_g128: return 4
        default: return nil
        }
    }

    /// A Pivot extension type (not loadable by other GGUF runtimes).
    public var isExtension: Bool { groupBits != nil }

    /// The group-wise formats, fewest bits first.
    public static let extensionFormats: [BlockFormat] = [.q2_g128, .q2_g64, .q2_g32, .q3_g128, .q3_g64, .q3_g32, .q4_g128, .q4_g64]

    /// The group-wise format of `bits` and `group` weights, if there is one.
    public static func grouped(bits: Int, group: Int) -> BlockFormat? {
        extensionFormats.first { $0.groupBits == bits && $0.elementsPerBlock == group }
    }

    /// Bits of the 2- or 4-bit plane holding a code's low bits.
    var planeBits: Int { groupBits == 4 ? 4 : 2 }
    /// Runs of 32 weights per group.
    var runsPerGroup: Int { elementsPerBlock / 32 }
    /// Bytes of one run's plane.
    var planeBytes: Int { 4 * planeBits }
    /// Offset of the third-bit words (3-bit formats).
    var highBitsOffset: Int { 4 + runsPerGroup * planeBytes }

    var groupBlockBytes: Int { 4 + runsPerGroup * (planeBytes + (groupBits == 3 ? 4 : 0)) }

    /// Where weight j (0..<32) of run `run` sits in the plane: byte offset from the block, and bit shift.
    @inline(__always) func planePosition(_ run: Int, _ j: Int) -> (offset: Int, shift: Int) {
        (4 + run * planeBytes + j % planeBytes, planeBits * (j / planeBytes))
    }

    /// The code of weight j of run `run` in `block`.
    @inline(__always) func groupCode(_ block: UnsafeRawPointer, _ run: Int, _ j: Int) -> Int {
        let (offset, shift) = planePosition(run, j)
        var q = Int(block.load(fromByteOffset: offset, as: UInt8.self) >> UInt8(shift)) & ((1 << planeBits) - 1)
        if groupBits == 3 { q |= Int((block.load(fromByteOffset: highBitsOffset + 4 * run + j / 8, as: UInt8.self) >> UInt8(j % 8)) & 1) << 2 }
        return q
    }

    func dequantizeGroupRow(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        let group = elementsPerBlock
        for b in 0..<(count / group) {
            let block = source + b * bytesPerBlock
            let d = loadHalf(block, 0), m = loadHalf(block, 2)
            for c in 0..<group { out[b * group + c] = d * Float(groupCode(block, c / 32, c % 32)) + m }
        }
    }

    func setGroupLevel(_ block: UnsafeMutableRawPointer, _ c: Int, _ level: Int) {
        @inline(__always) func put(_ offset: Int, _ shift: Int, _ width: Int, _ value: Int) {
            Self.putBits(block, offset, shift, width, value)
        }
        let run = c / 32, j = c % 32
        let (offset, shift) = planePosition(run, j)
        put(offset, shift, planeBits, level & ((1 << planeBits) - 1))
        if groupBits == 3 { put(highBitsOffset + 4 * run + j / 8, j % 8, 1, level >> 2) }
    }

    /// One row into a group-wise format: per group, the scale and minimum of least weighted squared
    /// error (ggml's `make_qkx3_quants` search; weights importance·sqrt(σ² + x²) with an importance
    /// matrix, else x²), stored as f16, then every code rounded against the stored values.
    func quantizeGroupRow(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer, importance: UnsafePointer<Float>?) {
        let group = elementsPerBlock, top = (1 << groupBits!) - 1
        let sigma2 = Self.sumOfSquares(x, count) / Float(count)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 2 * group) { codes in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: group) { weightBuffer in
                let L = codes.baseAddress!, Laux = L + group, weights = weightBuffer.baseAddress!
                for b in 0..<(count / group) {
                    let xb = x + b * group, block = out + b * bytesPerBlock
                    if let importance {
                        for l in 0..<group { weights[l] = importance[b * group + l] * (sigma2 + xb[l] * xb[l]).squareRoot() }
                    }
                    var minimum: Float = 0
                    let d = ScaleSearch.qkx(group, top, xb, weights: importance == nil ? nil : UnsafePointer(weights), L, theMin: &minimum, Laux,
                                            rmin: -0.9, rdelta: 0.05, nstep: 36, useMAD: false)
                    Self.storeHalf(d, block, 0)
                    Self.storeHalf(-minimum, block, 2)
                    let dh = loadHalf(block, 0), mh = loadHalf(block, 2)
                    let inverse: Float = dh != 0 ? 1 / dh : 0
                    for c in 0..<group {
                        setGroupLevel(block, c, max(0, min(top, ScaleSearch.nearestInt((xb[c] - mh) * inverse))))
                    }
                }
            }
        }
    }

    /// Scale and minimum of 32-weight run `g` of a row (for the decoded-group kernel).
    @inline(__always) func groupwiseScales(_ row: UnsafeRawPointer, _ g: Int, into out: inout DecodedGroup) {
        let block = row + (g / runsPerGroup) * bytesPerBlock
        out.scale0 = loadHalf(block, 0); out.scale1 = out.scale0
        out.offset0 = loadHalf(block, 2); out.offset1 = out.offset0
        out.signed = false
    }

    @inline(__always) func groupwiseCodes(_ row: UnsafeRawPointer, _ g: Int, into quants: inout SIMD32<Int8>) {
        let block = row + (g / runsPerGroup) * bytesPerBlock, run = g % runsPerGroup
        for j in 0..<32 { quants[j] = Int8(groupCode(block, run, j)) }
    }

    #if arch(x86_64)
    /// `groupwiseCodes` by vector shifts (the dedicated kernels' decoder, with this format's bits and runs).
    @inline(__always) func groupwiseCodesAVX2(_ row: UnsafeRawPointer, _ g: Int) -> __m256i {
        groupwiseRunCodes(row + (g / runsPerGroup) * bytesPerBlock, g % runsPerGroup, bits: groupBits!, runs: runsPerGroup)
    }
    #endif
}

#if arch(x86_64)
/// The codes of run `run` of a group-wise block, `bits` and `runs` constants at every call site.
@inline(__always)
func groupwiseRunCodes(_ block: UnsafeRawPointer, _ run: Int, bits: Int, runs: Int) -> __m256i {
    if bits == 4 { return unpackNibbles(block + 4 + 16 * run) }
    let plane = _mm256_set1_epi64x(Int64(bitPattern: block.loadUnaligned(fromByteOffset: 4 + 8 * run, as: UInt64.self)))
    let low = _mm256_and_si256(_mm256_srlv_epi64(plane, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3))
    guard bits == 3 else { return low }
    let third = block.loadUnaligned(fromByteOffset: 4 + 8 * runs + 4 * run, as: UInt32.self).littleEndian
    return _mm256_or_si256(low, _mm256_srli_epi16(fifthBits(third), 2))
}

@inline(__always) func groupwiseBlockBytes(bits: Int, runs: Int) -> Int { 4 + runs * (bits == 4 ? 16 : bits == 3 ? 12 : 8) }

/// A group-wise row against one activation row: per run of 32, one unsigned×signed multiply-add
/// scaled by d·(activation scale), and the minimum through the run's activation sum (as Q4_1).
@inline(__always)
func dotGroupwise1(_ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int, bits: Int, runs: Int) -> Float {
    let blockBytes = groupwiseBlockBytes(bits: bits, runs: runs)
    var acc = _mm256_setzero_ps()
    var minimumTerm: Float = 0
    for g in 0..<(blocks / runs) {
        let block = w + g * blockBytes
        let d = loadHalf(block, 0), m = loadHalf(block, 2)
        for run in 0..<runs {
            let b = g * runs + run
            let product = multiplySum(groupwiseRunCodes(block, run, bits: bits, runs: runs), loadBytes32(a.quants + b * 32))
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.scales[b]), product, acc)
            minimumTerm += m * a.sums[b]
        }
    }
    return horizontalSum(acc) + minimumTerm
}

/// Four activation rows sharing each decoded run; every row summed in `dotGroupwise1`'s order.
@inline(__always)
func dotGroupwise4(_ w: UnsafeRawPointer, _ a0: Q8Row, _ a1: Q8Row, _ a2: Q8Row, _ a3: Q8Row,
                   blocks: Int, bits: Int, runs: Int) -> SIMD4<Float> {
    let blockBytes = groupwiseBlockBytes(bits: bits, runs: runs)
    var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
    var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
    var minimumTerm = SIMD4<Float>()
    for g in 0..<(blocks / runs) {
        let block = w + g * blockBytes
        let d = loadHalf(block, 0), m = loadHalf(block, 2)
        for run in 0..<runs {
            let b = g * runs + run, offset = b * 32
            let q = groupwiseRunCodes(block, run, bits: bits, runs: runs)
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * a0.scales[b]), multiplySum(q, loadBytes32(a0.quants + offset)), acc0)
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * a1.scales[b]), multiplySum(q, loadBytes32(a1.quants + offset)), acc1)
            acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d * a2.scales[b]), multiplySum(q, loadBytes32(a2.quants + offset)), acc2)
            acc3 = _mm256_fmadd_ps(_mm256_set1_ps(d * a3.scales[b]), multiplySum(q, loadBytes32(a3.quants + offset)), acc3)
            minimumTerm += m * SIMD4(a0.sums[b], a1.sums[b], a2.sums[b], a3.sums[b])
        }
    }
    return SIMD4(horizontalSum(acc0), horizontalSum(acc1), horizontalSum(acc2), horizontalSum(acc3)) + minimumTerm
}

/// `quantizedMatMul` for the group-wise formats, with bits and runs per group as constants.
@inline(__always)
func groupwiseMatMul(_ format: BlockFormat, _ weights: UnsafeRawPointer, _ rowBytes: Int, _ outputs: Range<Int>,
                     _ act: Q8Activations, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    @inline(__always) func run(_ bits: Int, _ runs: Int) {
        matMulTiles(weights, rowBytes, outputs, act, out, outStride) { dotGroupwise1($0, $1, blocks: $2, bits: bits, runs: runs) }
            quad: { dotGroupwise4($0, $1, $2, $3, $4, blocks: $5, bits: bits, runs: runs) }
    }
    switch format {
    case .q2_g32: run(2, 1)
    case .q2_g64: run(2, 2)
    case .q2_g128: run(2, 4)
    case .q3_g32: run(3, 1)
    case .q3_g64: run(3, 2)
    case .q3_g128: run(3, 4)
    case .q4_g64: run(4, 2)
    case .q4_g128: run(4, 4)
    default: fatalError("\(format.name) is not group-wise")
    }
}

/// `quantizedDot` for the group-wise formats.
@inline(__always)
func groupwiseDot(_ format: BlockFormat, _ w: UnsafeRawPointer, _ a: Q8Row, blocks: Int) -> Float {
    dotGroupwise1(w, a, blocks: blocks, bits: format.groupBits!, runs: format.runsPerGroup)
}
#endif
