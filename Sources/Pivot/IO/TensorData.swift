import PivotKernels

/// Element types a weight tensor can have, across GGUF and safetensors.
public enum TensorType: Equatable, Sendable, CustomStringConvertible {
    case f32, f16, bf16
    case block(BlockFormat)

    /// GGML type ids (ggml.h): 0 F32, 1 F16, 30 BF16, and the block formats' own ids.
    init?(ggmlType: UInt32) {
        switch ggmlType {
        case 0: self = .f32
        case 1: self = .f16
        case 30: self = .bf16
        default:
            guard let format = BlockFormat(ggmlType: ggmlType) else { return nil }
            self = .block(format)
        }
    }

    /// The GGML type id, the inverse of `init(ggmlType:)`.
    public var ggmlType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .bf16: return 30
        case .block(let format): return format.ggmlType
        }
    }

    /// Bytes for `elements` values, or nil when `elements` does not fill whole blocks.
    func byteCount(elements: Int) -> Int? {
        switch self {
        case .f32: return elements.multipliedReportingOverflow(by: 4).overflow ? nil : elements * 4
        case .f16, .bf16: return elements.multipliedReportingOverflow(by: 2).overflow ? nil : elements * 2
        case .block(let format):
            guard elements % format.elementsPerBlock == 0 else { return nil }
            return elements / format.elementsPerBlock * format.bytesPerBlock
        }
    }

    /// Converts `count` consecutive elements at `source` to floats (a block type needs whole blocks).
    public func convert(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32: for i in 0..<count { out[i] = source.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16: convertHalfs(source, count: count, into: out)
        case .bf16: for i in 0..<count { out[i] = bfloat16ToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .block(let format): format.dequantizeRow(source, count: count, into: out)
        }
    }

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .block(let format): return format.name
        }
    }
}

/// A tensor in a mapped file. `shape` is outermost first (PyTorch order): a linear weight is [out, in].
public struct TensorData {
    public let name: String
    public let type: TensorType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let byteCount: Int
    /// Keeps the mapping alive as long as the tensor is referenced.
    public let owner: AnyObject

    public var elementCount: Int { shape.reduce(1, *) }

    /// Copies the tensor to floats (dequantizing if needed).
    public func toFloats() -> [Float] {
        let count = elementCount
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            copyFloats(into: buffer.baseAddress!)
            initialized = count
        }
    }

    /// Writes all `elementCount` values as floats into `out`.
    public func copyFloats(into out: UnsafeMutablePointer<Float>) {
        type.convert(data, count: elementCount, into: out)
    }

    /// This 2-D float tensor quantized row by row into `format`, in memory this tensor's new owner holds.
    /// This 2-D tensor re-encoded as `format`, rows spread over `pool`. `importance` (one weight per
    /// column, llama.cpp's imatrix) selects ggml's importance-weighted searches.
    public func quantized(to format: BlockFormat, importance: [Float]? = nil, pool: ThreadPool? = nil) -> TensorData {
        precondition(shape.count == 2 && shape[1] % format.elementsPerBlock == 0)
        precondition(importance == nil || importance!.count == shape[1])
        let rows = shape[0], columns = shape[1], rowBytes = format.rowBytes(columns)
        let storage = OwnedBytes(count: rows * rowBytes)
        let sourceRowBytes = type.byteCount(elements: columns)!
        let source = data, type = type
        func quantizeRows(_ range: Range<Int>, _ weights: UnsafePointer<Float>?) {
            let row = UnsafeMutablePointer<Float>.allocate(capacity: columns)
            defer { row.deallocate() }
            for r in range {
                type.convert(source + r * sourceRowBytes, count: columns, into: row)
                format.quantizeRow(row, count: columns, into: storage.pointer + r * rowBytes, importance: weights)
            }
        }
        func quantizeAll(_ weights: UnsafePointer<Float>?) {
            if let pool { pool.parallelRanges(count: rows, minChunk: 8) { quantizeRows($0, weights) } } else { quantizeRows(0..<rows, weights) }
        }
        if let importance { importance.withUnsafeBufferPointer { quantizeAll($0.baseAddress) } } else { quantizeAll(nil) }
        return TensorData(name: name, type: .block(format), shape: shape, data: UnsafeRawPointer(storage.pointer),
                          byteCount: rows * rowBytes, owner: storage)
    }

    /// Rows `ids` of this row-major tensor, copied byte for byte (a row of any GGML type is whole blocks)
    /// into memory the new tensor owns: a pruned FFN's gate/up, a pruned vocabulary, an output shortlist.
    public func gatheringRows(_ ids: [Int]) -> TensorData {
        let rowBytes = byteCount / shape[0]
        let storage = OwnedBytes(count: ids.count * rowBytes)
        for (i, r) in ids.enumerated() { (storage.pointer + i * rowBytes).copyMemory(from: data + r * rowBytes, byteCount: rowBytes) }
        return TensorData(name: name, type: type, shape: [ids.count] + shape.dropFirst(), data: UnsafeRawPointer(storage.pointer),
                          byteCount: ids.count * rowBytes, owner: storage)
    }
}

/// Heap bytes that live as long as a tensor refers to them (weights quantized at load).
final class OwnedBytes {
    let pointer: UnsafeMutableRawPointer
    init(count: Int) { pointer = .allocate(byteCount: max(1, count), alignment: 64) }
    deinit { pointer.deallocate() }
}

extension TensorData {
    /// The tensor rewritten by `fill` into `byteCount` bytes of memory of our own (a layout the
    /// kernels read faster); the file's pages are released, since the weights are no longer read
    /// from it.
    func repacked(byteCount: Int, _ fill: (UnsafeMutableRawPointer) -> Void) -> (pointer: UnsafeRawPointer, owner: AnyObject) {
        let buffer = OwnedBytes(count: byteCount)
        fill(buffer.pointer)
        (owner as? MappedFile)?.releasePages(data, count: self.byteCount)
        return (UnsafeRawPointer(buffer.pointer), buffer)
    }
}

/// Something that holds named tensors: a GGUF file or a set of safetensors files.
public protocol TensorStore {
    var path: String { get }
    func tensor(named name: String) -> TensorData?
    var tensorNames: [String] { get }
    /// Why a tensor present in the file cannot be used (e.g. an unknown type), if so.
    func unusableReason(_ name: String) -> String?
}

extension TensorStore {
    /// The tensor, checked against the expected shape; a clear error otherwise.
    public func require(_ name: String, shape: [Int]) throws -> TensorData {
        if let reason = unusableReason(name) { throw PivotError.unsupported(file: path, reason) }
        guard let t = tensor(named: name) else { throw PivotError.missingTensor(file: path, name) }
        guard t.shape == shape else { throw PivotError.shapeMismatch(file: path, tensor: name, expected: shape, found: t.shape) }
        return t
    }
}
