import Foundation
import PivotKernels

/// How a student learns from a teacher's next-token distributions (Hinton et al. 2015): forward KL
/// on the teacher's top-k log-probabilities at a temperature (scaled by τ² so gradients keep their
/// size), or reverse KL (MiniLLM/GKD: mode-seeking, over the full vocabulary), optionally mixed with
/// the data's own cross-entropy.
public struct DistillationSettings: Codable, Equatable, Sendable {
    public enum Divergence: String, Codable, Sendable, CaseIterable { case forward, reverse }
    public var topK = 64
    public var temperature: Float = 1
    /// Weight α of the cross-entropy term: loss = (1 − α)·KD + α·CE.
    public var crossEntropyWeight: Float = 0
    public var divergence = Divergence.forward
    public init(topK: Int = 64, temperature: Float = 1, crossEntropyWeight: Float = 0, divergence: Divergence = .forward) {
        self.topK = topK; self.temperature = temperature; self.crossEntropyWeight = crossEntropyWeight; self.divergence = divergence
    }
}

/// The teacher's view of one batch, row by row, and the loss of the student against it.
public struct DistillationObjective: TokenObjective {
    let settings: DistillationSettings
    /// Per row: the teacher's top-k token ids and log-probabilities at temperature τ (k per row).
    let indices: [Int32], logProbabilities: [Float]
    /// Per row, reverse KL only: all of the teacher's log-probabilities at τ.
    let full: FloatBuffer?
    let targets: [Int32]

    /// `indices`/`logProbabilities`: k per row; `full`: V per row (reverse KL); `targets`: next tokens, −1 unscored.
    public init(settings: DistillationSettings, indices: [Int32], logProbabilities: [Float], full: FloatBuffer?, targets: [Int32]) {
        self.settings = settings; self.indices = indices; self.logProbabilities = logProbabilities; self.full = full; self.targets = targets
    }

    public func scores(row: Int) -> Bool { targets[row] >= 0 }

    public func loss(row: Int, logits z: UnsafeMutablePointer<Float>, vocabulary V: Int) -> Float {
        let tau = settings.temperature, alpha = settings.crossEntropyWeight, k = settings.topK, w = 1 - alpha
        // Cross-entropy on the untempered logits; its gradient α·(softmax(z) − onehot) is added in the
        // divergence's last pass from the tempered logit zₜ (z = τ·zₜ), so no copy of the row is kept.
        let target = Int(targets[row])
        let untemperedLSE = alpha > 0 ? logSumExp(z, count: V) : 0
        let crossEntropy = alpha > 0 ? untemperedLSE - z[target] : 0
        @inline(__always) func ceGradient(_ tempered: Float) -> Float { alpha > 0 ? alpha * Foundation.exp(tau * tempered - untemperedLSE) : 0 }
        if tau != 1 { for j in 0..<V { z[j] /= tau } }
        let lse = logSumExp(z, count: V)
        var divergence: Float = 0
        switch settings.divergence {
        case .forward:
            // τ²·Σ_topk p (log p − log q); ∂/∂z_j = τ·(q_j·P − p_j·[j ∈ topk]).
            var mass: Float = 0
            for i in 0..<k {
                let j = Int(indices[row * k + i]), lp = logProbabilities[row * k + i], p = Foundation.exp(lp)
                divergence += p * (lp - (z[j] - lse))
                mass += p
            }
            for j in 0..<V { let zt = z[j]; z[j] = w * tau * mass * Foundation.exp(zt - lse) + ceGradient(zt) }
            for i in 0..<k { z[Int(indices[row * k + i])] -= w * tau * Foundation.exp(logProbabilities[row * k + i]) }
        case .reverse:
            // τ²·Σ q (log q − log p); ∂/∂z_j = τ·q_j·(a_j − E_q[a]), a = log q − log p.
            let teacher = full!.pointer, base = row * V
            var mean: Float = 0
            for j in 0..<V {
                let lq = z[j] - lse, a = lq - teacher[base + j], q = Foundation.exp(lq)
                divergence += q * a
                mean += q * a
                z[j] = a
            }
            for j in 0..<V {
                let lq = z[j] + teacher[base + j]
                z[j] = w * tau * Foundation.exp(lq) * (z[j] - mean) + ceGradient(lq + lse)
            }
        }
        if alpha > 0 { z[target] -= alpha }
        return w * divergence * tau * tau + alpha * crossEntropy
    }
}

