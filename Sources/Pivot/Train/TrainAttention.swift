import Foundation
import PivotKernels

/// Causal GQA attention for training, memory-linear in the sequence: the forward pass keeps only
/// each query's log-sum-exp, and the backward pass recomputes the probabilities of one block of
/// queries at a time from it (as FlashAttention does) instead of storing heads × n². Every product
/// is a small `sgemm` on one thread (the pool splits sequences × heads). Query head h reads KV head
/// h / (heads / kvHeads). An optional prefix of P positions (IntactKV's pivot tokens, trainable)
/// sits before every sequence.
struct TrainAttention {
    let batch: Int, length: Int, prefix: Int
    let heads: Int, kvHeads: Int, headDim: Int
    var queryWidth: Int { heads * headDim }
    var kvWidth: Int { kvHeads * headDim }
    var rows: Int { batch * length }
    /// Queries per block: the scores of a block are `block` × (P + n) floats.
    let block = 64

    /// Scores S = Q_blk·Kᵀ/√d of queries t0 ..< t0+m over keys 0 ..< P + t0 + m (prefix first), masked
    /// causally, into `s` (leading dimension `ld`); the row's keys beyond its own position are −∞.
    @inline(__always)
    func scores(q: UnsafePointer<Float>, k: UnsafePointer<Float>, prefixKeys: UnsafePointer<Float>?,
                b: Int, h: Int, t0: Int, m: Int, s: UnsafeMutablePointer<Float>, ld: Int) {
        let d = headDim, qw = queryWidth, kvw = kvWidth, kv = h / (heads / kvHeads), P = prefix
        let query = q + (b * length + t0) * qw + h * d, scale = 1 / Float(d).squareRoot()
        if P > 0 {
            sgemm(transposeA: false, transposeB: true, m: m, n: P, k: d, alpha: scale, a: query, lda: qw, b: prefixKeys! + kv * d, ldb: kvw,
                  beta: 0, c: s, ldc: ld, pool: nil)
        }
        sgemm(transposeA: false, transposeB: true, m: m, n: t0 + m, k: d, alpha: scale, a: query, lda: qw,
              b: k + b * length * kvw + kv * d, ldb: kvw, beta: 0, c: s + P, ldc: ld, pool: nil)
        for i in 0..<m { let row = s + i * ld; for u in (P + t0 + i + 1)..<(P + t0 + m) { row[u] = -.infinity } }
    }

