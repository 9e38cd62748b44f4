import ArgumentParser
import Foundation
import Pivot

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text file over non-overlapping windows.",
        discussion: "Windows start at token 0; every token but each window's first is scored (--second-half: only the second half, as llama-perplexity). No BOS is added, as in the reference figures. The last line is 'PPL = X +/- SE'.")

    @OptionGroup var model: ModelOptions

    @Option(name: [.customShort("f"), .customLong("file")], help: "Text file to score (e.g. wikitext-2-raw test).")
    var file: String

    @Option(name: .customLong("ctx"), help: "Window length in tokens.")
    var windowLength: Int = 512

    @Option(name: .customLong("chunks"), help: "Score at most this many windows (default: all).")
    var chunks: Int?

    @Flag(help: "Score only the second half of each window, as llama.cpp's llama-perplexity does (its figures are then comparable).")
    var secondHalf = false

    @OptionGroup var precisionOption: PrecisionOption
    @OptionGroup var kv: KVCacheOptions
    var precision: ActivationPrecision { precisionOption.precision }

    func validate() throws {
        guard windowLength >= 2 && windowLength <= 8192 else { throw ValidationError("--ctx must be between 2 and 8192") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1") }
    }

    func run() throws {
        guard FileManager.default.fileExists(atPath: file) else { throw PivotError.fileNotFound(file) }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw PivotError.cannotRead(file, "not UTF-8 text")
        }
        let loaded = try model.load()
        try kv.apply(to: loaded)
        guard windowLength <= loaded.config.contextLength else {
            throw ValidationError("--ctx \(windowLength) exceeds the model's context of \(loaded.config.contextLength)")
        }
        let tokenizeStart = Date()
        let tokens = loaded.tokenizer.encode(text, addBOS: false)
        let evaluator = PerplexityEvaluator(model: loaded, contextLength: windowLength, pool: model.makePool(), precision: precision,
                                            firstScored: secondHalf ? windowLength / 2 : 0)
        let total = evaluator.windowCount(tokens: tokens.count, limit: chunks)
        writeErr(String(format: "%@: %d tokens (tokenized in %.2f s), %d windows of %d\n", file, tokens.count,
                        Date().timeIntervalSince(tokenizeStart), total, windowLength))
        let bar = ProgressBar(total: total, label: "perplexity")
        let result = try evaluator.evaluate(tokens: tokens, windows: chunks) { done, _, running in
            bar.update(done, suffix: String(format: "PPL %.4f", running))
        }
        bar.finish()
        print(String(format: "%d windows, %d scored tokens, %.1f tokens/s", result.windows, result.scoredTokens,
                     Double(result.windows * windowLength) / result.seconds))
        print(String(format: "PPL = %.2f +/- %.2f", result.perplexity, result.perplexityError))
        print(loaded.kvCache.memorySummary(shape: AttentionShape(loaded.config), tokens: windowLength))
    }
}

