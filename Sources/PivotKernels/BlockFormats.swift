/// GGML block formats, defined once, in ggml's byte layout.
///
/// Blocks of 32 weights:
/// - Q4_0: f16 scale d, 16 bytes of nibbles; value = d * (q - 8)
/// - Q4_1: f16 scale d, f16 minimum m, 16 bytes of nibbles; value = d * q + m
/// - Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit per weight in 4 bytes before the nibbles; q − 16 / d·q + m
/// - Q8_0: f16 scale d, 32 signed bytes; value = d * q
/// Nibble j of a block is the low half of byte j, nibble j + 16 is its high half.
///
/// K-quants, super-blocks of 256 with quantized per-sub-block scales (`KQuants.swift`):
/// Q2_K (84 bytes), Q3_K (110), Q4_K (144), Q5_K (176), Q6_K (210).
///
/// Pivot's extension types, groups of 32/64/128 with an f16 scale and minimum (`GroupFormats.swift`):
/// Q2_G32 … Q4_G128; no other runtime loads them.
public enum BlockFormat: Int, Sendable, CaseIterable {
    case q4_0, q4_1, q8_0, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K
    case q2_g32, q2_g64, q2_g128, q3_g32, q3_g64, q3_g128, q4_g64, q4_g128

    /// Weights per block: 32, 256 for the K-quants, the group for the extension types.
    public var elementsPerBlock: Int {
        switch self {
        case .q2_g64, .q3_g64, .q4_g64: return 64
        case .q2_g128, .q3_g128, .q4_g128: return 128
        default: return isKQuant ? 256 : 32
        }
    }

    public var isKQuant: Bool {
        switch self {
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return true
        default: return false
        }
    }

    public var bytesPerBlock: Int {
        switch self {
        case .q4_0: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        case .q5_0: return 22
        case .q5_1: return 24
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128: return groupBlockBytes
        }
    }

    /// ggml's type id (ggml.h); Pivot's own types take 1000 + 10·bits + (0, 1, 2 for groups of 32, 64, 128),
    /// far above ggml's, so other readers reject them as unknown types.
    public var ggmlType: UInt32 {
        switch self {
        case .q4_0: return 2
        case .q4_1: return 3
        case .q5_0: return 6
        case .q5_1: return 7
        case .q8_0: return 8
        case .q2_K: return 10
        case .q3_K: return 11
        case .q4_K: return 12
        case .q5_K: return 13
        case .q6_K: return 14
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128:
            return UInt32(1000 + 10 * groupBits! + [32: 0, 64: 1, 128: 2][elementsPerBlock]!)
        }
    }

    /// The format named `name` ("Q4_K", "q2_g64"), case-insensitive.
    public static func named(_ name: String) -> BlockFormat? {
        allCases.first { $0.name.lowercased() == name.lowercased() }
    }

    public init?(ggmlType: UInt32) {
        guard let format = BlockFormat.allCases.first(where: { $0.ggmlType == ggmlType }) else { return nil }
        self = format
    }

    public var name: String {
        switch self {
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q8_0: return "Q8_0"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q2_g32, .q2_g64, .q2_g128, .q3_g32, .q3_g64, .q3_g128, .q4_g64, .q4_g128: return "Q\(groupBits!)_G\(elementsPerBlock)"
        }
    }

    /// Bytes for one row of `count` weights (`count` must be a multiple of `elementsPerBlock`).
    public func rowBytes(_ count: Int) -> Int { count / elementsPerBlock * bytesPerBlock }

    /// Reference dequantization of one row; used for embeddings, the float path and the tests.
    public func dequantizeRow(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        if isKQuant {
            for b in 0..<(count / 256) { dequantizeSuperBlock(source + b * bytesPerBlock, into: out + b * 256) }
            return
        }
        if isExtension { return dequantizeGroupRow(source, count: count, into: out) }
        let blocks = count / 32
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
            case .q5_0, .q5_1:
                // Bit j of the 32-bit word qh is the fifth bit of weight j.
                let hasMin = self == .q5_1
                let m = hasMin ? loadHalf(block, 2) : 0
                let qhOffset = hasMin ? 4 : 2
                let qh = block.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self).littleEndian
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: qhOffset + 4 + j, as: UInt8.self)
                    let low = Int(byte & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
                    let high = Int(byte >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                    o[j] = hasMin ? d * Float(low) + m : d * Float(low - 16)
                    o[j + 16] = hasMin ? d * Float(high) + m : d * Float(high - 16)
                }
            default:
                fatalError("\(name) is dequantized per super-block")
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