    /// out[row] = Σ_u softmax(q·k_u/√d) v_u; lse[row·heads + h] = log Σ_u exp(q·k_u/√d).
    func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                 prefixKeys: UnsafePointer<Float>?, prefixValues: UnsafePointer<Float>?,
                 out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let d = headDim, qw = queryWidth, kvw = kvWidth, group = heads / kvHeads, P = prefix, ld = P + length
        pool.parallelFor(chunks: batch * heads) { chunk in
            let b = chunk / heads, h = chunk % heads, kv = h / group
            let s = UnsafeMutablePointer<Float>.allocate(capacity: block * ld)
            defer { s.deallocate() }
            for t0 in stride(from: 0, to: length, by: block) {
                let m = min(block, length - t0), span = P + t0 + m
                scores(q: q, k: k, prefixKeys: prefixKeys, b: b, h: h, t0: t0, m: m, s: s, ld: ld)
                for i in 0..<m {
                    let row = s + i * ld
                    let (largest, total) = exponentiateInPlace(row, count: span)
                    let inverse = 1 / total
                    for u in 0..<span { row[u] *= inverse }
                    lse[(b * length + t0 + i) * heads + h] = largest + Foundation.log(total)
                }
                let output = out + (b * length + t0) * qw + h * d
                if P > 0 {
                    sgemm(transposeA: false, transposeB: false, m: m, n: d, k: P, a: s, lda: ld, b: prefixValues! + kv * d, ldb: kvw,
                          beta: 0, c: output, ldc: qw, pool: nil)
                }
                sgemm(transposeA: false, transposeB: false, m: m, n: d, k: t0 + m, a: s + P, lda: ld, b: v + b * length * kvw + kv * d, ldb: kvw,
                      beta: P > 0 ? 1 : 0, c: output, ldc: qw, pool: nil)
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
        let P = prefix, ld = P + length
        dq.update(repeating: 0, count: rows * qw)
        dk.update(repeating: 0, count: rows * kvw)
        dv.update(repeating: 0, count: rows * kvw)
        let prefixScratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, 2 * batch * P * kvw))
        defer { prefixScratch.deallocate() }
        prefixScratch.initialize(repeating: 0, count: max(1, 2 * batch * P * kvw))
        pool.parallelFor(chunks: batch * kvHeads) { chunk in
            let b = chunk / kvHeads, kv = chunk % kvHeads
            let pk = prefixScratch + b * 2 * P * kvw + kv * d, pv = pk + P * kvw
            let s = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block * ld), dp = s + block * ld
            defer { s.deallocate() }
            let keys = k + b * length * kvw + kv * d, values = v + b * length * kvw + kv * d
            let dKeys = dk + b * length * kvw + kv * d, dValues = dv + b * length * kvw + kv * d
            for h in (kv * group)..<((kv + 1) * group) {
                for t0 in stride(from: 0, to: length, by: block) {
                    let m = min(block, length - t0), span = P + t0 + m, n = t0 + m
                    let row0 = b * length + t0
                    let query = q + row0 * qw + h * d, gradient = dOut + row0 * qw + h * d, dQuery = dq + row0 * qw + h * d
                    // P = exp(S − lse), recomputed; dP = dO·Vᵀ.
                    scores(q: q, k: k, prefixKeys: prefixKeys, b: b, h: h, t0: t0, m: m, s: s, ld: ld)
                    if P > 0 {
                        sgemm(transposeA: false, transposeB: true, m: m, n: P, k: d, a: gradient, lda: qw, b: prefixValues! + kv * d, ldb: kvw,
                              beta: 0, c: dp, ldc: ld, pool: nil)
                    }
                    sgemm(transposeA: false, transposeB: true, m: m, n: n, k: d, a: gradient, lda: qw, b: values, ldb: kvw,
                          beta: 0, c: dp + P, ldc: ld, pool: nil)
                    // dS = P ⊙ (dP − ⟨dO, O⟩)/√d (stored over dP); P stays in s for dV.
                    for i in 0..<m {
                        let r = row0 + i, sr = s + i * ld, dr = dp + i * ld
                        let logTotal = lse[r * heads + h]
                        let weighted = dotF32(dOut + r * qw + h * d, out + r * qw + h * d, count: d)
                        for u in 0..<span {
                            let p = Foundation.exp(sr[u] - logTotal)
                            sr[u] = p
                            dr[u] = p * (dr[u] - weighted) * scale
                        }
                    }
                    // dQ += dS·K; dK += dSᵀ·Q; dV += Pᵀ·dO (prefix columns into the sequence's prefix sums).
                    sgemm(transposeA: false, transposeB: false, m: m, n: d, k: n, a: dp + P, lda: ld, b: keys, ldb: kvw,
                          beta: 1, c: dQuery, ldc: qw, pool: nil)
                    sgemm(transposeA: true, transposeB: false, m: n, n: d, k: m, a: dp + P, lda: ld, b: query, ldb: qw,
                          beta: 1, c: dKeys, ldc: kvw, pool: nil)
                    sgemm(transposeA: true, transposeB: false, m: n, n: d, k: m, a: s + P, lda: ld, b: gradient, ldb: qw,
                          beta: 1, c: dValues, ldc: kvw, pool: nil)
                    if P > 0 {
                        sgemm(transposeA: false, transposeB: false, m: m, n: d, k: P, a: dp, lda: ld, b: prefixKeys! + kv * d, ldb: kvw,
                              beta: 1, c: dQuery, ldc: qw, pool: nil)
                        sgemm(transposeA: true, transposeB: false, m: P, n: d, k: m, a: dp, lda: ld, b: query, ldb: qw,
                              beta: 1, c: pk, ldc: kvw, pool: nil)
                        sgemm(transposeA: true, transposeB: false, m: P, n: d, k: m, a: s, lda: ld, b: gradient, ldb: qw,
                              beta: 1, c: pv, ldc: kvw, pool: nil)
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
