import Foundation
import PivotKernels

/// Causal GQA attention for training, memory-linear in the sequence: the forward pass keeps only
/// each query's log-sum-exp, and the backward pass recomputes every probability from it (as
/// FlashAttention does) instead of storing heads × n². Query head h reads KV head h / (heads / kvHeads).
/// An optional prefix of P positions (IntactKV's pivot tokens, trainable) sits before every sequence.
struct TrainAttention {
    let batch: Int, length: Int, prefix: Int
    let heads: Int, kvHeads: Int, headDim: Int
    var queryWidth: Int { heads * headDim }
    var kvWidth: Int { kvHeads * headDim }
    var rows: Int { batch * length }

    /// out[row] = Σ_u softmax(q·k_u/√d) v_u; lse[row·heads + h] = log Σ_u exp(q·k_u/√d).
    func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                 prefixKeys: UnsafePointer<Float>?, prefixValues: UnsafePointer<Float>?,
                 out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let d = headDim, qw = queryWidth, kvw = kvWidth, group = heads / kvHeads, scale = 1 / Float(d).squareRoot()
        let (T, P) = (length, prefix)
        pool.parallelFor(chunks: batch * heads) { chunk in
            let b = chunk / heads, h = chunk % heads, kv = h / group
            withUnsafeTemporaryAllocation(of: Float.self, capacity: T + P) { scratch in
                let s = scratch.baseAddress!
                for t in 0..<T {
                    let row = b * T + t, query = q + row * qw + h * d, output = out + row * qw + h * d
                    let span = P + t + 1
                    var largest = -Float.infinity
                    for u in 0..<span {
                        let key = u < P ? prefixKeys! + u * kvw + kv * d : k + (b * T + u - P) * kvw + kv * d
                        s[u] = dotF32(query, key, count: d) * scale
                        largest = max(largest, s[u])
                    }
                    var total: Float = 0
                    for u in 0..<span { s[u] = Foundation.exp(s[u] - largest); total += s[u] }
                    let inverse = 1 / total
                    output.update(repeating: 0, count: d)
                    for u in 0..<span {
                        let value = u < P ? prefixValues! + u * kvw + kv * d : v + (b * T + u - P) * kvw + kv * d
                        axpyF32(s[u] * inverse, value, output, count: d)
                    }
                    lse[row * heads + h] = largest + Foundation.log(total)
                }
            }
        }
    }

    /// dQ, dK, dV (post-RoPE; overwritten) from dOut, and the prefix's dK/dV (added) when it has one.
    /// Work is split by (sequence, KV head), so a group's K/V gradients never race; each sequence sums
    /// its prefix gradient apart and the sums are added in sequence order (deterministic).
    func backward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                  prefixKeys: UnsafePointer<Float>?, prefixValues: UnsafePointer<Float>?,
                  out: UnsafePointer<Float>, lse: UnsafePointer<Float>, dOut: UnsafePointer<Float>,
                  dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                  dPrefixKeys: UnsafeMutablePointer<Float>?, dPrefixValues: UnsafeMutablePointer<Float>?, pool: ThreadPool) {
        let d = headDim, qw = queryWidth, kvw = kvWidth, group = heads / kvHeads, scale = 1 / Float(d).squareRoot()
        let (T, P) = (length, prefix)
        dq.update(repeating: 0, count: rows * qw)
        dk.update(repeating: 0, count: rows * kvw)
        dv.update(repeating: 0, count: rows * kvw)
        let prefixScratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, 2 * batch * P * kvw))
        defer { prefixScratch.deallocate() }
        prefixScratch.initialize(repeating: 0, count: max(1, 2 * batch * P * kvw))
        pool.parallelFor(chunks: batch * kvHeads) { chunk in
            let b = chunk / kvHeads, kv = chunk % kvHeads
            let pk = prefixScratch + b * 2 * P * kvw, pv = pk + P * kvw
            for h in (kv * group)..<((kv + 1) * group) {
                for t in 0..<T {
                    let row = b * T + t, span = P + t + 1
                    let query = q + row * qw + h * d, gradient = dOut + row * qw + h * d
                    let logTotal = lse[row * heads + h]
                    let weighted = dotF32(gradient, out + row * qw + h * d, count: d)
                    let dQuery = dq + row * qw + h * d
                    for u in 0..<span {
                        let inPrefix = u < P
                        let key = inPrefix ? prefixKeys! + u * kvw + kv * d : k + (b * T + u - P) * kvw + kv * d
                        let value = inPrefix ? prefixValues! + u * kvw + kv * d : v + (b * T + u - P) * kvw + kv * d
                        let dKey = inPrefix ? pk + u * kvw + kv * d : dk + (b * T + u - P) * kvw + kv * d
                        let dValue = inPrefix ? pv + u * kvw + kv * d : dv + (b * T + u - P) * kvw + kv * d
                        let p = Foundation.exp(dotF32(query, key, count: d) * scale - logTotal)
                        axpyF32(p, gradient, dValue, count: d)
                        let ds = p * (dotF32(gradient, value, count: d) - weighted) * scale
                        if ds == 0 { continue }
                        axpyF32(ds, key, dQuery, count: d)
                        axpyF32(ds, query, dKey, count: d)
                    }
                }
            }
        }
        if P > 0, let dPrefixKeys, let dPrefixValues {
            for b in 0..<batch {
                let pk = prefixScratch + b * 2 * P * kvw, pv = pk + P * kvw
                for i in 0..<(P * kvw) { dPrefixKeys[i] += pk[i]; dPrefixValues[i] += pv[i] }
            }
        }
    }
}
