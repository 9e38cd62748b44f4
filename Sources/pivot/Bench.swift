import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prefill (pp) and decode (tg) speed, in llama-bench's table form.",
        discussion: "ppN times one forward pass over N prompt tokens on an empty cache; tgN times N single-token decode steps from an empty cache. Each test runs once to warm up, then -r times; t/s is mean ± standard deviation.")

    @OptionGroup var model: ModelOptions

    @Option(name: [.customShort("p"), .customLong("n-prompt")], help: "Prompt tokens for the prefill test (0 skips it).")
    var promptTokens: Int = 512

    @Option(name: [.customShort("n"), .customLong("n-gen")], help: "Tokens for the decode test (0 skips it).")
    var generatedTokens: Int = 128

    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Timed repetitions of each test.")
    var repetitions: Int = 5

    @OptionGroup var precisionOption: PrecisionOption
    var precision: ActivationPrecision { precisionOption.precision }

    func validate() throws {
        guard promptTokens >= 0, generatedTokens >= 0, promptTokens + generatedTokens > 0 else {
            throw ValidationError("-p and -n must be >= 0 and not both 0")
        }
        guard repetitions >= 1 else { throw ValidationError("-r must be at least 1") }
    }

    func run() throws {
        let loaded = try model.load()
        let pool = model.makePool()
        let c = loaded.config
        let capacity = max(promptTokens, generatedTokens) + 1
        guard capacity <= c.contextLength else { throw ValidationError("tests longer than the model's context (\(c.contextLength))") }
        let cache = loaded.makeCache(capacity: capacity, maxBatch: max(1, min(promptTokens, 512)))
        let state = ForwardState(config: c, maxTokens: max(1, min(promptTokens, 512)), allLogits: false, pool: pool, precision: precision)
        var rng = SplitMix64(seed: 42)
        let vocabulary = loaded.tokenizer.vocabularySize
        func randomTokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int(rng.next() % UInt64(vocabulary)) } }

        var rows: [(String, [Double])] = []
        if promptTokens > 0 {
            let prompt = randomTokens(promptTokens)
            let rates = measure {
                cache.truncate(to: 0)
                loaded.transformer.forward(prompt, cache: cache, state: state, logits: .last)
                return promptTokens
            }
            rows.append(("pp\(promptTokens)", rates))
        }
        if generatedTokens > 0 {
            let tokens = randomTokens(generatedTokens)
            let rates = measure {
                cache.truncate(to: 0)
                for token in tokens { loaded.transformer.forward(token: token, cache: cache, state: state) }
                return generatedTokens
            }
            rows.append(("tg\(generatedTokens)", rates))
        }

        let name = (loaded.path as NSString).lastPathComponent
        let size = String(format: "%.2f MiB", Double(loaded.weightBytes) / 1_048_576)
        let params = String(format: "%.2f M", Double(loaded.parameterCount) / 1e6)
        print("| model | size | params | backend | threads | precision | test | t/s |")
        print("| ----- | ---: | -----: | ------- | ------: | --------- | ---: | --: |")
        for (test, rates) in rows {
            let mean = rates.reduce(0, +) / Double(rates.count)
            let sd = rates.count > 1 ? (rates.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(rates.count - 1)).squareRoot() : 0
            print("| \(name) | \(size) | \(params) | CPU (Swift SIMD) | \(pool.threads) | \(precision.rawValue) | \(test) | "
                  + String(format: "%.2f ± %.2f", mean, sd) + " |")
        }
        print(String(format: "\npeak RSS: %.1f MiB", peakResidentMiB()))
    }

    /// One warm-up, then `repetitions` timed runs; returns tokens/s of each.
    func measure(_ body: () -> Int) -> [Double] {
        _ = body()
        return (0..<repetitions).map { _ in
            let start = DispatchTime.now().uptimeNanoseconds
            let tokens = body()
            return Double(tokens) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
    }
}
