import Foundation
import PivotKernels

/// IntactKV's pivots as data (Liu et al. 2024): a prefix's tokens (the start token, or a chat preamble with
/// its system prompt) and the keys and values a full-precision model gives them, per layer. Stored in a
/// quantized model's file (`write(model:to:)`), they replace that model's own keys/values for a sequence
/// that starts with the same tokens, in any KV cache, lossless (`StoredPivots`, `PivotedKVCache`).
///
/// A value, so a calibration step can take one, change `keys`/`values` and write it back with
/// `calibrated = true`; `validate()` is what every writer and reader checks.
public struct IntactPrefix: Sendable, Equatable {
    /// The prefix's token ids, BOS first where the tokenizer adds one.
    public var tokens: [Int]
    /// The text the tokens came from ("" for the start token alone).
    public var text: String
    /// File name of the model that computed the keys/values.
    public var source: String
    /// Whether the keys/values were tuned after computing them (false: exactly the source model's).
    public var calibrated: Bool
    public let kvHeads: Int
    public let headDim: Int
    /// Per layer: tokens × kvHeads × headDim floats, keys after RoPE (as every cache stores them).
    public var keys: [[Float]]
    /// Per layer: tokens × kvHeads × headDim floats.
    public var values: [[Float]]

    public var layers: Int { keys.count }
    /// Floats per layer: tokens × kvHeads × headDim.
    public var layerCount: Int { tokens.count * kvHeads * headDim }

    public init(tokens: [Int], text: String, source: String, calibrated: Bool = false, kvHeads: Int, headDim: Int,
                keys: [[Float]], values: [[Float]]) throws {
        self.tokens = tokens; self.text = text; self.source = source; self.calibrated = calibrated
        self.kvHeads = kvHeads; self.headDim = headDim; self.keys = keys; self.values = values
        try validate()
    }

    /// One clear message for a prefix whose arrays do not have its shape.
    public func validate() throws {
        guard !tokens.isEmpty else { throw PivotError.invalidArgument("an intact prefix needs at least one token") }
        guard kvHeads > 0, headDim > 0, !keys.isEmpty, keys.count == values.count else {
            throw PivotError.invalidArgument("intact prefix: \(keys.count) key and \(values.count) value layers of \(kvHeads) KV heads × \(headDim)")
        }
        for (layer, (k, v)) in zip(keys, values).enumerated() where k.count != layerCount || v.count != layerCount {
            throw PivotError.invalidArgument("intact prefix: layer \(layer) holds \(k.count) keys and \(v.count) values, "
                + "expected \(tokens.count) tokens × \(kvHeads) KV heads × \(headDim) = \(layerCount)")
        }
    }

