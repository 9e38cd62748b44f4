import Foundation

/// llama.cpp's `--check-tensors`: every tensor decoded and scanned for NaN, infinity and magnitudes no
/// trained weight has (a broken scale decodes to them), so a corrupt file is named before it runs.
public enum TensorCheck {
    /// Weights beyond this are taken as a broken scale, not a trained value.
    public static let implausibleMagnitude: Float = 1e6

    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var tensor: String
        public var index: Int
        public var value: Float
        public var description: String {
            let what = value.isNaN ? "NaN" : value.isInfinite ? "infinity" : "an implausible value \(value)"
            return "tensor '\(tensor)' holds \(what) at element \(index)"
        }
    }

    /// The first bad element of each tensor in file order (empty: the file is sound); `progress(done, total)`.
    public static func scan(_ file: GGUFFile, progress: (Int, Int) -> Void = { _, _ in }) -> [Problem] {
        var problems: [Problem] = []
        for (index, name) in file.tensorOrder.enumerated() {
            let tensor = file.tensors[name]!
            var floats = [Float](repeating: 0, count: tensor.elementCount)
            floats.withUnsafeMutableBufferPointer { tensor.copyFloats(into: $0.baseAddress!) }
            if let bad = floats.firstIndex(where: { !$0.isFinite || abs($0) > implausibleMagnitude }) {
                problems.append(Problem(tensor: name, index: bad, value: floats[bad]))
            }
            progress(index + 1, file.tensorOrder.count)
        }
        return problems
    }
}
