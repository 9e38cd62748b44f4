#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Block-32 weights (Q4_0, Q4_1, Q5_0, Q5_1; the K-quants, Q8_0 and the group-wise types in files
/// of their own) repacked eight output rows at a time, so one integer multiply-add covers four
/// weights of each of eight rows and its eight sums land one per lane.
///
/// The GGML layout keeps each row's blocks together, so a product of one block yields one number:
/// its scale has to be broadcast, its sum reduced, per row. Interleaved, the scales of eight rows
/// are one vector and the int32 lanes are already the eight rows' sums, which about halves the
/// instructions per weight in prefill (the idea of llama.cpp's CPU repack buffers; the layout here
/// is our own). Same bytes as the file: nothing is widened.
///
/// Per group of 8 rows and block of 32 columns, in order:
/// - the 8 rows' f16 scales d (16 bytes), then for Q4_1/Q5_1 their f16 minimums m (16 bytes);
/// - 4 vectors of 32 bytes: vector j, byte 4r+i holds row r's code 4j+i in its low nibble and code
///   16+4j+i in its high nibble (so "step" k covers codes 4k..4k+3 of every row);
/// - for Q5_0/Q5_1, 32 bytes of fifth bits: byte 4r+i, bit k = bit 4 of row r's code 4k+i.
/// A weight is d·q + m, where for Q4_0/Q5_0 m = −8d / −16d.
///
/// Q4_K goes per super-block of 256 columns: the 8 rows' f16 d and dmin (32 bytes), their 6-bit
/// scales and minimums unpacked to bytes (sub-block-major, 64 + 64 bytes), then the 8 sub-blocks'
/// codes as above; sub-block g has d·sc and −dmin·m for its d and m (1184 bytes, +2.8%). Q5_K is the
/// same with each sub-block's fifth bits after its nibbles, as in the block-32 layout (1440 bytes).
public struct InterleavedLayout: Sendable, Equatable {
    public static let rowsPerGroup = 8

    public let format: BlockFormat
    /// Blocks of 32 per row.
    public let blocks: Int

    public init?(format: BlockFormat, rows: Int, columns: Int) {
        guard Self.supports(format), rows % Self.rowsPerGroup == 0, columns % format.elementsPerBlock == 0, columns > 0 else { return nil }
        self.format = format
        blocks = columns / 32
    }

    public static func supports(_ format: BlockFormat) -> Bool {
        format.isExtension || [.q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_0].contains(format)
    }

    public var hasMin: Bool { format == .q4_1 || format == .q5_1 }
    public var hasFifthBits: Bool { format == .q5_0 || format == .q5_1 || format == .q5_K }
    /// Bytes of one 32-column sub-block's codes in the Q4_K/Q5_K layouts (nibbles, then fifth bits).
    var subBlockBytesK: Int { format == .q5_K ? 160 : 128 }
    /// m / d for the formats that store no minimum.
    public var symmetricOffset: Float { format == .q5_0 ? -16 : -8 }
    /// Bytes of one block of 32 columns across the 8 rows of a group (8 × the GGML block); for the
    /// K-quants of one super-block of 256 columns, for the group-wise types of one group.
    public var blockBytes: Int {
        switch format {
        case .q4_K: return Self.superBlockBytesK4
        case .q5_K: return Self.superBlockBytesK5
        case .q6_K: return Self.superBlockBytesK6
        case .q8_0: return Self.blockBytesQ8
        case .q3_K: return Self.superBlockBytesK3
        case .q2_K: return Self.superBlockBytesK2
        default:
            if format.isExtension { return Self.groupwiseBlockBytes(format) }
            return 16 + (hasMin ? 16 : 0) + 128 + (hasFifthBits ? 32 : 0)
        }
    }
    public var groupBytes: Int {
        if format.isKQuant { return blocks / 8 * blockBytes }
        if format.isExtension { return blocks / format.runsPerGroup * blockBytes }
        return blocks * blockBytes
    }
    var codesOffset: Int { hasMin ? 32 : 16 }
    static let superBlockBytesK4 = 32 + 128 + 8 * 128
    /// Q5_K: Q4_K's layout with each sub-block's 32 bytes of fifth bits after its nibbles (1440 bytes, +2.3%).
    static let superBlockBytesK5 = 32 + 128 + 8 * 160

