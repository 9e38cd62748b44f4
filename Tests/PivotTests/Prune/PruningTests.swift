import Foundation
import XCTest
import Pivot
import PivotKernels

/// Structured pruning: the least-squares re-fit against an independent solution of the normal
/// equations, dropped blocks equal the engine without them, pruned files load, and a pruned
/// vocabulary still encodes any text losslessly and the corpus to the same pieces.
final class PruningTests: XCTestCase {
    func testLeastSquaresMatchesTheNormalEquations() throws {
        var g = SplitMix64(seed: 3)
        func random() -> Float { Float(Double(g.next() % 20_000) / 10_000 - 1) }
        let samples = 400, n = 24, rows = 5
        let kept = [0, 2, 3, 7, 8, 11, 15, 16, 19, 23]
        let a = (0..<(samples * n)).map { _ in random() }
        let w = (0..<(rows * n)).map { _ in random() }
        // Gram G = Σ a·aᵀ and a target Δ whose cross term C = Σ Δ·aᵀ.
        let delta = (0..<(samples * rows)).map { _ in random() * 0.3 }
        var gram = [Double](repeating: 0, count: n * n), cross = [Float](repeating: 0, count: rows * n)
        for s in 0..<samples {
            for i in 0..<n { for j in 0..<n { gram[i * n + j] += Double(a[s * n + i] * a[s * n + j]) } }
            for r in 0..<rows { for j in 0..<n { cross[r * n + j] += delta[s * rows + r] * a[s * n + j] } }
        }
        let fitted = try w.withUnsafeBufferPointer { wp in
            try cross.withUnsafeBufferPointer { cp in
                try LeastSquaresRefit.refit(weights: wp.baseAddress!, rows: rows, columns: n, gram: gram, cross: cp.baseAddress!,
                                            kept: kept, dampening: 1e-10, pool: ThreadPool(threads: 2))
            }
        }
        // Independent: per output row, the normal equations A_Kᵀ·A_K·x = A_Kᵀ·y with y = W·a + Δ, by Gaussian elimination.
        let k = kept.count
        for r in 0..<rows {
            var m = [Double](repeating: 0, count: k * (k + 1))
            for s in 0..<samples {
                var y = Double(delta[s * rows + r])
                for j in 0..<n { y += Double(w[r * n + j] * a[s * n + j]) }
                for (i, ki) in kept.enumerated() {
                    let ai = Double(a[s * n + ki])
                    for (j, kj) in kept.enumerated() { m[i * (k + 1) + j] += ai * Double(a[s * n + kj]) }
                    m[i * (k + 1) + k] += ai * y
                }
            }
            for col in 0..<k {
                let pivot = (col..<k).max { abs(m[$0 * (k + 1) + col]) < abs(m[$1 * (k + 1) + col]) }!
                for j in 0...k { m.swapAt(col * (k + 1) + j, pivot * (k + 1) + j) }
                for row in 0..<k where row != col {
                    let f = m[row * (k + 1) + col] / m[col * (k + 1) + col]
                    for j in 0...k { m[row * (k + 1) + j] -= f * m[col * (k + 1) + j] }
                }
            }
            for i in 0..<k {
                let expected = m[i * (k + 1) + k] / m[i * (k + 1) + i]
                XCTAssertEqual(Double(fitted[r * k + i]), expected, accuracy: 1e-4 * max(1, abs(expected)), "row \(r) column \(kept[i])")
            }
        }
    }

    func testDroppedBlocksEqualTheEngineWithoutThemAndHealingLowersTheError() throws {
        var tiny = TinyModel()
        tiny.layers = 4; tiny.hidden = 64; tiny.ffn = 128
        tiny.randomize(seed: 9)
        let folder = try tiny.writeFolder(config: tiny.baseConfig)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("f32.gguf").path
        try HuggingFaceConverter.convert(folder: folder.path, to: path, floatType: .f32)
        let pool = ThreadPool(threads: 2), execution = Execution(pool: pool, precision: .float)
        let original = try LoadedModel.load(path: path), source = try GGUFFile(path: path)
        let tokens = (0..<64).map { ($0 * 37 + 11) % tiny.vocab }

        // Without healing, dropping block 2 is exactly the engine with that block removed.
        let dropped = folder.appendingPathComponent("dropped.gguf").path
        let result = try StructuredPruning.write(source: source, plan: PruningPlan(droppedLayers: [2]), statistics: nil, to: dropped, pool: pool)
        XCTAssertEqual(result.sourceLayers, [0, 1, 3])
        let pruned = try LoadedModel.load(path: dropped)
        XCTAssertEqual(pruned.config.layerCount, 3)
        XCTAssertEqual(PruningRecord(gguf: try GGUFFile(path: dropped))?.droppedLayers, [2])
        let reference = original.transformer.layers
        original.transformer.layers.remove(at: 2)
        XCTAssertEqual(logits(pruned, tokens, execution), logits(original, tokens, execution))
        original.transformer.layers = reference

        // FFN channels and a dropped block, unhealed and healed: healing brings the logits closer to the whole model's
        // (on a calibration window: a random model's features say little about other text).
        let calibration = (0..<(16 * 32)).map { ($0 * 53 + 7) % tiny.vocab }
        let statistics = try PruningStatistics.collect(model: original, tokens: calibration, length: 32, chunks: 16, absorbDropped: [2], execution: execution)
        let held = Array(calibration[0..<32])
        let full = logits(original, held, execution)
        var errors: [PruningPlan.Healing: Double] = [:]
        for healing in PruningPlan.Healing.allCases {
            let out = folder.appendingPathComponent("\(healing).gguf").path
            let r = try StructuredPruning.write(source: source, plan: PruningPlan(droppedLayers: [2], ffnRatio: 0.5, healing: healing),
                                                statistics: statistics, to: out, pool: pool)
            XCTAssertEqual(r.ffnWidth, 64)
            let model = try LoadedModel.load(path: out)
            XCTAssertEqual(model.config.intermediateSize, 64)
            XCTAssertEqual(model.transformer.layers[0].down?.inFeatures, 64)
            errors[healing] = zip(logits(model, held, execution), full).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        }
        XCTAssertLessThan(errors[.lsq]!, 0.8 * errors[.none]!, "least squares should heal: \(errors)")
    }

