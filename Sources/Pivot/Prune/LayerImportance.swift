import Foundation
import PivotKernels

/// How much each decoder block matters, measured two ways on calibration text: block influence
/// (ShortGPT: 1 − cosine of the hidden state entering and leaving the block, averaged over tokens)
/// and the direct cost of dropping the block alone (mean KLD of the model without it against the
/// whole model's next-token distributions).
public struct LayerImportance: Sendable {
    public enum Score: String, CaseIterable, Sendable { case kld, influence }

    public let influence: [Double]
    public let dropKLD: [Double]

    public init(influence: [Double], dropKLD: [Double]) { self.influence = influence; self.dropKLD = dropKLD }

    /// The `count` least important blocks by `score`, in ascending index order.
    public func leastImportant(_ count: Int, by score: Score) -> [Int] {
        let values = score == .kld ? dropKLD : influence
        return Array(values.indices.sorted { values[$0] < values[$1] }.prefix(count)).sorted()
    }

    /// Scores `model` over `windows` windows of `length` tokens of `tokens`; `progress(done, total)`
    /// counts passes (per window: the whole model, then one per block).
    public static func measure(model: LoadedModel, tokens: [Int], length: Int, windows: Int, execution: Execution,
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> LayerImportance {
        let available = min(windows, tokens.count / length)
        guard available > 0 else {
            throw PivotError.invalidArgument("layer scoring needs at least \(length) calibration tokens (have \(tokens.count))")
        }
        let transformer = model.transformer, layerCount = transformer.layers.count, vocabulary = model.config.vocabularySize
        let state = ForwardState(config: model.config, maxTokens: length, allLogits: true, execution: execution)
        let cache = model.makeCache(capacity: length, maxBatch: length)
        let chunks = (0..<available).map { Array(tokens[($0 * length)..<(($0 + 1) * length)]) }
        let total = chunks.count * (1 + layerCount)

        // Window by window (one window's base log-probabilities held at a time): the whole model, with the
        // cosine of each block's input and output, then each block dropped alone.
        var cosineSums = [Double](repeating: 0, count: layerCount), counted = 0
        var dropSums = [Double](repeating: 0, count: layerCount)
        let previous = FloatBuffer(count: length * model.config.hiddenSize)
        let original = transformer.layers
        defer { transformer.layers = original; transformer.residualObserver = nil }
        for (c, chunk) in chunks.enumerated() {
            transformer.layers = original
            transformer.residualObserver = { index, hidden in
                if index > 0 {
                    for t in 0..<hidden.rows {
                        cosineSums[index - 1] += cosine(previous.pointer + t * hidden.columns, hidden.row(t), count: hidden.columns)
                    }
                }
                for t in 0..<hidden.rows { (previous.pointer + t * hidden.columns).update(from: hidden.row(t), count: hidden.columns) }
            }
            cache.truncate(to: 0)
            let base = logSoftmaxRows(transformer.forward(chunk, cache: cache, state: state, logits: .all), vocabulary: vocabulary)
            transformer.residualObserver = nil
            counted += chunk.count
            progress(c * (1 + layerCount) + 1, total)
            for skipped in 0..<layerCount {
                var kept = original
                kept.remove(at: skipped)
                transformer.layers = kept
                cache.truncate(to: 0)
                dropSums[skipped] += meanKLD(base: base, logits: transformer.forward(chunk, cache: cache, state: state, logits: .all), vocabulary: vocabulary)
                progress(c * (1 + layerCount) + 2 + skipped, total)
            }
        }
        let influence = cosineSums.map { 1 - $0 / Double(counted) }
        let dropKLD = dropSums.map { $0 / Double(chunks.count) }
        return LayerImportance(influence: influence, dropKLD: dropKLD)
    }

    static func cosine(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for i in 0..<count { dot += Double(a[i] * b[i]); na += Double(a[i] * a[i]); nb += Double(b[i] * b[i]) }
        return na > 0 && nb > 0 ? dot / (na * nb).squareRoot() : 1
    }

    /// Row-wise log-softmax of the logits, copied out.
    static func logSoftmaxRows(_ logits: Matrix, vocabulary: Int) -> [Float] {
        var out = [Float](repeating: 0, count: logits.rows * vocabulary)
        for r in 0..<logits.rows {
            let row = logits.row(r), lse = logSumExp(row, count: vocabulary)
            for j in 0..<vocabulary { out[r * vocabulary + j] = row[j] - lse }
        }
        return out
    }

    /// Mean over rows of KL(base ‖ softmax(logits)).
    static func meanKLD(base: [Float], logits: Matrix, vocabulary: Int) -> Double {
        var total = 0.0
        for r in 0..<logits.rows {
            let row = logits.row(r), lse = logSumExp(row, count: vocabulary), offset = r * vocabulary
            var kl: Float = 0
            for j in 0..<vocabulary {
                let lp = base[offset + j]
                kl += Foundation.exp(lp) * (lp - (row[j] - lse))
            }
            total += Double(max(kl, 0))
        }
        return total / Double(logits.rows)
    }
}