    /// Reads one GGML block: its scale and minimum as f16 bits, and its 32 codes (0...15 or 0...31).
    func decodeSourceBlock(_ block: UnsafeRawPointer, codes: UnsafeMutablePointer<UInt8>) -> (d: UInt16, m: UInt16) {
        let d = block.loadUnaligned(as: UInt16.self)
        let m = hasMin ? block.loadUnaligned(fromByteOffset: 2, as: UInt16.self) : 0
        let fifth: UInt32 = hasFifthBits ? block.loadUnaligned(fromByteOffset: hasMin ? 4 : 2, as: UInt32.self).littleEndian : 0
        let qs = block + (hasMin ? 4 : 2) + (hasFifthBits ? 4 : 0)
        for i in 0..<16 {
            let byte = qs.load(fromByteOffset: i, as: UInt8.self)
            codes[i] = (byte & 0x0F) | UInt8((fifth >> UInt32(i)) & 1) << 4
            codes[i + 16] = (byte >> 4) | UInt8((fifth >> UInt32(i + 16)) & 1) << 4
        }
        return (d, m)
    }

    /// Repacks `rows` GGML rows (`rowBytes` apart) into `out`, which holds `rows / 8 * groupBytes` bytes.
    public func repack(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        precondition(rows % Self.rowsPerGroup == 0)
        if format == .q4_K || format == .q5_K { repackK4(source, rowBytes: rowBytes, rows: rows, into: out); return }
        if format == .q6_K { repackK6(source, rowBytes: rowBytes, rows: rows, into: out); return }
        if format == .q8_0 { repackQ8(source, rowBytes: rowBytes, rows: rows, into: out); return }
        if format == .q3_K { repackK3(source, rowBytes: rowBytes, rows: rows, into: out); return }
        if format == .q2_K { repackK2(source, rowBytes: rowBytes, rows: rows, into: out); return }
        if format.isExtension { repackGroupwise(source, rowBytes: rowBytes, rows: rows, into: out); return }
        let sourceBlockBytes = format.bytesPerBlock
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 8 * 32) { buffer in
            let codes = buffer.baseAddress!
            for g in 0..<(rows / 8) {
                for b in 0..<blocks {
                    let dst = out + g * groupBytes + b * blockBytes
                    for r in 0..<8 {
                        let (d, m) = decodeSourceBlock(source + (g * 8 + r) * rowBytes + b * sourceBlockBytes, codes: codes + r * 32)
                        dst.storeBytes(of: d, toByteOffset: 2 * r, as: UInt16.self)
                        if hasMin { dst.storeBytes(of: m, toByteOffset: 16 + 2 * r, as: UInt16.self) }
                    }
                    let nibbles = dst + codesOffset
                    for r in 0..<8 {
                        for i in 0..<4 {
                            var fifth: UInt8 = 0
                            for k in 0..<8 { fifth |= ((codes[r * 32 + 4 * k + i] >> 4) & 1) << UInt8(k) }
                            for j in 0..<4 {
                                let low = codes[r * 32 + 4 * j + i] & 0x0F, high = codes[r * 32 + 16 + 4 * j + i] & 0x0F
                                nibbles.storeBytes(of: low | high << 4, toByteOffset: 32 * j + 4 * r + i, as: UInt8.self)
                            }
                            if hasFifthBits { nibbles.storeBytes(of: fifth, toByteOffset: 128 + 4 * r + i, as: UInt8.self) }
                        }
                    }
                }
            }
        }
    }

    /// Q4_K and Q5_K: scales and minimums unpacked, then each sub-block's codes as in the block-32 layout.
    func repackK4(_ source: UnsafeRawPointer, rowBytes: Int, rows: Int, into out: UnsafeMutableRawPointer) {
        let five = format == .q5_K, sourceBytes = five ? 176 : 144, qs = five ? 48 : 16
        for group in 0..<(rows / 8) {
            for s in 0..<(blocks / 8) {
                let dst = out + group * groupBytes + s * blockBytes
                for r in 0..<8 {
                    let block = source + (group * 8 + r) * rowBytes + s * sourceBytes
                    dst.storeBytes(of: block.loadUnaligned(as: UInt16.self), toByteOffset: 2 * r, as: UInt16.self)
                    dst.storeBytes(of: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self), toByteOffset: 16 + 2 * r, as: UInt16.self)
                    for g in 0..<8 {
                        let (sc, m) = BlockFormat.scaleMinK4(g, block + 4)
                        dst.storeBytes(of: sc, toByteOffset: 32 + 8 * g + r, as: UInt8.self)
                        dst.storeBytes(of: m, toByteOffset: 96 + 8 * g + r, as: UInt8.self)
                        let codes = dst + 160 + subBlockBytesK * g
                        // Column c of sub-block g: byte 32·(g/2) + c of qs, low nibble for even g; Q5_K's
                        // fifth bit is bit g of qh byte c.
                        func code(_ c: Int) -> UInt8 {
                            let byte = block.load(fromByteOffset: qs + 32 * (g / 2) + c, as: UInt8.self)
                            let nibble = g % 2 == 0 ? byte & 0x0F : byte >> 4
                            guard five else { return nibble }
                            return nibble | ((block.load(fromByteOffset: 16 + c, as: UInt8.self) >> UInt8(g)) & 1) << 4
                        }
                        for i in 0..<4 {
                            var fifth: UInt8 = 0
                            for k in 0..<8 { fifth |= (code(4 * k + i) >> 4) << UInt8(k) }
                            if five { codes.storeBytes(of: fifth, toByteOffset: 128 + 4 * r + i, as: UInt8.self) }
                            for j in 0..<4 {
                                codes.storeBytes(of: (code(4 * j + i) & 0x0F) | (code(16 + 4 * j + i) & 0x0F) << 4, toByteOffset: 32 * j + 4 * r + i, as: UInt8.self)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Row `row` of the repacked matrix as floats (`blocks × 32` values).
    public func dequantizeRow(_ packed: UnsafeRawPointer, row: Int, into out: UnsafeMutablePointer<Float>) {
        let group = packed + row / 8 * groupBytes, r = row % 8
        if format == .q6_K { dequantizeRowK6(group, r, into: out); return }
        if format == .q8_0 { dequantizeRowQ8(group, r, into: out); return }
        if format == .q3_K { dequantizeRowK3(group, r, into: out); return }
        if format == .q2_K { dequantizeRowK2(group, r, into: out); return }
        if format.isExtension { dequantizeRowGroupwise(group, r, into: out); return }
        for b in 0..<blocks {
            let (d, m, codes) = blockParameters(group, b, row: r)
            for c in 0..<32 { out[b * 32 + c] = d * Float(code(codes, r, c)) + m }
        }
    }

    /// Row r's scale and minimum in 32-column block b of a group, and where the block's codes start.
    @inline(__always)
    func blockParameters(_ group: UnsafeRawPointer, _ b: Int, row r: Int) -> (d: Float, m: Float, codes: UnsafeRawPointer) {
        if format == .q4_K || format == .q5_K {
            let header = group + (b / 8) * blockBytes, sub = b % 8
            let d = loadHalf(header, 2 * r) * Float(header.load(fromByteOffset: 32 + 8 * sub + r, as: UInt8.self))
            let m = -(loadHalf(header, 16 + 2 * r) * Float(header.load(fromByteOffset: 96 + 8 * sub + r, as: UInt8.self)))
            return (d, m, header + 160 + subBlockBytesK * sub)
        }
        let block = group + b * blockBytes
        let d = loadHalf(block, 2 * r)
        return (d, hasMin ? loadHalf(block, 16 + 2 * r) : symmetricOffset * d, block + codesOffset)
    }

    /// Code of row `r`, column `c` of one repacked block whose codes start at `codes`.
    @inline(__always)
    func code(_ codes: UnsafeRawPointer, _ r: Int, _ c: Int) -> UInt8 {
        let k = c / 4, i = c % 4
        let byte = codes.load(fromByteOffset: 32 * (k % 4) + 4 * r + i, as: UInt8.self)
        let nibble = k < 4 ? byte & 0x0F : byte >> 4
        guard hasFifthBits else { return nibble }
        let fifth = codes.load(fromByteOffset: 128 + 4 * r + i, as: UInt8.self)
        return nibble | ((fifth >> UInt8(k)) & 1) << 4
    }
}
