import XCTest
import Pivot
import PivotKernels

/// The dense KV cache's attention against a naive causal GQA loop, for prefill and decode.
final class AttentionTests: XCTestCase {
    func testDenseCacheMatchesNaiveCausalAttention() {
        let shape = AttentionShape(layers: 2, heads: 4, kvHeads: 2, headDim: 8)
        let cache = DenseKVCache(shape: shape, capacity: 40, maxBatch: 20)
        let pool = ThreadPool(threads: 2)
        var g = SplitMix64(seed: 11)
        var allK: [[Float]] = [], allV: [[Float]] = []
        func randomRows(_ n: Int, _ w: Int) -> [Float] { (0..<(n * w)).map { _ in Float.random(in: -1...1, using: &g) } }
        for batch in [17, 1, 1, 3] {
            let k = randomRows(batch, 16), v = randomRows(batch, 16), q = randomRows(batch, 32)
            for t in 0..<batch { allK.append(Array(k[(t * 16)..<((t + 1) * 16)])); allV.append(Array(v[(t * 16)..<((t + 1) * 16)])) }
            var out = [Float](repeating: 0, count: batch * 32)
            var kk = k, vv = v, qq = q
            let start = cache.length
            kk.withUnsafeMutableBufferPointer { kp in vv.withUnsafeMutableBufferPointer { vp in qq.withUnsafeMutableBufferPointer { qp in
                out.withUnsafeMutableBufferPointer { op in
                    for layer in 0..<2 {
                        cache.append(layer: layer, keys: Matrix(kp.baseAddress!, rows: batch, columns: 16), values: Matrix(vp.baseAddress!, rows: batch, columns: 16))
                    }
                    cache.attend(layer: 1, queries: Matrix(qp.baseAddress!, rows: batch, columns: 32), into: Matrix(op.baseAddress!, rows: batch, columns: 32), pool: pool)
                }
            } } }
            cache.advance(by: batch)
            for t in 0..<batch {
                for h in 0..<4 {
                    let kvh = h / 2
                    let visible = start + t + 1
                    var scores = (0..<visible).map { j in (0..<8).reduce(Float(0)) { $0 + q[t * 32 + h * 8 + $1] * allK[j][kvh * 8 + $1] } / Float(8).squareRoot() }
                    let m = scores.max()!
                    scores = scores.map { expf($0 - m) }
                    let total = scores.reduce(0, +)
                    for i in 0..<8 {
                        let expected = (0..<visible).reduce(Float(0)) { $0 + scores[$1] / total * allV[$1][kvh * 8 + i] }
                        XCTAssertEqual(out[t * 32 + h * 8 + i], expected, accuracy: 1e-5)
                    }
                }
            }
        }
        XCTAssertEqual(cache.length, 22)
        cache.truncate(to: 5)
        XCTAssertEqual(cache.length, 5)
        XCTAssertEqual(cache.bytesPerToken, Double(2 * 2 * 2 * 8 * 4))
    }
}