/// Runs a teacher (any model file the engine loads: the unquantized base teaching a quantized or
/// pruned student) over each batch and keeps what the distillation loss needs.
public final class TeacherSource: ObjectiveSource {
    public let teacher: LoadedModel
    public let settings: DistillationSettings
    /// Tokens the teacher reads before every sequence (an intact prefix the student holds as keys and values).
    public let prefix: [Int]
    let execution: Execution
    var state: ForwardState?
    let cache: KVCache

    public init(teacher: LoadedModel, settings: DistillationSettings, length: Int, execution: Execution, prefix: [Int] = []) {
        self.teacher = teacher; self.settings = settings; self.execution = execution; self.prefix = prefix
        cache = teacher.makeCache(capacity: prefix.count + length, maxBatch: prefix.count + length)
    }

    public func objective(for batch: [[Int]], pool: ThreadPool) throws -> DistillationObjective {
        let T = batch[0].count, V = teacher.config.vocabularySize, k = settings.topK, tau = settings.temperature
        let P = prefix.count
        if state == nil { state = ForwardState(config: teacher.config, maxTokens: P + T, allLogits: true, execution: execution) }
        let R = batch.count * T
        var indices = [Int32](repeating: 0, count: R * k), logProbabilities = [Float](repeating: 0, count: R * k)
        let full: FloatBuffer? = settings.divergence == .reverse ? FloatBuffer(count: R * V) : nil
        for (b, sequence) in batch.enumerated() {
            cache.truncate(to: 0)
            let logits = teacher.transformer.forward(prefix + sequence, cache: cache, state: state!, logits: .all)
            guard allFinite(logits.row(P), count: V) else { throw PivotError.nonFinite(file: teacher.path, "teacher logits") }
            indices.withUnsafeMutableBufferPointer { ip in logProbabilities.withUnsafeMutableBufferPointer { lp in
                let fp = full?.pointer
                pool.parallelRanges(count: T, minChunk: 8) { rows in
                    var scaled = [Float](repeating: 0, count: V)
                    for t in rows {
                        let row = b * T + t, source = logits.row(P + t)
                        for j in 0..<V { scaled[j] = source[j] / tau }
                        let lse = scaled.withUnsafeBufferPointer { logSumExp($0.baseAddress!, count: V) }
                        let top = Self.topIndices(scaled, k)
                        for (i, j) in top.enumerated() {
                            ip[row * k + i] = Int32(j)
                            lp[row * k + i] = scaled[j] - lse
                        }
                        if let fp { for j in 0..<V { fp[row * V + j] = scaled[j] - lse } }
                    }
                }
            } }
        }
        return DistillationObjective(settings: settings, indices: indices, logProbabilities: logProbabilities, full: full,
                                     targets: NextTokenCrossEntropy(batch: batch).targets)
    }

    /// The k largest entries' indices, largest first (a k-element min-heap over one pass).
    public static func topIndices(_ x: [Float], _ k: Int) -> [Int] {
        var heap: [Int] = []
        heap.reserveCapacity(k)
        func less(_ a: Int, _ b: Int) -> Bool { x[a] < x[b] }
        func down(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && less(heap[l], heap[m]) { m = l }
                if r < heap.count && less(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m); i = m
            }
        }
        for j in x.indices {
            if heap.count < k {
                heap.append(j)
                var i = heap.count - 1
                while i > 0 && less(heap[i], heap[(i - 1) / 2]) { heap.swapAt(i, (i - 1) / 2); i = (i - 1) / 2 }
            } else if x[j] > x[heap[0]] {
                heap[0] = j; down(0)
            }
        }
        return heap.sorted { x[$0] > x[$1] }
    }
}
