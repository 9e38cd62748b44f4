import Foundation
import XCTest
import Pivot
import PivotKernels

/// ANPD drafting: the drafter's rules, greedy output identical to plain decoding, and sampled output
/// distributed as without drafting (chi-square tests with their bounds stated).
final class DraftingTests: XCTestCase {
    func testDrafterBacksOffFromLongestNGramAndNeedsEvidence() {
        let d = NGramDrafter(maxN: 3, minBigramCount: 2)
        d.reset(context: [1, 2, 3, 9, 1, 2, 4, 7, 1, 2, 3])
        // Key [2, 3] → 9 once (trigram level), so after ...2, 3 the drafter proposes 9, then [3, 9] → 1, [9, 1] → 2, ...
        XCTAssertEqual(d.draft(limit: 4), [9, 1, 2, 3])
        // A trigram key seen twice with different followers: most frequent wins, ties go to the most recent.
        d.reset(context: [5, 6, 7, 5, 6, 8, 0, 0])
        XCTAssertEqual(d.draft(limit: 1), [], "0 → 0 seen once at the bigram level: too weak")
        d.observe([5, 6])
        XCTAssertEqual(d.draft(limit: 1), [8], "tie between 7 and 8 at [5, 6]: the most recent")
        d.observe([7, 5, 6])
        XCTAssertEqual(d.draft(limit: 1), [7], "7 now seen twice after [5, 6]")
        XCTAssertEqual(NGramDrafter().draft(limit: 4), [], "nothing seen, nothing drafted")
    }

    /// Expected tokens per unit time: 1 + a + … + a^K over the cost of a K+1 batch.
    func testPolicyDraftsOnlyWhenItPays() {
        var policy = DraftPolicy(maxDraft: 10, initialAcceptance: 0.9)
        // Costs like the default model's: 1 token 5 ms, n tokens 5 ms · (1 + 0.25 (n − 1)).
        for n in 1...11 { policy.recordPass(tokens: n, seconds: 0.005 * (1 + 0.25 * Double(n - 1))) }
        XCTAssertEqual(policy.cost(5), 2, accuracy: 1e-9)
        XCTAssertEqual(policy.efficiency(0), 1, accuracy: 1e-12)
        XCTAssertEqual(policy.efficiency(2), (1 + 0.9 + 0.81) / 1.5, accuracy: 1e-9)
        let long = policy.length(limit: 10)
        XCTAssertGreaterThanOrEqual(long, 4, "high acceptance: long drafts")
        XCTAssertEqual(policy.length(limit: 2), 2, "limited by room")
        for _ in 0..<30 { policy.recordVerification(proposed: 1, accepted: 0) }
        XCTAssertLessThan(policy.acceptance, 0.05)
        XCTAssertEqual(policy.length(limit: 10), 0, "drafting would not pay")
        for _ in 0..<10 { policy.recordVerification(proposed: 4, accepted: 4) }
        XCTAssertGreaterThan(policy.length(limit: 10), 0, "acceptance recovered")
        var fixed = DraftPolicy(maxDraft: 10)
        fixed.fixedLength = 6
        XCTAssertEqual(fixed.length(limit: 4), 4)
        XCTAssertEqual(fixed.length(limit: 10), 6)
    }

    static let prompts: [String] = {
        let passage = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
        let code = "func fibonacci(_ n: Int) -> Int {\n    if n < 2 { return n }\n    return fibonacci(n - 1) + fibonacci(n - 2)\n}\n"
        return [
            "Text: \(passage)\n\nThe same text, copied exactly:\n",
            "Rewrite in simpler words: \(passage)\nSimpler:",
            "\(passage)\nQuestion: Who designed the tower?\nAnswer:",
            "Code:\n\(code)\nThe same code with the function renamed to fib:\n",
            "\(code)\n// Now the same function in Python:\n",
            "List the numbers from 1 to 30 separated by commas: 1, 2, 3,",
            "The capital of France is",
            "Once upon a time, there was a little robot who",
            "def quicksort(arr):\n    ",
            "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>user\nRepeat after me: red green blue red green blue red green blue<|im_end|>\n<|im_start|>assistant\n",
            "A B C D E F G H I J K L M N O P",
            "Monday, Tuesday, Wednesday,",
            "import Foundation\n\nstruct Point {\n    var x: Double\n    var y: Double\n}\n\nstruct",
            "the the the the the the the the",
            "Q: What is 12 + 30?\nA:",
            "Translate to French: Good morning, how are you?\nFrench:",
            "Extract the year from: \(passage)\nYear:",
            "Summary of the following: \(passage)\nSummary:",
            "{\"name\": \"Alice\", \"age\": 30, \"city\": \"Paris\"}\n{\"name\": \"Bob\", \"age\":",
            "Roses are red,\nviolets are blue,",
            "1. Apples\n2. Bananas\n3.",
            "In 1969, Neil Armstrong",
            "<html>\n<body>\n<h1>Title</h1>\n<p>",
        ]
    }()

