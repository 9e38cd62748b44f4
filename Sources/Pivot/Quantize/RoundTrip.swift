import PivotKernels

extension TensorData {
    /// A row-major F32 view of floats the caller keeps alive, so float buffers go through the same
    /// quantizers (`quantized(to:)`) as tensors read from files.
    static func floatView(_ values: UnsafePointer<Float>, rows: Int, columns: Int) -> TensorData {
        TensorData(name: "", type: .f32, shape: [rows, columns], data: UnsafeRawPointer(values), byteCount: 4 * rows * columns,
                   owner: BorrowedFloats.shared)
    }
}

/// The owner of a `floatView`: the memory belongs to the caller.
private final class BorrowedFloats: Sendable { static let shared = BorrowedFloats() }

extension BlockFormat {
    /// `weights` (rows × columns) encoded with ggml's search (importance-weighted when given), rows
    /// spread over `pool`, and decoded back into `restored`: what the format keeps of them.
    func roundTrip(_ weights: UnsafePointer<Float>, rows: Int, columns: Int, importance: [Float]?, pool: ThreadPool?,
                   restored: UnsafeMutablePointer<Float>) -> TensorData {
        let encoded = TensorData.floatView(weights, rows: rows, columns: columns).quantized(to: self, importance: importance, pool: pool)
        encoded.copyFloats(into: restored)
        return encoded
    }
}
