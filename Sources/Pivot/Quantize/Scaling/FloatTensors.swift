import PivotKernels

/// Float copies of the tensors an equivalence rewrites, dequantized from the source file on first use
/// and edited in place; `views` hands them to the quantization pipeline in place of the file's.
final class FloatTensors {
    struct Tensor {
        let rows: Int
        let columns: Int
        let buffer: FloatBuffer
        var pointer: UnsafeMutablePointer<Float> { buffer.pointer }
    }

    let source: GGUFFile
    private(set) var tensors: [String: Tensor] = [:]

    init(source: GGUFFile) { self.source = source }

    func has(_ name: String) -> Bool { source.tensors[name] != nil }

    /// The float values of `name` (a matrix, or a vector as one row).
    func tensor(_ name: String) throws -> Tensor {
        if let known = tensors[name] { return known }
        guard let t = source.tensors[name] else { throw PivotError.malformed(file: source.path, "missing tensor '\(name)'") }
        let rows = t.shape.count == 2 ? t.shape[0] : 1
        let tensor = Tensor(rows: rows, columns: t.elementCount / rows, buffer: FloatBuffer(count: t.elementCount))
        t.copyFloats(into: tensor.pointer)
        tensors[name] = tensor
        return tensor
    }

    /// Multiplies column j of every row by `scales[j]`.
    func scaleColumns(_ name: String, by scales: [Float]) throws {
        let t = try tensor(name)
        precondition(scales.count == t.columns)
        for r in 0..<t.rows {
            let row = t.pointer + r * t.columns
            for j in 0..<t.columns { row[j] *= scales[j] }
        }
    }

    /// Divides row r (or element r of a vector) by `scales[r]`.
    func divideRows(_ name: String, by scales: [Float]) throws {
        let t = try tensor(name)
        if t.rows == 1 {
            precondition(scales.count == t.columns)
            for j in 0..<t.columns { t.pointer[j] /= scales[j] }
            return
        }
        precondition(scales.count == t.rows)
        for r in 0..<t.rows {
            let row = t.pointer + r * t.columns, inverse = 1 / scales[r]
            for j in 0..<t.columns { row[j] *= inverse }
        }
    }

    /// Each rewritten tensor as an F32 view with the source's shape (this object keeps the memory).
    func views() -> [String: TensorData] {
        tensors.reduce(into: [:]) { result, entry in
            let shape = source.tensors[entry.key]!.shape
            result[entry.key] = TensorData(name: entry.key, type: .f32, shape: shape, data: UnsafeRawPointer(entry.value.pointer),
                                           byteCount: 4 * entry.value.rows * entry.value.columns, owner: entry.value.buffer)
        }
    }
}