    func generate(_ model: LoadedModel, _ prompt: String, drafter: Drafter?, tokens: Int = 40, sampler: Sampler = Sampler(),
                  capacity: Int = 512, fixedDraft: Int? = nil) -> (tokens: [Int], stats: GenerationStats) {
        let generator = Generator(model: model, execution: Execution(pool: Shared.pool), contextLength: capacity, drafter: drafter)
        generator.draftPolicy.fixedLength = fixedDraft
        var sampler = sampler
        var stats = GenerationStats()
        var out: [Int] = []
        generator.generate(prompt: model.tokenizer.encode(prompt), maxTokens: tokens, sampler: &sampler, stats: &stats) { out.append($0); return true }
        return (out, stats)
    }

    func testGreedyOutputIsIdenticalWithDrafting() throws {
        let model = try Shared.model()
        var drafted = 0, accepted = 0
        for (index, prompt) in Self.prompts.enumerated() {
            let plain = generate(model, prompt, drafter: nil)
            // Adaptive length on even prompts; a fixed 6 on odd ones, so verification runs often.
            let fast = generate(model, prompt, drafter: NGramDrafter(), fixedDraft: index % 2 == 1 ? 6 : nil)
            XCTAssertEqual(fast.tokens, plain.tokens, "prompt \(prompt.prefix(40).debugDescription)")
            drafted += fast.stats.draftedTokens
            accepted += fast.stats.acceptedTokens
        }
        XCTAssertGreaterThan(accepted, 100, "drafts were accepted (\(accepted) of \(drafted)), so verification was exercised")
        // Boundaries: a draft that would pass maxTokens or the cache capacity is cut, output unchanged.
        let copy = Self.prompts[0]
        for (tokens, capacity) in [(7, 512), (40, model.tokenizer.encode(copy).count + 12)] {
            XCTAssertEqual(generate(model, copy, drafter: NGramDrafter(), tokens: tokens, capacity: capacity, fixedDraft: 8).tokens,
                           generate(model, copy, drafter: nil, tokens: tokens, capacity: capacity).tokens)
        }
    }

    /// Sampler.verify alone: with `drafted` proposed, the token it returns (accepted or resampled) is
    /// distributed as softmax(logits / T). 60,000 draws, Pearson chi-square against the exact
    /// probabilities below the 0.001 critical value for the degrees of freedom.
    func testVerifyRuleReproducesTheSamplingDistribution() {
        let logits: [Float] = [2.0, 1.5, 0.3, -0.5, 1.0, 0.0]
        let probabilities = logits.map { exp(Double($0) / 0.8) }
        let total = probabilities.reduce(0, +)
        for drafted in [0, 3] {
            var sampler = Sampler(temperature: 0.8, topK: 0, topP: 1, seed: UInt64(77 + drafted))
            var counts = [Int](repeating: 0, count: logits.count)
            let draws = 60_000
            for _ in 0..<draws { counts[sampler.verify(logits, count: logits.count, drafted: drafted).token] += 1 }
            let chi = counts.indices.reduce(0.0) { acc, i in
                let expected = Double(draws) * probabilities[i] / total
                return acc + pow(Double(counts[i]) - expected, 2) / expected
            }
            XCTAssertLessThan(chi, chiSquareCritical(df: logits.count - 1), "drafted \(drafted): counts \(counts)")
        }
    }

