/// GGML block formats, defined once. Each block packs 32 weights.
///
/// - Q4_0: f16 scale d, 16 bytes of nibbles; value = d * (q - 8)
/// - Q4_1: f16 scale d, f16 minimum m, 16 bytes of nibbles; value = d * q + m
/// - Q8_0: f16 scale d, 32 signed bytes; value = d * q
/// Nibble j of a block is the low half of byte j, nibble j + 16 is its high half.
public enum BlockFormat: Int, Sendable, CaseIterable {
    case q4_0, q4_1, q8_0

    public static let blockSize = 32

    public var bytesPerBlock: Int {
        switch self {
        case .q4_0: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        }
    }

    /// Bytes for one row of `count` weights (`count` must be a multiple of 32).
    public func rowBytes(_ count: Int) -> Int { count / BlockFormat.blockSize * bytesPerBlock }

    /// Reference dequantization of one row; used for embeddings and by the tests.
    public func dequantizeRow(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        let blocks = count / BlockFormat.blockSize
        for b in 0..<blocks {
            let block = source + b * bytesPerBlock
            let d = loadHalf(block, 0)
            let o = out + b * 32
            switch self {
            case .q4_0:
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                    o[j] = d * Float(Int(byte & 0x0F) - 8)
                    o[j + 16] = d * Float(Int(byte >> 4) - 8)
                }
            case .q4_1:
                let m = loadHalf(block, 2)
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                    o[j] = d * Float(byte & 0x0F) + m
                    o[j + 16] = d * Float(byte >> 4) + m
                }
            case .q8_0:
                for j in 0..<32 { o[j] = d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) }
            }
        }
    }
}

/// Reads an IEEE half at `offset` (unaligned) as Float; F16C makes this one instruction.
@inline(__always) public func loadHalf(_ base: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

/// bfloat16 is the top half of an IEEE float.
@inline(__always) public func bfloat16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Converts `count` halfs to floats.
public func convertHalfs(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
    for i in 0..<count { out[i] = loadHalf(source, 2 * i) }
}
