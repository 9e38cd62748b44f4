import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prefill (pp) and decode (tg) speed, in llama-bench's table form.",
        discussion: "The backend column names the kernel path in use (avx512-vnni, avx-vnni, avx2 or portable: the best this CPU runs, or PIVOT_ISA's). ppN times one forward pass over N prompt tokens; tgN times N single-token decode steps. Both start from an empty cache, or with -d D after D tokens already in it (filled once, untimed; llama-bench's -d). Each test runs once to warm up, then -r times; t/s is mean ± standard deviation.")

    @Option(name: [.customShort("p"), .customLong("n-prompt")], parsing: .unconditional, help: "Prompt tokens for the prefill test (0 skips it).")
    var promptTokens: Int = 512

    @Option(name: [.customShort("n"), .customLong("n-gen")], parsing: .unconditional, help: "Tokens for the decode test (0 skips it).")
    var generatedTokens: Int = 128

    @Option(name: [.customShort("d"), .customLong("depth")], parsing: .unconditional, help: "Tokens already in the KV cache when each test starts (attention cost grows with it).")
    var depth: Int = 0

    @Option(name: [.customShort("r"), .customLong("repetitions")], parsing: .unconditional, help: "Timed repetitions of each test.")
    var repetitions: Int = 5

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions
    @OptionGroup(title: "Output shortlist") var shortlist: ShortlistOptions
    var precision: ActivationPrecision { model.precision }

    func validate() throws {
        try checkRange("-p", promptTokens, 0...Int.max)
        try checkRange("-n", generatedTokens, 0...Int.max)
        guard promptTokens + generatedTokens > 0 else { throw ValidationError("-p and -n are both 0: nothing to measure") }
        try checkRange("-r", repetitions, 1...Int.max)
        try checkRange("-d", depth, 0...Int.max)
    }

    func run() throws {
        let pool = model.makePool()
        writeErr("kernels: \(KernelISA.active) (this CPU: \(KernelISA.detected); PIVOT_ISA=avx512|avxvnni|avx2|portable chooses)\n")
        let configuration = try model.configuration(kv: kv, shortlist: shortlist)
        let loaded = try model.load(configuration, pool: pool)
        let c = loaded.config
        let capacity = depth + max(promptTokens, generatedTokens) + 1
        guard capacity <= c.contextLength else { throw ValidationError("-d plus the test is longer than the model's context (\(c.contextLength))") }
        // Passes of up to 512 tokens for the prompt test and for filling the cache to -d.
        let batch = max(1, min(max(promptTokens, depth), 512))
        let cache = loaded.makeCache(capacity: capacity, maxBatch: max(batch, min(generatedTokens, 512)))
        let state = ForwardState(config: c, maxTokens: batch, allLogits: false, execution: configuration.execution(pool: pool))
        var rng = SplitMix64(seed: 42)
        let vocabulary = loaded.tokenizer.vocabularySize
        func randomTokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int(rng.next() % UInt64(vocabulary)) } }
        if depth > 0 {
            writeErr("filling the cache with \(depth) tokens\n")
            loaded.transformer.forward(randomTokens(depth), cache: cache, state: state, logits: .last)
        }
        let at = depth > 0 ? " @ d\(depth)" : ""

        var rows: [(String, [Double])] = []
        if promptTokens > 0 {
            let prompt = randomTokens(promptTokens)
            let rates = measure {
                cache.truncate(to: depth)
                loaded.transformer.forward(prompt, cache: cache, state: state, logits: .last)
                return promptTokens
            }
            rows.append(("pp\(promptTokens)\(at)", rates))
        }
        if generatedTokens > 0 {
            let tokens = randomTokens(generatedTokens)
            let rates = measure {
                cache.truncate(to: depth)
                for token in tokens { loaded.transformer.forward(token: token, cache: cache, state: state) }
                return generatedTokens
            }
            rows.append(("tg\(generatedTokens)\(at)", rates))
        }

        let name = (loaded.path as NSString).lastPathComponent
        let size = String(format: "%.2f MiB", Double(loaded.weightBytes) / 1_048_576)
        let params = String(format: "%.2f M", Double(loaded.parameterCount) / 1e6)
        print("| model | size | params | backend | threads | precision | test | t/s |")
        print("| ----- | ---: | -----: | ------- | ------: | --------- | ---: | --: |")
        for (test, rates) in rows {
            let mean = rates.reduce(0, +) / Double(rates.count)
            let sd = rates.count > 1 ? (rates.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(rates.count - 1)).squareRoot() : 0
            print("| \(name) | \(size) | \(params) | CPU (\(KernelISA.active)) | \(pool.threads) | \(precision.rawValue)\(loaded.kvCache.spec == .f32 ? "" : ", KV " + loaded.kvCache.spec.label) | \(test) | "
                  + String(format: "%.2f ± %.2f", mean, sd) + " |")
        }
        print(String(format: "\npeak RSS: %.1f MiB", peakResidentMiB()))
        print(loaded.kvCache.spec.memorySummary(shape: AttentionShape(c), tokens: capacity))
        if let line = loaded.shortlist?.summary { print(line) }
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
