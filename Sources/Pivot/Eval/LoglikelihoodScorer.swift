import Foundation
import PivotKernels

/// The log-likelihood of one continuation given its context, and whether every continuation
/// token was the model's greedy choice (lm-eval's `is_greedy`).
public struct RequestScore: Sendable, Equatable {
    public var logLikelihood: Double
    public var isGreedy: Bool
    public var continuationTokens: Int

    public init(logLikelihood: Double, isGreedy: Bool, continuationTokens: Int) {
        self.logLikelihood = logLikelihood; self.isGreedy = isGreedy; self.continuationTokens = continuationTokens
    }
}

/// Scores lm-eval log-likelihood requests on one model. The tokens every request of an item
/// shares (the context, for multiple choice) run once; each request then truncates the cache
/// back to that prefix and runs only its own tokens.
public final class LoglikelihoodScorer {
    public let model: LoadedModel
    let cache: KVCache
    let state: ForwardState
    /// The last row of the shared prefix's logits, kept while the requests run.
    private var prefixLastRow: [Float]
    /// Tokens pushed through the model so far (the work actually done).
    public private(set) var computedTokens = 0
    /// Tokens put before every request and never scored (`--prefix`); requests are left-truncated to fit after them.
    public let leading: [Int]

    public init(model: LoadedModel, execution: Execution,
                contextLength: Int? = nil, chunk: Int = 256, prefix: [Int] = []) {
        self.model = model
        leading = prefix
        cache = model.makeCache(capacity: contextLength ?? min(model.config.contextLength, 4096), maxBatch: chunk)
        state = ForwardState(config: model.config, maxTokens: chunk, allLogits: true, execution: execution)
        prefixLastRow = [Float](repeating: 0, count: model.config.vocabularySize)
    }

    /// lm-eval's `_encode_pair`: trailing whitespace of the context moves to the continuation; the
    /// whole text is encoded once and the continuation is what follows the context's own tokens.
    /// Returns the tokens (after the `--prefix` tokens) and the index of the first continuation token.
    public func encode(_ request: EvalItem.Request) -> (tokens: [Int], continuationStart: Int) {
        let (tokens, start) = encodeAlone(request)
        return (leading + tokens, leading.count + start)
    }

    private func encodeAlone(_ request: EvalItem.Request) -> (tokens: [Int], continuationStart: Int) {
        var context = Substring(request.context), continuation = request.continuation
        while let last = context.unicodeScalars.last, last.properties.isWhitespace {
            context = context.dropLast()
            continuation = String(last) + continuation
        }
        let tokenizer = model.tokenizer
        if context.isEmpty {
            // lm-eval conditions an empty context on the BOS/EOT token.
            let prefix = tokenizer.bos ?? tokenizer.eos ?? 0
            return ([prefix] + tokenizer.encode(continuation, addBOS: false), 1)
        }
        let whole = tokenizer.encode(String(context) + continuation)
        let contextTokens = tokenizer.encode(String(context))
        var tokens = whole, start = contextTokens.count
        // Left-truncate like lm-eval's max_length; at least one context token stays.
        let room = cache.capacity - leading.count
        if tokens.count > room {
            let cut = min(tokens.count - room, start - 1)
            tokens.removeFirst(max(0, cut))
            start -= max(0, cut)
        }
        return (tokens, min(start, tokens.count))
    }

    /// Scores every request of an item, in order.
    public func score(_ item: EvalItem) -> [RequestScore] {
        let encoded = item.requests.map(encode)
        guard let first = encoded.first else { return [] }
        // The shared prefix ends no later than any continuation starts.
        var shared = encoded.map(\.continuationStart).min()!
        for other in encoded.dropFirst() {
            var i = 0
            while i < shared && i < other.tokens.count && other.tokens[i] == first.tokens[i] { i += 1 }
            shared = i
        }
        let transformer = model.transformer
        cache.truncate(to: 0)
        if shared > 0 {
            let logits = transformer.forward(Array(first.tokens[0..<shared]), cache: cache, state: state, logits: .last)
            prefixLastRow.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: logits.row(0), count: logits.columns) }
            computedTokens += shared
        }
        return encoded.map { scoreContinuation($0.tokens, start: $0.continuationStart, after: shared) }
    }

    /// Runs tokens[prefix...] after the cached prefix and sums log p(token) over the continuation.
    private func scoreContinuation(_ tokens: [Int], start: Int, after prefix: Int) -> RequestScore {
        var result = RequestScore(logLikelihood: 0, isGreedy: true, continuationTokens: tokens.count - start)
        guard start < tokens.count else { return result }
        let vocabulary = model.config.vocabularySize
        func add(row: UnsafePointer<Float>, target: Int) {
            result.logLikelihood += Double(row[target] - logSumExp(row, count: vocabulary))
            if argmax(row, count: vocabulary) != target { result.isGreedy = false }
        }
        if start == prefix {
            prefixLastRow.withUnsafeBufferPointer { add(row: $0.baseAddress!, target: tokens[start]) }
        }
        // A recurrent state may return only to an earlier copy; the tokens from there are fed again.
        var position = cache.restorableLength(atMost: prefix)
        cache.truncate(to: position)
        if position < prefix {
            _ = model.transformer.forward(Array(tokens[position..<prefix]), cache: cache, state: state, logits: .last)
            computedTokens += prefix - position
            position = prefix
        }
        // The last token is never fed: its logits would predict nothing.
        while position < tokens.count - 1 {
            let end = min(tokens.count - 1, position + state.maxTokens)
            let logits = model.transformer.forward(Array(tokens[position..<end]), cache: cache, state: state, logits: .all)
            computedTokens += end - position
            for p in position..<end where p + 1 >= start {
                add(row: UnsafePointer(logits.row(p - position)), target: tokens[p + 1])
            }
            position = end
        }
        return result
    }
}