    /// End to end on a tiny random model at temperature 0.25: the first three sampled tokens with a
    /// drafter that proposes (often, not always, accepted) tokens, against plain sampling, 3,000 seeds
    /// each; chi-square test of homogeneity over the sequences seen at least 10 times (the rest pooled),
    /// below the 0.001 critical value.
    func testSampledSequencesAreDistributedAsWithoutDrafting() throws {
        var tiny = TinyModel()
        tiny.randomize(seed: 21)
        let model = try tiny.load(config: tiny.baseConfig)
        let prompt = [5, 77, 200, 13, 5, 77]
        // The drafter proposes plain greedy's continuation: likely, but not certain, under sampling.
        let greedy = Generator(model: model, execution: Execution(pool: Shared.pool), contextLength: 64)
        var greedySampler = Sampler()
        var stats = GenerationStats()
        var continuation: [Int] = []
        greedy.generate(prompt: prompt, maxTokens: 8, sampler: &greedySampler, stats: &stats) { continuation.append($0); return true }
        let oracle = PositionDrafter(promptLength: prompt.count, continuation: continuation)
        let runs = 3000
        var withDraft: [[Int]: Int] = [:], without: [[Int]: Int] = [:]
        var accepted = 0, drafted = 0
        for (drafter, seedBase) in [(oracle as Drafter?, 0), (nil, 100_000)] {
            let generator = Generator(model: model, execution: Execution(pool: Shared.pool), contextLength: 64, drafter: drafter)
            generator.draftPolicy.fixedLength = 3
            for run in 0..<runs {
                generator.reset()
                var sampler = Sampler(temperature: 0.25, topK: 0, topP: 1, seed: UInt64(seedBase + run))
                var stats = GenerationStats()
                var out: [Int] = []
                generator.generate(prompt: prompt, maxTokens: 3, sampler: &sampler, stats: &stats) { out.append($0); return true }
                if drafter == nil { without[out, default: 0] += 1 } else { withDraft[out, default: 0] += 1 }
                accepted += stats.acceptedTokens; drafted += stats.draftedTokens
            }
        }
        XCTAssertGreaterThan(accepted, drafted / 10, "drafts accepted often enough to test acceptance")
        XCTAssertLessThan(accepted, drafted * 9 / 10, "and rejected often enough to test resampling")
        var categories = Set(withDraft.keys).union(without.keys).filter { (withDraft[$0] ?? 0) + (without[$0] ?? 0) >= 10 }.map { Optional($0) }
        categories.append(nil)  // the pooled rest
        func count(_ table: [[Int]: Int], _ key: [Int]?) -> Double {
            Double(key.map { table[$0] ?? 0 } ?? table.filter { (withDraft[$0.key] ?? 0) + (without[$0.key] ?? 0) < 10 }.values.reduce(0, +))
        }
        var chi = 0.0
        for key in categories {
            let a = count(withDraft, key), b = count(without, key)
            guard a + b > 0 else { continue }
            let expected = (a + b) / 2
            chi += pow(a - expected, 2) / expected + pow(b - expected, 2) / expected
        }
        XCTAssertGreaterThan(categories.count, 5)
        XCTAssertLessThan(chi, chiSquareCritical(df: categories.count - 1), "\(categories.count) categories")
    }

    /// Upper 0.001 quantile of chi-square with `df` degrees of freedom (Wilson–Hilferty).
    func chiSquareCritical(df: Int) -> Double {
        let k = Double(df), z = 3.0902
        return k * pow(1 - 2 / (9 * k) + z * (2 / (9 * k)).squareRoot(), 3)
    }
}

/// Proposes a fixed continuation by position: a deterministic drafter for tests.
final class PositionDrafter: Drafter {
    let promptLength: Int
    let continuation: [Int]
    var seen = 0
    init(promptLength: Int, continuation: [Int]) { self.promptLength = promptLength; self.continuation = continuation }
    func reset(context: [Int]) { seen = context.count }
    func observe(_ tokens: [Int]) { seen += tokens.count }
    func draft(limit: Int) -> [Int] {
        let start = seen - promptLength
        guard start >= 0, start < continuation.count else { return [] }
        return Array(continuation[start..<min(continuation.count, start + limit)])
    }
}
