import Foundation
import PivotKernels

/// What a training step minimises, row by row of the student's logits. Rows are batch-major
/// (row = sequence·length + position); a row's logits predict the token after it.
public protocol TokenObjective {
    /// Whether this row counts in the loss (unscored rows: the last position, prompts, prefixes).
    func scores(row: Int) -> Bool
    /// The row's loss; `logits` is overwritten with ∂loss/∂logits.
    func loss(row: Int, logits: UnsafeMutablePointer<Float>, vocabulary: Int) -> Float
}

/// Next-token cross-entropy (natural log) against the batch's own next tokens.
public struct NextTokenCrossEntropy: TokenObjective {
    let targets: [Int32]
    /// `targets[row]`: the token to predict, or −1 where the row is not scored.
    public init(targets: [Int32]) { self.targets = targets }

    /// Every position but each sequence's last predicts the next one; `scoredFrom` skips a prompt.
    public init(batch: [[Int]], scoredFrom start: Int = 0) {
        var targets: [Int32] = []
        for sequence in batch {
            for t in 0..<sequence.count { targets.append(t + 1 < sequence.count && t >= start ? Int32(sequence[t + 1]) : -1) }
        }
        self.targets = targets
    }

    public func scores(row: Int) -> Bool { targets[row] >= 0 }

    public func loss(row: Int, logits: UnsafeMutablePointer<Float>, vocabulary: Int) -> Float {
        Self.crossEntropy(logits: logits, vocabulary: vocabulary, target: Int(targets[row]), weight: 1)
    }

    /// −log softmax(z)[target]; z ← weight·(softmax(z) − onehot).
    static func crossEntropy(logits z: UnsafeMutablePointer<Float>, vocabulary: Int, target: Int, weight: Float) -> Float {
        let lse = logSumExp(z, count: vocabulary)
        let loss = lse - z[target]
        for j in 0..<vocabulary { z[j] = weight * Foundation.exp(z[j] - lse) }
        z[target] -= weight
        return loss
    }
}
