import PivotKernels
/// A GGUF value from the metadata section.
public enum MetadataValue: Sendable {
    case int(Int64), uint(UInt64), float(Double), bool(Bool), string(String)
    case array([MetadataValue])

    public var int: Int? {
        switch self {
        case .int(let v): return Int(v)
        case .uint(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .float(let v): return v == v.rounded() && abs(v) < 1e15 ? Int(v) : nil
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .int(let v): return Double(v)
        case .uint(let v): return Double(v)
        case .float(let v): return v
        default: return nil
        }
    }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return int.map { $0 != 0 } }
    public var array: [MetadataValue]? { if case .array(let a) = self { return a }; return nil }
}

/// One metadata key as stored: its value and GGUF value type (and item type, for arrays), so a
/// file can be rewritten with the exact types llama.cpp's reader checks for.
public struct GGUFMetadataEntry: Sendable {
    public var key: String
    public var value: MetadataValue
    /// GGUF value type: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64.
    public var type: UInt32
    /// Item type of an array (9); unused otherwise.
    public var itemType: UInt32

    public init(_ key: String, _ value: MetadataValue, type: UInt32, itemType: UInt32 = 0) {
        self.key = key; self.value = value; self.type = type; self.itemType = itemType
    }
}

/// A parsed GGUF (v2/v3) file: metadata and a tensor directory pointing into the memory map.
///
/// Every count, length and offset is checked against the file size before it is used, so a
/// truncated or lying file fails with a message instead of reading out of bounds.
public final class GGUFFile: TensorStore {
    public let path: String
    public let file: MappedFile
    public let version: UInt32
    public let metadata: [String: MetadataValue]
    /// The metadata in file order with its types.
    public let metadataEntries: [GGUFMetadataEntry]
    public let tensors: [String: TensorData]
    public let tensorOrder: [String]
    public let unsupportedTensors: [String: UInt32]

    public var tensorNames: [String] { tensorOrder }
    public func tensor(named name: String) -> TensorData? { tensors[name] }
    public func unusableReason(_ name: String) -> String? {
        unsupportedTensors[name].map { "tensor '\(name)' has GGML type \($0), which Pivot cannot run (supported: F32, F16, BF16, \(BlockFormat.allCases.map(\.name).joined(separator: ", ")))" }
    }

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        path = file.path
        var cursor = ByteCursor(base: file.base, size: file.size, file: file.path)
        let magic = try cursor.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else {
            throw PivotError.malformed(file: path, "not a GGUF file (magic bytes are not 'GGUF')")
        }
        version = try cursor.read(UInt32.self, "version")
        guard version == 2 || version == 3 else {
            throw PivotError.unsupported(file: path, "GGUF version \(version) (supported: 2, 3)")
        }
        let tensorCount = try cursor.read(UInt64.self, "tensor count")
        let kvCount = try cursor.read(UInt64.self, "metadata count")
        // Each tensor entry takes at least 8+4+8+4+8 bytes, each key-value pair at least 8+4 bytes.
        guard tensorCount <= UInt64(cursor.remaining / 32) else {
            throw PivotError.malformed(file: path, "header claims \(tensorCount) tensors, more than the file can hold")
        }
        guard kvCount <= UInt64(cursor.remaining / 12) else {
            throw PivotError.malformed(file: path, "header claims \(kvCount) metadata entries, more than the file can hold")
        }

        var metadata: [String: MetadataValue] = [:]
        var entries: [GGUFMetadataEntry] = []
        for index in 0..<Int(kvCount) {
            let key = try Self.readString(&cursor, "metadata key #\(index)")
            let type = try cursor.read(UInt32.self, "type of '\(key)'")
            var itemType: UInt32 = 0
            let value = try Self.readValue(&cursor, type: type, key: key, depth: 0, itemType: &itemType)
            metadata[key] = value
            entries.append(GGUFMetadataEntry(key, value, type: type, itemType: itemType))
        }
        self.metadata = metadata
        metadataEntries = entries

        var infos: [(name: String, dims: [Int], type: UInt32, offset: UInt64)] = []
        for index in 0..<Int(tensorCount) {
            let name = try Self.readString(&cursor, "name of tensor #\(index)")
            let dimCount = try cursor.read(UInt32.self, "dimension count of '\(name)'")
            guard dimCount >= 1 && dimCount <= 4 else {
                throw PivotError.malformed(file: path, "tensor '\(name)' has \(dimCount) dimensions (1...4 allowed)")
            }
            var dims: [Int] = []
            for _ in 0..<dimCount {
                let d = try cursor.read(UInt64.self, "dimensions of '\(name)'")
                guard d >= 1 && d <= 1 << 40 else {
                    throw PivotError.malformed(file: path, "tensor '\(name)' has an absurd dimension \(d)")
                }
                dims.append(Int(d))
            }
            let type = try cursor.read(UInt32.self, "type of '\(name)'")
            let offset = try cursor.read(UInt64.self, "offset of '\(name)'")
            infos.append((name, dims, type, offset))
        }