    func testPrunedVocabularyRoundTripsAnyTextAndKeepsTheCorpusPieces() throws {
        let source = try GGUFFile(path: try Shared.requireModelPath())
        let tokenizer = try Tokenizer(gguf: source)
        let corpus = String(try Shared.wikitext().prefix(20_000))
        let types = source.metadata["tokenizer.ggml.token_type"]!.array!.map { $0.int ?? 1 }
        let selection = try VocabularySelection.select(tokenizer: tokenizer, corpus: corpus, types: types, extraIDs: [0, 1, 2])
        XCTAssertLessThan(selection.kept.count, 12_000)
        XCTAssertGreaterThan(selection.kept.count, 1_000)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-vocab-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let out = folder.appendingPathComponent("vocab.gguf").path
        try selection.write(source: source, to: out)
        let pruned = try LoadedModel.load(path: out)
        XCTAssertEqual(pruned.config.vocabularySize, selection.kept.count)
        XCTAssertEqual(pruned.tokenizer.bos, selection.kept.firstIndex(of: tokenizer.bos!))

        // The corpus: the same pieces, renumbered.
        let before = tokenizer.encode(corpus), after = pruned.tokenizer.encode(corpus)
        XCTAssertEqual(after.map { selection.kept[$0] }, before)
        // Random text (ASCII, accents, CJK, emoji, control bytes) still encodes and decodes losslessly.
        var g = SplitMix64(seed: 17)
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0xC0...0x17F, 0x4E00...0x4FFF, 0x1F600...0x1F64F, 0x09...0x0D]
        for _ in 0..<50 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<(Int(g.next() % 60) + 1) {
                let range = pools[Int(g.next() % UInt64(pools.count))]
                scalars.append(Unicode.Scalar(range.lowerBound + UInt32(g.next() % UInt64(range.count)))!)
            }
            let text = String(scalars)
            XCTAssertEqual(pruned.tokenizer.decode(pruned.tokenizer.encode(text)), text)
        }
        // The kept rows of the embedding are the source's, byte for byte.
        let a = source.tensors["token_embd.weight"]!, b = try GGUFFile(path: out).tensors["token_embd.weight"]!
        let rowBytes = a.byteCount / a.shape[0]
        for newID in [0, 100, selection.kept.count - 1] {
            XCTAssertEqual(memcmp(a.data + selection.kept[newID] * rowBytes, b.data + newID * rowBytes, rowBytes), 0)
        }
    }

    func logits(_ model: LoadedModel, _ tokens: [Int], _ execution: Execution) -> [Float] {
        let state = ForwardState(config: model.config, maxTokens: tokens.count, allLogits: true, execution: execution)
        let out = model.transformer.forward(tokens, cache: model.makeCache(capacity: tokens.count, maxBatch: tokens.count), state: state, logits: .all)
        return (0..<tokens.count).flatMap { t in (0..<model.config.vocabularySize).map { out.row(t)[$0] } }
    }
}

/// Block scores against a direct computation on a tiny model.
final class LayerImportanceTests: XCTestCase {
    func testDropAloneKLDAndInfluenceMatchADirectComputation() throws {
        var tiny = TinyModel()
        tiny.layers = 3
        tiny.randomize(seed: 4)
        let model = try tiny.load(config: tiny.baseConfig)
        let execution = Execution(pool: ThreadPool(threads: 2), precision: .float)
        let tokens = (0..<64).map { ($0 * 29 + 3) % tiny.vocab }
        let scores = try LayerImportance.measure(model: model, tokens: tokens, length: 32, windows: 2, execution: execution)
        XCTAssertEqual(scores.dropKLD.count, 3)
        XCTAssertTrue(scores.influence.allSatisfy { $0 >= 0 && $0 <= 2 })
        // Dropping block 1 by hand: the mean KLD over both windows' positions.
        func distributions(_ window: [Int]) -> [[Double]] {
            let state = ForwardState(config: model.config, maxTokens: 32, allLogits: true, execution: execution)
            let out = model.transformer.forward(window, cache: model.makeCache(capacity: 32, maxBatch: 32), state: state, logits: .all)
            return (0..<32).map { t in
                let row = (0..<model.config.vocabularySize).map { Double(out.row(t)[$0]) }
                let m = row.max()!, z = row.reduce(0) { $0 + exp($1 - m) }
                return row.map { exp($0 - m) / z }
            }
        }
        var expected = 0.0
        for w in 0..<2 {
            let window = Array(tokens[(w * 32)..<((w + 1) * 32)])
            let p = distributions(window)
            let layers = model.transformer.layers
            model.transformer.layers.remove(at: 1)
            let q = distributions(window)
            model.transformer.layers = layers
            for t in 0..<32 { expected += zip(p[t], q[t]).reduce(0) { $0 + ($1.0 > 0 ? $1.0 * log($1.0 / $1.1) : 0) } / 64 }
        }
        XCTAssertEqual(scores.dropKLD[1], expected, accuracy: 1e-4 * max(1, expected))
        XCTAssertEqual(scores.leastImportant(1, by: .kld), [scores.dropKLD.indices.min { scores.dropKLD[$0] < scores.dropKLD[$1] }!])
    }
}
