import Foundation

/// One or more memory-mapped `.safetensors` files (a sharded checkpoint is several).
///
/// Format: 8-byte little-endian header length N, N bytes of JSON
/// `{name: {dtype, shape, data_offsets: [begin, end]}}`, then the data. Every entry is checked:
/// known dtype, byte count equal to the shape's, range inside the file.
public final class SafetensorsStore: TensorStore {
    public let path: String
    private var tensors: [String: TensorData] = [:]
    private var unusable: [String: String] = [:]
    private var files: [MappedFile] = []
    public private(set) var tensorNames: [String] = []

    public func tensor(named name: String) -> TensorData? { tensors[name] }
    public func unusableReason(_ name: String) -> String? { unusable[name] }

    /// A folder: `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    public init(directory: String) throws {
        path = directory
        let fm = FileManager.default
        let index = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        let single = (directory as NSString).appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: index) {
            guard let map = try HuggingFaceLoader.readJSON(index)["weight_map"] as? [String: String] else {
                throw PivotError.malformed(file: index, "expected a JSON object with a 'weight_map'")
            }
            for shard in Set(map.values).sorted() {
                guard !shard.contains("/") else { throw PivotError.malformed(file: index, "shard name '\(shard)' is not a plain file name") }
                try add(file: (directory as NSString).appendingPathComponent(shard))
            }
            for name in map.keys where tensors[name] == nil && unusable[name] == nil {
                throw PivotError.malformed(file: index, "tensor '\(name)' is listed but not in its shard \(map[name]!)")
            }
        } else if fm.fileExists(atPath: single) {
            try add(file: single)
        } else {
            let shards = ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
            guard !shards.isEmpty else { throw PivotError.fileNotFound((directory as NSString).appendingPathComponent("model.safetensors")) }
            for shard in shards { try add(file: (directory as NSString).appendingPathComponent(shard)) }
        }
    }

    /// A single file.
    public init(file: String) throws {
        path = file
        try add(file: file)
    }

    private func add(file path: String) throws {
        let file = try MappedFile(path: path)
        files.append(file)
        var cursor = ByteCursor(base: file.base, size: file.size, file: path)
        let headerLength = try cursor.read(UInt64.self, "header length")
        guard headerLength >= 2, headerLength <= UInt64(min(cursor.remaining, 100 << 20)) else {
            throw PivotError.malformed(file: path, "header length \(headerLength) does not fit the file (\(file.size) bytes)")
        }
        let headerBytes = try cursor.readBytes(Int(headerLength), "header")
        guard let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any] else {
            throw PivotError.malformed(file: path, "header is not a JSON object")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = file.size - dataStart
        for (name, value) in header.sorted(by: { $0.key < $1.key }) where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw PivotError.malformed(file: path, "tensor '\(name)' has no valid dtype/shape/data_offsets")
            }
            var elements = 1
            for d in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard d >= 0, !overflow, product <= 1 << 40 else { throw PivotError.malformed(file: path, "tensor '\(name)' has an absurd shape \(shape)") }
                elements = product
            }
            let type: TensorType
            switch dtype {
            case "F32": type = .f32
            case "F16": type = .f16
            case "BF16": type = .bf16
            default:
                unusable[name] = "tensor '\(name)' has dtype \(dtype) (supported: F32, F16, BF16)"
                tensorNames.append(name)
                continue
            }
            let bytes = type.byteCount(elements: elements)!
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, end >= begin, end <= dataSize else {
                throw PivotError.malformed(file: path, "tensor '\(name)' data [\(begin), \(end)) runs past the end of the file (\(dataSize) data bytes); the file is truncated or its header is wrong")
            }
            guard end - begin == bytes else {
                throw PivotError.malformed(file: path, "tensor '\(name)' of shape \(shape) \(dtype) needs \(bytes) bytes, the header gives \(end - begin)")
            }
            guard tensors[name] == nil else { throw PivotError.malformed(file: path, "tensor '\(name)' appears twice") }
            tensors[name] = TensorData(name: name, type: type, shape: shape, data: file.base + dataStart + begin, byteCount: bytes, owner: file)
            tensorNames.append(name)
        }
    }
}

/// Writes F32/F16/BF16 tensors as a `.safetensors` file (exports and test fixtures).
public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var bytes: [UInt8]
        public init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }

        /// Floats stored as F32, F16 or BF16.
        public init(name: String, shape: [Int], floats: [Float], dtype: String = "F32") {
            let type: TensorType = dtype == "F16" ? .f16 : dtype == "BF16" ? .bf16 : .f32
            self.init(name: name, dtype: dtype, shape: shape, bytes: type.littleEndianBytes(of: floats))
        }
    }

    public static func write(_ entries: [Entry], to path: String) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count]] as [String: Any]
            offset += e.bytes.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for e in entries { out.append(contentsOf: e.bytes) }
        guard FileManager.default.createFile(atPath: path, contents: out) else { throw PivotError.cannotRead(path, "cannot write") }
    }
}

extension TensorType {
    /// `values` stored in this float type, little endian: F16 and BF16 round to nearest even (a NaN stays a NaN).
    public func littleEndianBytes(of values: [Float]) -> [UInt8] {
        precondition([.f32, .f16, .bf16].contains(self), "float types only")
        var bytes = [UInt8](repeating: 0, count: values.count * (self == .f32 ? 4 : 2))
        bytes.withUnsafeMutableBytes { raw in
            switch self {
            case .f16: for (i, v) in values.enumerated() { raw.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .bf16:
                for (i, v) in values.enumerated() {
                    let bits = v.bitPattern
                    let rounded = v.isNaN ? UInt16(0x7FC0) : UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
                    raw.storeBytes(of: rounded.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            default: for (i, v) in values.enumerated() { raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            }
        }
        return bytes
    }
}
