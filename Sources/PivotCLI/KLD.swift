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
        percentiles, maximum, same-top-1 %, and each side's perplexity.
        """)

    @Option(help: "The base (reference) model: a .gguf file, HF folder or model name. Default: the default model.")
    var base: String?

    @Option(help: "Activation precision of the base: int8 or float.")
    var basePrecision: ActivationPrecision = .float

    @Option(help: "Simulated activation bits of the base (none by default).")
    var baseActBits: Int?

    @Option(help: "KV cache of the base: f32 or f16 (e.g. to score a compressed cache against the F16 baseline).")
    var baseKvType: KVCacheSpec.Kind = .f32

    @OptionGroup var model: ModelOptions
    @OptionGroup var precisionOption: PrecisionOption
    @OptionGroup var kv: KVCacheOptions

    @Option(help: "Simulated activation bits of the compared model.")
    var actBits: Int?

    @Option(name: [.customShort("f"), .customLong("file")], help: "Text to score (e.g. wikitext-2-raw test).")
    var file: String

    @Option(name: .customLong("ctx"), help: "Window length in tokens.")
    var windowLength: Int = 512

    @Option(help: "Score at most this many windows (default: all).")
    var chunks: Int?

    @Option(help: "Run only the base and store its top-K log-probabilities per token in this file (for models too large to hold twice).")
    var saveBase: String?

    @Option(help: "Score -m against a file written by --save-base instead of running a base model.")
    var baseFile: String?

    @Option(help: "With --save-base: log-probabilities kept per token (8 bytes each); the rest of the vocabulary is one bucket, so KLD is a lower bound: on int8 vs float of the default model 77% of the exact value at K=64, 88% at 256, 95% at 1024.")
    var topK: Int = 1024

    func validate() throws {
        guard windowLength >= 2 && windowLength <= 8192 else { throw ValidationError("--ctx must be between 2 and 8192") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1") }
        if saveBase != nil && baseFile != nil { throw ValidationError("give --save-base or --base-file, not both") }
        if baseKvType == .kivi { throw ValidationError("--base-kv-type takes f32 or f16: the base is the reference") }
        if baseFile != nil && (base != nil || baseActBits != nil) { throw ValidationError("--base-file replaces --base and its options") }
        guard (1...1024).contains(topK) else { throw ValidationError("--top-k must be between 1 and 1024") }
        for bits in [actBits, baseActBits].compactMap({ $0 }) where !(2...16).contains(bits) {
            throw ValidationError("--act-bits and --base-act-bits must be between 2 and 16")
        }
    }

    func run() throws {
        guard FileManager.default.fileExists(atPath: file) else { throw PivotError.fileNotFound(file) }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw PivotError.cannotRead(file, "not UTF-8 text") }
        let pool = model.makePool()
        if let saveBase { return try writeBase(text: text, to: saveBase, pool: pool) }
        if let baseFile { return try scoreAgainstFile(text: text, file: baseFile, pool: pool) }
        let baseConfiguration = RunConfiguration(name: "base", model: base, precision: basePrecision, actBits: baseActBits, kvCache: KVCacheSpec(kind: baseKvType))
        let testConfiguration = RunConfiguration(name: "test", model: try model.resolvedPath(), precision: precisionOption.precision, actBits: actBits, kvCache: kv.spec)
        let baseModel = try baseConfiguration.load(), testModel = try testConfiguration.load()
        for m in [baseModel, testModel] where windowLength > m.config.contextLength {
            throw ValidationError("--ctx \(windowLength) exceeds the context of \(m.path) (\(m.config.contextLength))")
        }
        guard baseModel.tokenizer.tokens == testModel.tokenizer.tokens else {
            throw ValidationError("the two models have different vocabularies; KL divergence needs the same tokens")
        }
        let tokens = baseModel.tokenizer.encode(text, addBOS: false)
        writeErr("base: \(baseModel.path) (\(basePrecision.rawValue)\(baseActBits.map { ", A\($0)" } ?? "")); "
                 + "compared: \(testModel.path) (\(precisionOption.precision.rawValue)\(actBits.map { ", A\($0)" } ?? ""))\n")
        let available = tokens.count / windowLength
        let bar = ProgressBar(total: min(chunks ?? available, available), label: "kld")
        let r = try KLDivergence.evaluate(
            base: ScoringSide(model: baseModel, pool: pool, precision: basePrecision, window: windowLength),
            test: ScoringSide(model: testModel, pool: pool, precision: precisionOption.precision, window: windowLength),
            tokens: tokens, window: windowLength, windows: chunks, pool: pool) { done, _ in bar.update(done) }
        bar.finish()
        report(r)
    }

    func writeBase(text: String, to path: String, pool: ThreadPool) throws {
        let baseModel = try RunConfiguration(name: "base", model: base, precision: basePrecision, actBits: baseActBits, kvCache: KVCacheSpec(kind: baseKvType)).load()
        guard windowLength <= baseModel.config.contextLength else { throw ValidationError("--ctx exceeds the base model's context") }
        let tokens = baseModel.tokenizer.encode(text, addBOS: false)
        let bar = ProgressBar(total: min(chunks ?? tokens.count / windowLength, tokens.count / windowLength), label: "base")
        try KLDBaseFile.write(base: ScoringSide(model: baseModel, pool: pool, precision: basePrecision, window: windowLength),
                              tokens: tokens, window: windowLength, windows: chunks, topK: topK, to: path, pool: pool) { done, _ in bar.update(done) }
        bar.finish()
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        print("\(path): top-\(topK) log-probabilities of \(baseModel.path), \(String(format: "%.1f", Double(size) / 1_048_576)) MiB")
    }

    func scoreAgainstFile(text: String, file: String, pool: ThreadPool) throws {
        let testModel = try RunConfiguration(name: "test", model: try model.resolvedPath(), precision: precisionOption.precision, actBits: actBits, kvCache: kv.spec).load()
        let tokens = testModel.tokenizer.encode(text, addBOS: false)
        writeErr("base: \(file); compared: \(testModel.path) (\(precisionOption.precision.rawValue))\n")
        let window = try KLDBaseFile.window(of: file)
        var bar: ProgressBar?
        let r = try KLDBaseFile.evaluate(path: file, test: ScoringSide(model: testModel, pool: pool, precision: precisionOption.precision,
                                                                     window: window), tokens: tokens, pool: pool) { done, total in
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
}
