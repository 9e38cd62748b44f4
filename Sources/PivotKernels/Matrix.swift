/// A row-major float matrix view: `rows` × `columns`, consecutive rows `stride` floats apart.
/// It does not own its memory; `FloatBuffer` does.
public struct Matrix {
    public var base: UnsafeMutablePointer<Float>
    public var rows: Int
    public var columns: Int
    public var stride: Int

    @inline(__always) public init(_ base: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int? = nil) {
        self.base = base; self.rows = rows; self.columns = columns; self.stride = stride ?? columns
    }

    @inline(__always) public func row(_ r: Int) -> UnsafeMutablePointer<Float> { base + r * stride }

    /// Rows `first..<first+count`.
    @inline(__always) public func rows(_ first: Int, _ count: Int) -> Matrix {
        Matrix(base + first * stride, rows: count, columns: columns, stride: stride)
    }

    /// The first `count` rows.
    @inline(__always) public func prefix(rows count: Int) -> Matrix {
        Matrix(base, rows: count, columns: columns, stride: stride)
    }
}

/// Owned, 64-byte aligned float storage, allocated once and reused.
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        self.count = count
        pointer = ZeroedMemory.allocate(bytes: max(1, count) * 4).bindMemory(to: Float.self, capacity: max(1, count))
    }

    deinit { ZeroedMemory.deallocate(UnsafeMutableRawPointer(pointer), bytes: max(1, count) * 4) }

    public func matrix(rows: Int, columns: Int) -> Matrix {
        precondition(rows * columns <= count, "buffer of \(count) floats is too small for \(rows)x\(columns)")
        return Matrix(pointer, rows: rows, columns: columns)
    }
}

/// True when none of `count` floats is NaN or infinite (a corrupt file's logits are caught before they are used).
public func allFinite(_ values: UnsafePointer<Float>, count: Int) -> Bool {
    var sum: Float = 0
    for i in 0..<count { sum += values[i] * 0 }  // 0·x is 0 for finite x, NaN for NaN or ±inf
    return sum == 0
}
