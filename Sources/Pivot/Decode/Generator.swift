import Foundation
import PivotKernels

/// Timings of one generation, llama.cpp style.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    public init() {}
    public var promptTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(generatedTokens) / decodeSeconds : 0 }
}

/// Why generation ended.
public enum StopReason: Sendable { case endOfSequence, maxTokens, contextFull }

/// Prefill + decode loop over one model, one cache and one set of buffers.
public final class Generator {
    public let model: LoadedModel
    public let cache: KVCache
    let state: ForwardState

    public init(model: LoadedModel, pool: ThreadPool, contextLength: Int? = nil, maxBatch: Int = 512,
                precision: ActivationPrecision = .int8) {
        self.model = model
        cache = model.makeCache(capacity: contextLength, maxBatch: maxBatch)
        state = ForwardState(config: model.config, maxTokens: maxBatch, allLogits: false, pool: pool, precision: precision)
    }

    /// Feeds `prompt` (after whatever the cache already holds) and generates up to `maxTokens`,
    /// calling `onToken` with each id (return false to stop). Stops at end-of-turn tokens.
    @discardableResult
    public func generate(prompt: [Int], maxTokens: Int, sampler: inout Sampler,
                         stats: inout GenerationStats, onToken: (Int) -> Bool) -> StopReason {
        let transformer = model.transformer
        let vocabulary = model.config.vocabularySize
        guard !prompt.isEmpty else { return .maxTokens }
        if cache.length + prompt.count >= cache.capacity { return .contextFull }
        var start = DispatchTime.now().uptimeNanoseconds
        var logits = transformer.forward(prompt, cache: cache, state: state, logits: .last)
        stats.promptTokens += prompt.count
        stats.prefillSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        start = DispatchTime.now().uptimeNanoseconds
        defer { stats.decodeSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        var generated = 0
        while true {
            let next = sampler.sample(logits.row(0), count: vocabulary)
            generated += 1
            stats.generatedTokens += 1
            if model.tokenizer.stopTokens.contains(next) {
                _ = onToken(next)
                return .endOfSequence
            }
            if !onToken(next) { return .endOfSequence }
            if generated >= maxTokens { return .maxTokens }
            if cache.length + 1 >= cache.capacity { return .contextFull }
            logits = transformer.forward(token: next, cache: cache, state: state)
        }
    }

    public func reset() { cache.truncate(to: 0) }
}
