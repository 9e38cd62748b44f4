import Foundation
import PivotKernels

/// Writes GGUF v3 files that llama.cpp, the `gguf` Python package and Pivot read: metadata with
/// explicit value types, then tensor infos, then the tensor data, each tensor aligned to
/// `general.alignment` (32 unless the metadata says otherwise).
public enum GGUFWriter {
    /// A tensor to write: its ggml type id, shape outermost first (PyTorch order, as `TensorData`)
    /// and its bytes in that type.
    public struct Tensor {
        public var name: String
        public var ggmlType: UInt32
        public var shape: [Int]
        public var bytes: UnsafeRawBufferPointer

        public init(name: String, ggmlType: UInt32, shape: [Int], bytes: UnsafeRawBufferPointer) {
            self.name = name; self.ggmlType = ggmlType; self.shape = shape; self.bytes = bytes
        }
    }

    public static func write(metadata: [GGUFMetadataEntry], tensors: [Tensor], to path: String) throws {
        let alignment = metadata.first { $0.key == "general.alignment" }?.value.int ?? 32
        guard alignment > 0, alignment % 8 == 0 else { throw PivotError.invalidArgument("general.alignment must be a positive multiple of 8") }
        var header = Data()
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { header.append(contentsOf: $0) } }
        func appendString(_ s: String) { append(UInt64(s.utf8.count)); header.append(contentsOf: Array(s.utf8)) }
        func appendValue(_ value: MetadataValue, type: UInt32, itemType: UInt32, key: String) throws {
            func bad() -> PivotError { .invalidArgument("metadata '\(key)': value \(value) does not fit GGUF type \(type)") }
            switch (type, value) {
            case (0, _): guard let v = value.int, let x = UInt8(exactly: v) else { throw bad() }; append(x)
            case (1, _): guard let v = value.int, let x = Int8(exactly: v) else { throw bad() }; append(x)
            case (2, _): guard let v = value.int, let x = UInt16(exactly: v) else { throw bad() }; append(x)
            case (3, _): guard let v = value.int, let x = Int16(exactly: v) else { throw bad() }; append(x)
            case (4, _): guard let v = value.int, let x = UInt32(exactly: v) else { throw bad() }; append(x)
            case (5, _): guard let v = value.int, let x = Int32(exactly: v) else { throw bad() }; append(x)
            case (6, _): guard let v = value.double else { throw bad() }; append(Float(v).bitPattern)
            case (7, .bool(let b)): append(UInt8(b ? 1 : 0))
            case (8, .string(let s)): appendString(s)
            case (9, .array(let items)):
                append(itemType)
                append(UInt64(items.count))
                for item in items { try appendValue(item, type: itemType, itemType: 0, key: key) }
            case (10, .uint(let v)): append(v)
            case (10, _): guard let v = value.int, v >= 0 else { throw bad() }; append(UInt64(v))
            case (11, _): guard let v = value.int else { throw bad() }; append(Int64(v))
            case (12, _): guard let v = value.double else { throw bad() }; append(v.bitPattern)
            default: throw bad()
            }
        }

        header.append(contentsOf: Array("GGUF".utf8))
        append(UInt32(3))
        append(UInt64(tensors.count))
        append(UInt64(metadata.count))
        for entry in metadata {
            appendString(entry.key)
            append(entry.type)
            try appendValue(entry.value, type: entry.type, itemType: entry.itemType, key: entry.key)
        }
        var offset = 0
        var offsets: [Int] = []
        for tensor in tensors {
            guard let type = TensorType(ggmlType: tensor.ggmlType),
                  let expected = type.byteCount(elements: tensor.shape.reduce(1, *)), expected == tensor.bytes.count else {
                throw PivotError.invalidArgument("tensor '\(tensor.name)': \(tensor.bytes.count) bytes do not hold \(tensor.shape) of GGML type \(tensor.ggmlType)")
            }
            appendString(tensor.name)
            append(UInt32(tensor.shape.count))
            for d in tensor.shape.reversed() { append(UInt64(d)) }  // GGUF lists the innermost dimension first
            append(tensor.ggmlType)
            append(UInt64(offset))
            offsets.append(offset)
            offset += (tensor.bytes.count + alignment - 1) / alignment * alignment
        }
        while header.count % alignment != 0 { header.append(0) }

        // Write to a temporary name and rename, so a failed run never leaves a half file under `path`.
        let temporary = path + ".partial"
        guard FileManager.default.createFile(atPath: temporary, contents: header) else {
            throw PivotError.cannotRead(path, "cannot create the output file")
        }
        guard let handle = FileHandle(forWritingAtPath: temporary) else { throw PivotError.cannotRead(path, "cannot open the output file") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        let zeros = Data(count: alignment)
        for (tensor, start) in zip(tensors, offsets) {
            try handle.write(contentsOf: tensor.bytes)
            let padding = (start + tensor.bytes.count) % alignment == 0 ? 0 : alignment - (start + tensor.bytes.count) % alignment
            if padding > 0 { try handle.write(contentsOf: zeros.prefix(padding)) }
        }
        try handle.close()
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
        try FileManager.default.moveItem(atPath: temporary, toPath: path)
    }
}
