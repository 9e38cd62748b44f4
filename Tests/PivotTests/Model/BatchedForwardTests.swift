import Foundation
import XCTest
import Pivot
import PivotKernels

/// Several sequences in one forward pass (a server's continuous batch) against each run alone:
/// same logits, same greedy tokens, for every cache type.
final class BatchedForwardTests: XCTestCase {
    static let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "def add(a, b):\n    return",
        "Water boils at one hundred degrees Celsius at sea level, and freezes at",
    ]

    /// Caches of every kind the server can run with: F32, F16, KIVI-2 with a pivot and outlier
    /// tokens, CSKV (factors from random second moments: the arithmetic, not the quality, is under test).
    static func caches(_ model: LoadedModel) throws -> [(String, PreparedKVCache)] {
        let c = model.config
        var g = SplitMix64(seed: 3)
        let d = c.headDim, vectors = c.layerCount * c.kvHeadCount * 2
        let moments = (0..<vectors).map { _ -> [Double] in
            let a = (0..<(d * d)).map { _ in g.nextUnit() - 0.5 }
            return (0..<(d * d)).map { ij in (0..<d).reduce(ij / d == ij % d ? 0.1 : 0) { $0 + a[ij / d * d + $1] * a[ij % d * d + $1] } }
        }
        let factors = LowRankKVFactors(secondMoments: moments, layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: d, tokens: 1)
        let cskv = CSKVSettings(window: 8, rank: 0.5)
        let plan = try LowRankPlan(factors: factors, fraction: cskv.rank, latentBits: cskv.latentBits, rope: RotaryGeometry(c))
        return [("f32", .f32), ("f16", PreparedKVCache(spec: .f16)),
                ("kivi-2+pivot+ott", PreparedKVCache(spec: .kivi(KIVISettings(bits: 2, group: 32, window: 16, pivots: 1, outlierTokens: 1, outlierPool: 8)))),
                ("cskv", PreparedKVCache(spec: .cskv(cskv), lowRankPlan: plan)),
                // One IntactKV source shared by every cache, as a server's slots share it: sequences prepared in the
                // same pass must each keep their own pivots.
                ("kivi-2+intact", PreparedKVCache(spec: .kivi(KIVISettings(bits: 2, group: 32, window: 16)),
                                                  pivotSource: try IntactPivots(base: model, for: model, pivots: 3)))]
    }

    func testBatchedSequencesMatchEachAloneForEveryCache() throws {
        let model = try Shared.model()
        let vocabulary = model.config.vocabularySize
        let prompts = Self.prompts.map { model.tokenizer.encode($0) }
        let steps = 12
        let execution = Execution(pool: Shared.pool)
        for (name, prepared) in try Self.caches(model) {
            // Alone: each prompt, then greedy decoding one token per pass.
            let alone = ForwardState(config: model.config, maxTokens: 128, allLogits: false, execution: execution)
            var expected: [[Int]] = [], expectedRows: [[[Float]]] = []
            for prompt in prompts {
                let cache = prepared.makeCache(shape: AttentionShape(model.config), capacity: 256, maxBatch: 128)
                var row = model.transformer.forward(prompt, cache: cache, state: alone).row(0)
                var tokens: [Int] = [], rows: [[Float]] = []
                for _ in 0..<steps {
                    rows.append(Array(UnsafeBufferPointer(start: row, count: vocabulary)))
                    tokens.append(argmax(row, count: vocabulary))
                    row = model.transformer.forward(token: tokens.last!, cache: cache, state: alone).row(0)
                }
                expected.append(tokens); expectedRows.append(rows)
            }
            // Batched: the first two prompts start together, the third joins while they decode (its
            // prompt in two chunks beside their single tokens), the fourth a step later.
            let batched = ForwardState(config: model.config, maxTokens: 128, logitRows: 8, execution: execution)
            let caches = prompts.map { _ in prepared.makeCache(shape: AttentionShape(model.config), capacity: 256, maxBatch: 128) }
            var fed = Array(repeating: 0, count: prompts.count)
            var got = Array(repeating: [Int](), count: prompts.count)
            var worst: Float = 0
            let joins = [0, 0, 1, 3]
            for step in 0..<(steps + 8) {
                var tokens: [Int] = [], slices: [SequenceSlice] = [], owners: [Int] = []
                for i in prompts.indices where step >= joins[i] && got[i].count < steps {
                    let piece: [Int]
                    if fed[i] < prompts[i].count {
                        let chunk = i == 2 ? (prompts[i].count + 1) / 2 : prompts[i].count
                        piece = Array(prompts[i][fed[i]..<min(prompts[i].count, fed[i] + chunk)])
                    } else { piece = [got[i].last!] }
                    slices.append(SequenceSlice(cache: caches[i], start: tokens.count, count: piece.count, logits: .last))
                    tokens += piece
                    fed[i] += piece.count
                    owners.append(i)
                }
                if slices.isEmpty { break }
                let logits = model.transformer.forward(batch: tokens, sequences: slices, state: batched)
                for (r, i) in owners.enumerated() where fed[i] >= prompts[i].count {
                    let row = logits.row(r)
                    let reference = expectedRows[i][got[i].count]
                    for v in 0..<vocabulary { worst = max(worst, abs(row[v] - reference[v])) }
                    got[i].append(argmax(row, count: vocabulary))
                }
            }
            XCTAssertEqual(got, expected, "\(name): greedy tokens batched vs alone")
            XCTAssertEqual(worst, 0, "\(name): logits batched vs alone differ by up to \(worst)")
        }
    }

    func testSlicesAreChecked() throws {
        let model = try Shared.model()
        let state = ForwardState(config: model.config, maxTokens: 16, logitRows: 2, execution: Execution(pool: Shared.pool))
        let a = model.makeCache(capacity: 64), b = model.makeCache(capacity: 64)
        // Two slices with all-row logits of 3 tokens each need 6 rows: more than the state holds is refused up front.
        XCTAssertEqual(SequenceSlice(cache: a, start: 0, count: 3, logits: .all).logitRows, 3)
        let ok = model.transformer.forward(batch: [1, 2, 3, 4], sequences: [SequenceSlice(cache: a, start: 0, count: 3, logits: .last),
                                                                          SequenceSlice(cache: b, start: 3, count: 1, logits: .last)], state: state)
        XCTAssertEqual(ok.rows, 2)
        XCTAssertEqual([a.length, b.length], [3, 1])
    }

    private func argmax(_ row: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        for v in 1..<count where row[v] > row[best] { best = v }
        return best
    }
}
