import Foundation
import PivotKernels

extension OutputShortlist.Settings {
    /// The shortlist for `model`: the `size` most frequent tokens of the corpus plus every special
    /// token, over the head's own rows (the tied embedding, or the file's output.weight).
    public func make(for model: LoadedModel, pool: ThreadPool) throws -> OutputShortlist {
        let initial = try initialCandidates(for: model)
        let weights: TensorData
        if model.config.tiedEmbeddings {
            weights = model.transformer.embedding.tensor
        } else if model.path.hasSuffix(".gguf"), let output = try GGUFFile(path: model.path).tensors["output.weight"] {
            weights = output
        } else {
            throw PivotError.invalidArgument("--shortlist needs a GGUF file or a model with tied embeddings")
        }
        return OutputShortlist(full: model.transformer.output, weights: weights, initial: initial, exact: exact, pool: pool)
    }

    /// The corpus's `size` most frequent tokens and every special, stop, BOS and EOS token.
    public func initialCandidates(for model: LoadedModel) throws -> [Int] {
        guard size >= 1 else { throw PivotError.invalidArgument("--shortlist must be at least 1 (got \(size))") }
        let tokenizer = model.tokenizer
        var counts = [Int](repeating: 0, count: model.config.vocabularySize)
        for t in tokenizer.encode(try readTextFile(corpus), addBOS: false) where t < counts.count { counts[t] += 1 }
        var initial = Array(counts.indices.sorted { counts[$0] > counts[$1] }.prefix(size))
        initial += (0..<tokenizer.vocabularySize).filter { tokenizer.isSpecial($0) } + Array(tokenizer.stopTokens)
        initial += [tokenizer.bos, tokenizer.eos].compactMap { $0 }
        return initial
    }
}