    /// Checks that the prefix fits the model it is used with (shape and vocabulary).
    public func check(for config: ModelConfig, file: String) throws {
        try config.requireAttention(for: "an intact prefix")
        guard layers == config.layerCount, kvHeads == config.kvHeadCount, headDim == config.headDim else {
            throw PivotError.malformed(file: file, "the intact prefix has \(layers) layers × \(kvHeads) KV heads × \(headDim), "
                + "the model \(config.layerCount) × \(config.kvHeadCount) × \(config.headDim) (rewrite it with `pivot intact`)")
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= config.vocabularySize }) {
            throw PivotError.malformed(file: file, "the intact prefix has token \(bad), outside the model's vocabulary of \(config.vocabularySize)")
        }
        guard tokens.count < config.contextLength else {
            throw PivotError.malformed(file: file, "the intact prefix's \(tokens.count) tokens fill the model's context of \(config.contextLength)")
        }
    }

    /// The key and value of one position and KV head: `headDim` floats each, from `keys[layer]`/`values[layer]`.
    @inline(__always) public func offset(position: Int, kvHead: Int) -> Int { (position * kvHeads + kvHead) * headDim }

    /// `full` (the full-precision model) over `tokens` with float activations and an exact F32 cache:
    /// the keys and values IntactKV keeps. `text` and the file name of `full` are recorded with them.
    public static func compute(full: LoadedModel, tokens: [Int], text: String, pool: ThreadPool) throws -> IntactPrefix {
        let c = full.config
        guard !tokens.isEmpty else { throw PivotError.invalidArgument("the prefix has no tokens") }
        guard tokens.count < c.contextLength else {
            throw PivotError.invalidArgument("the prefix has \(tokens.count) tokens, the model's context is \(c.contextLength)")
        }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= c.vocabularySize }) {
            throw PivotError.invalidArgument("prefix token \(bad) is outside the vocabulary of \(full.path) (\(c.vocabularySize) tokens)")
        }
        // The runtime's own exact F32 cache (not DenseKVCache, whose kernel sums in another order), so a prefix
        // from the model itself reproduces its float run bit for bit.
        let cache = QuantizedKVCache(shape: AttentionShape(c), capacity: tokens.count, maxBatch: tokens.count, spec: .f32)
        let state = ForwardState(config: c, maxTokens: tokens.count, allLogits: false, execution: Execution(pool: pool, precision: .float))
        full.transformer.forward(tokens, cache: cache, state: state, logits: .last)
        let d = c.headDim, heads = c.kvHeadCount
        var keys: [[Float]] = [], values: [[Float]] = []
        for layer in 0..<c.layerCount {
            var k = [Float](repeating: 0, count: tokens.count * heads * d), v = k
            for position in 0..<tokens.count {
                for h in 0..<heads {
                    let entry = cache.pivot(layer: layer, kvHead: h, position: position), at = (position * heads + h) * d
                    k.replaceSubrange(at..<(at + d), with: entry.key)
                    v.replaceSubrange(at..<(at + d), with: entry.value)
                }
            }
            keys.append(k); values.append(v)
        }
        return try IntactPrefix(tokens: tokens, text: text, source: (full.path as NSString).lastPathComponent,
                                kvHeads: heads, headDim: d, keys: keys, values: values)
    }
}

/// What `--prefix` / `pivot intact` take: the start token, any text, or the chat template's preamble.
public enum PrefixText: Sendable, Equatable {
    /// The BOS token alone (the attention sink every sequence the runtime starts begins with; for SmolLM2
    /// `<|im_start|>`, which begins every chat).
    case start
    case text(String)
    /// What the chat template puts before the first user turn: its default system prompt (SmolLM2's).
    case chatPreamble

    /// The prefix's text and its tokens, tokenized as the runtime tokenizes a prompt (BOS first only where
    /// the tokenizer adds one), so a conversation or a scored window that starts with the text starts with them.
    public func tokens(for model: LoadedModel) throws -> (text: String, tokens: [Int]) {
        let tokenizer = model.tokenizer
        switch self {
        case .start:
            guard let bos = tokenizer.bos else { throw PivotError.invalidArgument("\(model.path): the tokenizer has no BOS token (give a prefix text)") }
            return (tokenizer.decode([bos]), [bos])
        case .text(let text):
            let tokens = tokenizer.encode(text)
            guard !tokens.isEmpty else { throw PivotError.invalidArgument("the prefix text is empty") }
            return (text, tokens)
        case .chatPreamble:
            let text = model.chatTemplate.render([], addGenerationPrompt: false)
            guard !text.isEmpty else {
                throw PivotError.invalidArgument("\(model.path): the chat template (\(model.chatTemplate)) has no preamble before the first turn (no default system prompt)")
            }
            return (text, tokenizer.encode(text))
        }
    }
}

extension PrefixText: Codable {
    /// In a matrix spec: `"prefix": {"text": "..."}`, `{"start": true}` or `{"chat_preamble": true}`.
    enum CodingKeys: String, CodingKey { case text, start, chatPreamble = "chat_preamble" }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let text = try c.decodeIfPresent(String.self, forKey: .text) { self = .text(text) }
        else if try c.decodeIfPresent(Bool.self, forKey: .start) == true { self = .start }
        else if try c.decodeIfPresent(Bool.self, forKey: .chatPreamble) == true { self = .chatPreamble }
        else { throw PivotError.invalidArgument("prefix: give {\"text\": \"...\"}, {\"start\": true} or {\"chat_preamble\": true}") }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .start: try c.encode(true, forKey: .start)
        case .text(let text): try c.encode(text, forKey: .text)
        case .chatPreamble: try c.encode(true, forKey: .chatPreamble)
        }
    }
}