        let alignment = metadata["general.alignment"]?.int ?? 32
        guard alignment > 0 && alignment <= 1 << 20 && alignment & (alignment - 1) == 0 else {
            throw PivotError.malformed(file: path, "general.alignment \(alignment) is not a power of two")
        }
        let dataStart = (cursor.offset + alignment - 1) / alignment * alignment
        guard dataStart <= file.size else {
            throw PivotError.malformed(file: path, "truncated: tensor data would start at byte \(dataStart), file has \(file.size)")
        }

        var tensors: [String: TensorData] = [:]
        var order: [String] = []
        var unsupported: [String: UInt32] = [:]
        for info in infos {
            var elements = 1
            for d in info.dims {
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow, product <= 1 << 40 else {
                    throw PivotError.malformed(file: path, "tensor '\(info.name)' has an absurd size \(info.dims)")
                }
                elements = product
            }
            guard let type = TensorType(ggmlType: info.type) else {
                unsupported[info.name] = info.type
                continue
            }
            guard let bytes = type.byteCount(elements: elements), info.dims[0] % type.elementsPerBlock == 0 else {
                throw PivotError.malformed(file: path, "tensor '\(info.name)' of \(info.dims) does not fill whole \(type) blocks")
            }
            guard info.offset % UInt64(alignment) == 0 else {
                throw PivotError.malformed(file: path, "tensor '\(info.name)' offset \(info.offset) is not aligned to \(alignment)")
            }
            guard info.offset <= UInt64(file.size - dataStart), bytes <= file.size - dataStart - Int(info.offset) else {
                throw PivotError.malformed(file: path, "tensor '\(info.name)' (\(bytes) bytes at data offset \(info.offset)) runs past the end of the file (\(file.size) bytes); the file is truncated or its header is wrong")
            }
            guard tensors[info.name] == nil else {
                throw PivotError.malformed(file: path, "tensor '\(info.name)' appears twice")
            }
            tensors[info.name] = TensorData(name: info.name, type: type, shape: info.dims.reversed(),
                                            data: file.base + dataStart + Int(info.offset), byteCount: bytes, owner: file)
            order.append(info.name)
        }
        self.tensors = tensors
        self.tensorOrder = order
        self.unsupportedTensors = unsupported
    }

    private static func readString(_ cursor: inout ByteCursor, _ what: String) throws -> String {
        let length = try cursor.read(UInt64.self, "length of \(what)")
        guard length <= UInt64(cursor.remaining) else {
            throw PivotError.malformed(file: cursor.file, "\(what) claims \(length) bytes, only \(cursor.remaining) remain")
        }
        let bytes = try cursor.readBytes(Int(length), what)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readValue(_ cursor: inout ByteCursor, type: UInt32, key: String, depth: Int,
                                  itemType arrayItemType: inout UInt32) throws -> MetadataValue {
        switch type {
        case 0: return .uint(UInt64(try cursor.read(UInt8.self, key)))
        case 1: return .int(Int64(try cursor.read(Int8.self, key)))
        case 2: return .uint(UInt64(try cursor.read(UInt16.self, key)))
        case 3: return .int(Int64(try cursor.read(Int16.self, key)))
        case 4: return .uint(UInt64(try cursor.read(UInt32.self, key)))
        case 5: return .int(Int64(try cursor.read(Int32.self, key)))
        case 6: return .float(Double(try cursor.readFloat(key)))
        case 7: return .bool(try cursor.read(UInt8.self, key) != 0)
        case 8: return .string(try readString(&cursor, "value of '\(key)'"))
        case 9:
            guard depth == 0 else { throw PivotError.malformed(file: cursor.file, "nested arrays in '\(key)'") }
            let itemType = try cursor.read(UInt32.self, "array type of '\(key)'")
            arrayItemType = itemType
            var unused: UInt32 = 0
            let count = try cursor.read(UInt64.self, "array length of '\(key)'")
            let minimumItemSize: UInt64 = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 10: 8, 11: 8, 12: 8][itemType] ?? 1
            guard count <= UInt64(cursor.remaining) / minimumItemSize else {
                throw PivotError.malformed(file: cursor.file, "array '\(key)' claims \(count) items, more than the file can hold")
            }
            var items: [MetadataValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<Int(count) { items.append(try readValue(&cursor, type: itemType, key: key, depth: depth + 1, itemType: &unused)) }
            return .array(items)
        case 10: return .uint(try cursor.read(UInt64.self, key))
        case 11: return .int(try cursor.read(Int64.self, key))
        case 12: return .float(try cursor.readDouble(key))
        default: throw PivotError.malformed(file: cursor.file, "unknown metadata type \(type) for '\(key)'")
        }
    }
}

extension TensorType {
    public var isBlock: Bool { if case .block = self { return true }; return false }
    /// Rows must be whole blocks: 32 or 256 weights (K-quants), 1 for float types.
    var elementsPerBlock: Int { if case .block(let format) = self { return format.elementsPerBlock }; return 1 }
}
