import Foundation
import PivotKernels

extension ActivationPrecision: Codable {}

/// What a configuration costs: weight size, cache size, memory and speed.
public struct Efficiency: Codable, Sendable {
    public var weightBytes: Int
    public var bitsPerWeight: Double
    public var kvBytesPerToken: Double
    public var peakRSSMiB: Double
    public var prefillTokensPerSecond: Double
    public var decodeTokensPerSecond: Double
    /// The context at which KV bytes per token are counted (a window or pivots weigh less the longer it is).
    public static let kvReferenceTokens = 4096

    /// A short speed probe: one pass over `prompt` random tokens, then `decode` single-token steps
    /// (both shrunk, in the same 4:1 ratio, to fit a model with a shorter context).
    public static func measure(model: LoadedModel, execution: Execution,
                               prompt requestedPrompt: Int = 256, decode requestedDecode: Int = 64) -> Efficiency {
        let room = max(2, model.config.contextLength - 1)
        let decode = min(requestedDecode, max(1, room / 5)), prompt = min(requestedPrompt, room - decode)
        let cache = model.makeCache(capacity: prompt + decode + 1, maxBatch: prompt)
        let state = ForwardState(config: model.config, maxTokens: prompt, allLogits: false, execution: execution)
        var rng = SplitMix64(seed: 7)
        let vocabulary = UInt64(model.tokenizer.vocabularySize)
        let tokens = (0..<(prompt + decode)).map { _ in Int(rng.next() % vocabulary) }
        model.transformer.forward(Array(tokens[0..<min(32, prompt)]), cache: cache, state: state)  // warm-up
        cache.truncate(to: 0)
        var start = DispatchTime.now().uptimeNanoseconds
        model.transformer.forward(Array(tokens[0..<prompt]), cache: cache, state: state)
        let prefill = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        start = DispatchTime.now().uptimeNanoseconds
        for t in tokens[prompt...] { model.transformer.forward(token: t, cache: cache, state: state) }
        let decodeSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Efficiency(weightBytes: model.weightBytes,
                          bitsPerWeight: Double(model.weightBytes * 8) / Double(model.parameterCount),
                          kvBytesPerToken: model.kvCache.spec.bytes(atLength: Self.kvReferenceTokens, shape: AttentionShape(model.config))
                              / Double(Self.kvReferenceTokens), peakRSSMiB: peakResidentMiB(),
                          prefillTokensPerSecond: Double(prompt) / prefill, decodeTokensPerSecond: Double(decode) / decodeSeconds)
    }
}

/// Peak resident set size of this process (Linux reports kilobytes, macOS bytes).
public func peakResidentMiB() -> Double {
    var usage = rusage()
    #if os(Linux)
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024
    #else
    getrusage(RUSAGE_SELF, &usage)
    return Double(usage.ru_maxrss) / 1_048_576
    #endif
}
