import Foundation
import PivotKernels

/// LLM-MQ's view of the training pass: per-weight gradient magnitudes of the next-token loss,
/// summed over calibration windows, for the block projections.
public final class GradientModel {
    public let model: TrainableModel

    public init(gguf: GGUFFile) throws {
        model = try TrainableModel(gguf: gguf)
        // Only projections need gradients; the embedding and norms stay frozen.
        model.trainable = model.layout.entries.map { TensorName($0.name).role != nil }
    }

    /// Σ over windows of |∂loss/∂W| per block-projection weight, and the mean loss.
    public func gradientMagnitudes(windows: [[Int]], pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) -> ([String: [Float]], Double) {
        let gradients = ParameterBuffer(layout: model.layout), magnitudes = ParameterBuffer(layout: model.layout)
        var loss = 0.0
        for (i, window) in windows.enumerated() {
            gradients.zero()
            loss += model.step(batch: [window], objective: NextTokenCrossEntropy(batch: [window]), gradients: gradients, pool: pool).loss
            for j in 0..<gradients.count { magnitudes.base[j] += abs(gradients.base[j]) }
            progress(i + 1, windows.count)
        }
        var byName: [String: [Float]] = [:]
        for entry in model.layout.entries where TensorName(entry.name).role != nil { byName[entry.name] = magnitudes.values(entry.name) }
        return (byName, loss / Double(max(1, windows.count)))
    }
}
