import ArgumentParser
import Foundation
import Pivot

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text file over non-overlapping windows.",
        discussion: "Windows start at token 0; every token but each window's first is scored (--second-half: only the second half, as llama-perplexity). No BOS is added, as in the reference figures. With a prefix (--prefix, --prefix-chat, --prefix-bos) its tokens run before every window and are not scored: the same tokens are scored, conditioned on it (and a model file's intact prefix supplies their keys/values). The last line is 'PPL = X +/- SE'.")

    @OptionGroup(title: "Text") var text: TextWindowOptions

    @Flag(help: "Score only the second half of each window, as llama.cpp's llama-perplexity does (its figures are then comparable).")
    var secondHalf = false

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions
    @OptionGroup(title: "Prefix (run before every window, not scored)") var prefix: PrefixOptions

    func run() throws {
        let contents = try text.text()
        let file = text.file, windowLength = text.window, chunks = text.chunks
        let pool = model.makePool()
        let configuration = try model.configuration(kv: kv, prefix: prefix)
        let loaded = try model.load(configuration, pool: pool)
        guard windowLength <= loaded.config.contextLength else {
            throw ValidationError("--ctx-size \(windowLength) exceeds the model's context of \(loaded.config.contextLength)")
        }
        let tokenizeStart = Date()
        let tokens = loaded.tokenizer.encode(contents, addBOS: false)
        let prefixTokens = try configuration.prefixTokens(for: loaded)
        guard windowLength + prefixTokens.count <= loaded.config.contextLength else {
            throw ValidationError("--ctx-size \(windowLength) and the prefix's \(prefixTokens.count) tokens exceed the model's context of \(loaded.config.contextLength)")
        }
        let evaluator = PerplexityEvaluator(model: loaded, contextLength: windowLength, execution: configuration.execution(pool: pool),
                                            firstScored: secondHalf ? windowLength / 2 : 0, prefix: prefixTokens)
        let total = evaluator.windowCount(tokens: tokens.count, limit: chunks)
        writeErr(String(format: "%@: %d tokens (tokenized in %.2f s), %d windows of %d\n", file, tokens.count,
                        Date().timeIntervalSince(tokenizeStart), total, windowLength))
        if !prefixTokens.isEmpty { writeErr(prefixNote(prefixTokens, model: loaded) + "\n") }
        let bar = ProgressBar(total: total, label: "perplexity")
        let result = try evaluator.evaluate(tokens: tokens, windows: chunks) { done, _, running in
            bar.update(done, suffix: String(format: "PPL %.4f", running))
        }
        bar.finish()
        print(String(format: "%d windows, %d scored tokens, %.1f tokens/s", result.windows, result.scoredTokens,
                     Double(result.windows * windowLength) / result.seconds))
        print(loaded.kvCache.spec.memorySummary(shape: AttentionShape(loaded.config), tokens: windowLength))
        print(String(format: "PPL = %.2f +/- %.2f", result.perplexity, result.perplexityError))
    }
}

