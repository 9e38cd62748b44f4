/// Writing one weight's integer code into an encoded block, leaving its scales alone.
///
/// Within a scale group every format is affine in its code: weight = v0 + level·step, with
/// level in 0..<levels (Q8_0's signed byte is level − 128, Q3_K's code is level − 4, Q6_K's
/// level − 32, and so on). GPTQ fixes a block's scales first, then picks each weight's level
/// column by column while it compensates the error; these writers put the levels back.
extension BlockFormat {
    /// How many codes one weight can take.
    public var levels: Int {
        switch self {
        case .q2_K: return 4
        case .q3_K: return 8
        case .q4_0, .q4_1, .q4_K: return 16
        case .q5_0, .q5_1, .q5_K: return 32
        case .q6_K: return 64
        case .q8_0: return 256
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128: return 1 << groupBits!
        }
    }

    /// Sets element `c` (0..<elementsPerBlock) of the block at `block` to `level`.
    public func setLevel(_ block: UnsafeMutableRawPointer, _ c: Int, _ level: Int) {
        @inline(__always) func put(_ offset: Int, _ shift: Int, _ width: Int, _ value: Int) { Self.putBits(block, offset, shift, width, value) }
        switch self {
        case .q4_0, .q4_1, .q5_0, .q5_1:
            let codes = self == .q4_0 ? 2 : self == .q4_1 ? 4 : self == .q5_0 ? 6 : 8
            put(codes + c % 16, 4 * (c / 16), 4, level & 0x0F)
            if self == .q5_0 || self == .q5_1 { put((self == .q5_0 ? 2 : 4) + c / 8, c % 8, 1, level >> 4) }
        case .q8_0:
            block.storeBytes(of: Int8(truncatingIfNeeded: level - 128), toByteOffset: 2 + c, as: Int8.self)
        case .q2_K, .q3_K:
            let half = c / 128, plane = (c % 128) / 32, l = c % 32
            put((self == .q2_K ? 16 : 32) + half * 32 + l, 2 * plane, 2, level & 3)
            if self == .q3_K { put(l, half * 4 + plane, 1, level >> 2) }
        case .q4_K, .q5_K:
            let pair = c / 64, nibble = (c % 64) / 32, l = c % 32
            put((self == .q4_K ? 16 : 48) + pair * 32 + l, 4 * nibble, 4, level & 0x0F)
            if self == .q5_K { put(16 + l, 2 * pair + nibble, 1, level >> 4) }
        case .q6_K:
            let half = c / 128, k = (c % 128) / 32, l = c % 32
            put(half * 64 + l + 32 * (k & 1), 4 * (k >> 1), 4, level & 0x0F)
            put(128 + half * 32 + l, 2 * k, 2, level >> 4)
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
            setGroupLevel(block, c, level)
        }
    }

    /// Writes the low `width` bits of `value` at bit `shift` of byte `offset`, keeping the byte's other bits.
    @inline(__always)
    static func putBits(_ block: UnsafeMutableRawPointer, _ offset: Int, _ shift: Int, _ width: Int, _ value: Int) {
        let mask = UInt8((1 << width) - 1) << UInt8(shift)
        let old = block.load(fromByteOffset: offset, as: UInt8.self)
        block.storeBytes(of: (old & ~mask) | (UInt8(truncatingIfNeeded: value << shift) & mask), toByteOffset: offset, as: UInt8.self)
    }

    /// For each element of an encoded block, the value at level 0 and the step per level, found by
    /// writing levels 0 and 1 into a copy and decoding it (so no format's arithmetic is repeated).
    public func levelGrid(_ block: UnsafeRawPointer, origin: UnsafeMutablePointer<Float>, step: UnsafeMutablePointer<Float>) {
        let n = elementsPerBlock, bytes = bytesPerBlock
        withUnsafeTemporaryAllocation(byteCount: bytes, alignment: 16) { scratch in
            let copy = scratch.baseAddress!
            copy.copyMemory(from: block, byteCount: bytes)
            for c in 0..<n { setLevel(copy, c, 0) }
            dequantizeRow(UnsafeRawPointer(copy), count: n, into: origin)
            for c in 0..<n { setLevel(copy, c, 1) }
            dequantizeRow(UnsafeRawPointer(copy), count: n, into: step)
            for c in 0..<n { step[c] -= origin[c] }
        }
    }
}
