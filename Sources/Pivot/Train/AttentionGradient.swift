import Foundation
import PivotKernels

/// Causal GQA attention with saved probabilities, and its gradient. Query head h reads KV head
/// h / (heads / kvHeads); work is split by KV head so the K and V gradients of a group never race.
extension GradientModel {
    func attentionForward(_ q: [Float], _ k: [Float], _ v: [Float], n: Int, pool: ThreadPool) -> ([Float], [Float]) {
        let c = config, d = c.headDim, heads = c.headCount, kvHeads = c.kvHeadCount, group = heads / kvHeads
        let qw = c.queryWidth, kvw = c.kvWidth, scale = 1 / Float(d).squareRoot()
        var out = [Float](repeating: 0, count: n * qw), probabilities = [Float](repeating: 0, count: heads * n * n)
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
            out.withUnsafeMutableBufferPointer { op in probabilities.withUnsafeMutableBufferPointer { pp in
                let Q = qp.baseAddress!, K = kp.baseAddress!, V = vp.baseAddress!, O = op.baseAddress!, P = pp.baseAddress!
                pool.parallelFor(chunks: heads) { h in
                    let kv = h / group
                    for t in 0..<n {
                        let row = P + (h * n + t) * n, query = Q + t * qw + h * d
                        var largest = -Float.infinity
                        for u in 0...t { row[u] = dotF32(query, K + u * kvw + kv * d, count: d) * scale; largest = max(largest, row[u]) }
                        var total: Float = 0
                        for u in 0...t { row[u] = Foundation.exp(row[u] - largest); total += row[u] }
                        let inverse = 1 / total
                        for u in 0...t {
                            row[u] *= inverse
                            axpyF32(row[u], V + u * kvw + kv * d, O + t * qw + h * d, count: d)
                        }
                    }
                }
            } }
        } } }
        return (out, probabilities)
    }

    /// dQ, dK, dV (post-RoPE) from the gradient of the attention output.
    func attentionBackward(_ dOut: [Float], _ tape: LayerTape, n: Int, pool: ThreadPool) -> ([Float], [Float], [Float]) {
        let c = config, d = c.headDim, heads = c.headCount, kvHeads = c.kvHeadCount, group = heads / kvHeads
        let qw = c.queryWidth, kvw = c.kvWidth, scale = 1 / Float(d).squareRoot()
        var dq = [Float](repeating: 0, count: n * qw), dk = [Float](repeating: 0, count: n * kvw), dv = dk
        tape.q.withUnsafeBufferPointer { qp in tape.k.withUnsafeBufferPointer { kp in tape.v.withUnsafeBufferPointer { vp in
            tape.probabilities.withUnsafeBufferPointer { pp in dOut.withUnsafeBufferPointer { dop in
                dq.withUnsafeMutableBufferPointer { dqp in dk.withUnsafeMutableBufferPointer { dkp in dv.withUnsafeMutableBufferPointer { dvp in
                    let Q = qp.baseAddress!, K = kp.baseAddress!, V = vp.baseAddress!, P = pp.baseAddress!, dO = dop.baseAddress!
                    let dQ = dqp.baseAddress!, dK = dkp.baseAddress!, dV = dvp.baseAddress!
                    pool.parallelFor(chunks: kvHeads) { kv in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { scratch in
                            let ds = scratch.baseAddress!
                            for h in (kv * group)..<((kv + 1) * group) {
                                for t in 0..<n {
                                    let row = P + (h * n + t) * n, gradient = dO + t * qw + h * d
                                    var weighted: Float = 0
                                    for u in 0...t {
                                        ds[u] = dotF32(gradient, V + u * kvw + kv * d, count: d)
                                        weighted += row[u] * ds[u]
                                        axpyF32(row[u], gradient, dV + u * kvw + kv * d, count: d)
                                    }
                                    for u in 0...t {
                                        let s = row[u] * (ds[u] - weighted) * scale
                                        if s == 0 { continue }
                                        axpyF32(s, K + u * kvw + kv * d, dQ + t * qw + h * d, count: d)
                                        axpyF32(s, Q + t * qw + h * d, dK + u * kvw + kv * d, count: d)
                                    }
                                }
                            }
                        }
                    }
                } } }
            } }
        } } }
        return (dq, dk, dv)
    }
}
