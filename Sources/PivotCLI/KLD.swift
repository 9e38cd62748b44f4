import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct KLD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kld",
        abstract: "KL divergence of a configuration's next-token distributions from a base's, over the same text windows.",
        discussion: """
        Both configurations run the same non-overlapping windows of --ctx tokens; every token but each window's first is \
        scored (as `pivot perplexity` does, so the PPL lines equal that verb's; llama.cpp scores only each window's second \
        half). The two sides may be the same file with different runtime options, e.g. `pivot kld --base M --base-precision \
        float -m M --precision int8`. Statistics follow llama-perplexity --kl-divergence: mean KLD ± standard error, \
        percentiles, maximum, same-top-1 %, and each side's perplexity. A prefix (--prefix, --prefix-chat, --prefix-bos)         runs before every window on both sides and is not scored; --save-base records it and --base-file requires the same.
        """)

    @Option(help: "The base (reference) model: a .gguf file, HF folder or model name. Default: the default model.")
    var base: String?

    @Option(help: "Activation precision of the base: int8 or float.")
    var basePrecision: ActivationPrecision = .float

    @Option(parsing: .unconditional, help: "Simulated activation bits of the base, 2-16 (none by default).")
    var baseActBits: Int?

    @Option(help: "KV cache of the base: f32 or f16 (e.g. to score a compressed cache against the F16 baseline).")
    var baseKvType: KVCacheSpec.Kind = .f32

    @Option(parsing: .unconditional, help: "Simulated activation bits of the compared model, 2-16.")
    var actBits: Int?

    @OptionGroup(title: "Text") var text: TextWindowOptions
    @OptionGroup(title: "Compared model") var model: ModelOptions
    @OptionGroup(title: "KV cache compression (compared model)") var kv: KVCacheOptions
    @OptionGroup(title: "Prefix (run before every window on both sides, not scored)") var prefix: PrefixOptions

    @Option(help: "Measure lossy output shortlists of these sizes against -m's own full head instead (e.g. 4096,8192,16384): KL(shortlist ‖ full) = −log P(set), same top-1 and how often the text's next token is outside the set; candidates as `--shortlist` picks them, plus the window's tokens so far.")
    var shortlistSizes: String?

    @Option(help: "With --shortlist-sizes: the text whose token frequencies pick the shortlist (default: calibration.txt of the shared data).")
    var shortlistCorpus: String?

    @Option(help: "Run only the base and store its top-K log-probabilities per token in this file (for models too large to hold twice).")
    var saveBase: String?

    @Option(help: "Score -m against a file written by --save-base, or by llama.cpp's `llama-perplexity --kl-divergence-base` (its tokens and window; llama.cpp's scored second halves), instead of running a base model.")
    var baseFile: String?

    @Option(name: .customLong("save-top-k"), parsing: .unconditional, help: "With --save-base: log-probabilities kept per token, 1-1024 (8 bytes each); the rest of the vocabulary is one bucket, so KLD is a lower bound: on int8 vs float of the default model 77% of the exact value at K=64, 88% at 256, 95% at 1024.")
    var saveTopK: Int = 1024

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: .hidden)
    var legacyTopK: Int?

    var topK: Int { legacyTopK ?? saveTopK }
    var file: String { text.file }
    var windowLength: Int { text.window }
    var chunks: Int? { text.chunks }

    func validate() throws {
        try OutputPath.check(saveBase, flag: "--save-base")
        if saveBase != nil && baseFile != nil { throw ValidationError("give --save-base or --base-file, not both") }
        guard baseKvType == .f32 || baseKvType == .f16 else { throw ValidationError("--base-kv-type takes f32 or f16: the base is the reference") }
        if baseFile != nil && (base != nil || baseActBits != nil) { throw ValidationError("--base-file replaces --base and its options") }
        try checkRange("--save-top-k", topK, 1...1024)
        if let actBits { try checkRange("--act-bits", actBits, 2...16) }
        if let baseActBits { try checkRange("--base-act-bits", baseActBits, 2...16) }
    }

    /// The base: --base (default: the default model) with its own precision, activation bits and F32/F16 cache.
    var baseConfiguration: RunConfiguration {
        RunConfiguration(name: "base", model: base, precision: basePrecision, actBits: baseActBits, kvCache: baseKvType == .f16 ? .f16 : .f32,
                         prefix: prefix.text)
    }

    func run() throws {
        let text = try self.text.text()
        let pool = model.makePool()
        if let shortlistSizes { return try scoreShortlists(shortlistSizes, text: text, pool: pool) }
        if let saveBase { return try writeBase(text: text, to: saveBase, pool: pool) }
        if let baseFile { return try scoreAgainstFile(text: text, file: baseFile, pool: pool) }
        let testConfiguration = try model.configuration(name: "test", kv: kv, actBits: actBits, prefix: prefix)
        let baseModel = try model.load(baseConfiguration, pool: pool), testModel = try model.load(testConfiguration, pool: pool)
        for m in [baseModel, testModel] where windowLength > m.config.contextLength {
            throw ValidationError("--ctx-size \(windowLength) exceeds the context of \(m.path) (\(m.config.contextLength))")
        }
        guard baseModel.tokenizer.tokens == testModel.tokenizer.tokens else {
            throw ValidationError("the two models have different vocabularies; KL divergence needs the same tokens")
        }
        let tokens = baseModel.tokenizer.encode(text, addBOS: false)
        let basePrefix = try baseConfiguration.prefixTokens(for: baseModel), testPrefix = try testConfiguration.prefixTokens(for: testModel)
        for (m, p) in [(baseModel, basePrefix), (testModel, testPrefix)] where windowLength + p.count > m.config.contextLength {
            throw ValidationError("--ctx-size \(windowLength) and the prefix's \(p.count) tokens exceed the context of \(m.path) (\(m.config.contextLength))")
        }
        if !testPrefix.isEmpty { writeErr("base " + prefixNote(basePrefix, model: baseModel) + "\ncompared " + prefixNote(testPrefix, model: testModel) + "\n") }
        writeErr("base: \(baseModel.path) (\(basePrecision.rawValue)\(baseActBits.map { ", A\($0)" } ?? "")); "
                 + "compared: \(testModel.path) (\(model.precision.rawValue)\(actBits.map { ", A\($0)" } ?? ""))\n")
        let available = tokens.count / windowLength
        let bar = ProgressBar(total: min(chunks ?? available, available), label: "kld")
        let r = try KLDivergence.evaluate(
            base: ScoringSide(model: baseModel, execution: baseConfiguration.execution(pool: pool), window: windowLength, prefix: basePrefix),
            test: ScoringSide(model: testModel, execution: testConfiguration.execution(pool: pool), window: windowLength, prefix: testPrefix),
            tokens: tokens, window: windowLength, windows: chunks, pool: pool) { done, _ in bar.update(done) }
        bar.finish()
        report(r)
    }

    func writeBase(text: String, to path: String, pool: ThreadPool) throws {
        let baseModel = try model.load(baseConfiguration, pool: pool)
        guard windowLength <= baseModel.config.contextLength else { throw ValidationError("--ctx-size exceeds the base model's context") }
        let tokens = baseModel.tokenizer.encode(text, addBOS: false)
        let basePrefix = try baseConfiguration.prefixTokens(for: baseModel)
        guard windowLength + basePrefix.count <= baseModel.config.contextLength else {
            throw ValidationError("--ctx-size \(windowLength) and the prefix's \(basePrefix.count) tokens exceed the base model's context")
        }
        if !basePrefix.isEmpty { writeErr("base " + prefixNote(basePrefix, model: baseModel) + " (recorded in the file)\n") }
        let bar = ProgressBar(total: min(chunks ?? tokens.count / windowLength, tokens.count / windowLength), label: "base")
        try KLDBaseFile.write(base: ScoringSide(model: baseModel, execution: baseConfiguration.execution(pool: pool), window: windowLength,
                                                prefix: basePrefix),
                              tokens: tokens, window: windowLength, windows: chunks, topK: topK, to: path, pool: pool) { done, _ in bar.update(done) }
        bar.finish()
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        print("\(path): top-\(topK) log-probabilities of \(baseModel.path), \(String(format: "%.1f", Double(size) / 1_048_576)) MiB")
    }

    func scoreAgainstFile(text: String, file: String, pool: ThreadPool) throws {
        let testConfiguration = try model.configuration(name: "test", kv: kv, actBits: actBits, prefix: prefix)
        let testModel = try model.load(testConfiguration, pool: pool)
        let tokens = testModel.tokenizer.encode(text, addBOS: false)
        let testPrefix = try testConfiguration.prefixTokens(for: testModel)
        if !testPrefix.isEmpty { writeErr("compared " + prefixNote(testPrefix, model: testModel) + "\n") }
        writeErr("base: \(file); compared: \(testModel.path) (\(model.precision.rawValue))\n")
        var bar: ProgressBar?
        if let window = try LlamaKLDBaseFile.window(of: file) {
            writeErr("llama.cpp base file: its chunks' tokens, the second half of each window of \(window) scored\n")
            let side = ScoringSide(model: testModel, execution: testConfiguration.execution(pool: pool), window: window, prefix: testPrefix)
            let r = try LlamaKLDBaseFile.evaluate(path: file, test: side, pool: pool) { done, total in
                if bar == nil { bar = ProgressBar(total: total, label: "kld") }
                bar?.update(done)
            }
            bar?.finish()
            return report(r)
        }
        let window = try KLDBaseFile.window(of: file)
        let r = try KLDBaseFile.evaluate(path: file, test: ScoringSide(model: testModel, execution: testConfiguration.execution(pool: pool),
                                                                     window: window, prefix: testPrefix), tokens: tokens, pool: pool) { done, total in
            if bar == nil { bar = ProgressBar(total: total, label: "kld") }
            bar?.update(done)
        }
        bar?.finish()
        report(r)
    }

    func report(_ r: KLDResult) {
        print(String(format: "scored tokens:      %d (%.1f s)", r.tokens, r.seconds))
        print(String(format: "PPL(base):          %.4f", r.basePerplexity))
        print(String(format: "PPL(compared):      %.4f", r.perplexity))
        print(String(format: "PPL ratio:          %.5f", r.perplexityRatio))
        print(String(format: "Mean    KLD: %10.6f ± %.6f", r.meanKLD, r.meanKLDStderr))
        print(String(format: "Maximum KLD: %10.6f", r.maxKLD))
        print(String(format: "99.9%%   KLD: %10.6f", r.p999KLD))
        print(String(format: "99.0%%   KLD: %10.6f", r.p99KLD))
        print(String(format: "90.0%%   KLD: %10.6f", r.p90KLD))
        print(String(format: "Median  KLD: %10.6f", r.medianKLD))
        print(String(format: "Same top p: %6.3f ± %.3f %%", r.sameTop1 * 100, r.sameTop1Stderr * 100))
    }

    /// `--shortlist-sizes`: each lossy shortlist against the model's full head.
    func scoreShortlists(_ list: String, text: String, pool: ThreadPool) throws {
        let sizes = list.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 >= 1 }) else { throw ValidationError("--shortlist-sizes \(list): expected sizes such as 4096,8192") }
        let corpus = try ShortlistOptions.corpus(shortlistCorpus)
        let configuration = try model.configuration(kv: kv)
        let loaded = try model.load(configuration, pool: pool)
        let tokens = loaded.tokenizer.encode(text)
        print("| shortlist | candidates at start | tokens | KL(shortlist ‖ full) | P(outside) | same top-1 | next token outside |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for size in sizes {
            let initial = try OutputShortlist.Settings(size: size, corpus: corpus, exact: false).initialCandidates(for: loaded)
            let q = ShortlistQuality.measure(model: loaded, initial: initial, size: size, tokens: tokens, window: windowLength, windows: chunks,
                                             execution: configuration.execution(pool: pool))
            print(String(format: "| %d | %d | %d | %.5f | %.5f | %.3f %% | %.3f %% |", size, q.candidates, q.tokens, q.meanKLD, q.meanMassOutside,
                         100 * q.sameTop1, 100 * q.targetOutside))
        }
    }
}
