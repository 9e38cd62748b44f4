import Foundation
import Pivot
import PivotKernels

/// One token's log-probability under the model's raw distribution — the log-softmax of the logits
/// before temperature, top-p or any penalty, so it does not depend on how the token was sampled —
/// with the most likely tokens at that position, best first.
struct TokenLogprob: Sendable, Equatable {
    struct Alternative: Sendable, Equatable {
        var token: Int
        var logprob: Float
    }

    var token: Int
    /// nil for a prompt's first token, which nothing predicts.
    var logprob: Float?
    var top: [Alternative]

    /// `token`'s log-probability in `logits` and the `top` most likely tokens.
    init(token: Int, logits: UnsafePointer<Float>, count: Int, top: Int) {
        let lse = logSumExp(logits, count: count)
        self.token = token
        logprob = logits[token] - lse
        self.top = Self.best(logits, count: count, n: top).map { Alternative(token: $0, logprob: logits[$0] - lse) }
    }

    init(unpredicted token: Int) {
        self.token = token
        logprob = nil
        top = []
    }

    /// Indices of the `n` largest logits, largest first (ties: lower id first, as argmax picks).
    static func best(_ logits: UnsafePointer<Float>, count: Int, n: Int) -> [Int] {
        guard n > 0 else { return [] }
        var kept: [Int] = []
        kept.reserveCapacity(n + 1)
        for i in 0..<count where kept.count < n || logits[i] > logits[kept[kept.count - 1]] {
            var at = kept.count
            while at > 0 && logits[kept[at - 1]] < logits[i] { at -= 1 }
            kept.insert(i, at: at)
            if kept.count > n { kept.removeLast() }
        }
        return kept
    }
}

/// How a token is shown to the client: its text (lossy where a token holds part of a character) and
/// its exact UTF-8 bytes.
struct TokenText {
    let tokenizer: Tokenizer

    func bytes(_ token: Int) -> [UInt8] { tokenizer.bytes(of: token) }
    func text(_ token: Int) -> String { String(decoding: bytes(token), as: UTF8.self) }
    /// Unicode scalars (Python string indices) a token adds to a text: its UTF-8 lead bytes.
    func scalarCount(_ token: Int) -> Int { bytes(token).filter { $0 & 0xC0 != 0x80 }.count }
}

/// Chat completions' `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`.
struct ChatLogprobs: Encodable {
    struct Entry: Encodable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
        var topLogprobs: [Top]
        enum CodingKeys: String, CodingKey { case token, logprob, bytes, topLogprobs = "top_logprobs" }
    }

    struct Top: Encodable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
    }

    var content: [Entry]

    init(_ tokens: [TokenLogprob], text: TokenText) {
        content = tokens.map { t in
            Entry(token: text.text(t.token), logprob: t.logprob ?? 0, bytes: text.bytes(t.token),
                  topLogprobs: t.top.map { Top(token: text.text($0.token), logprob: $0.logprob, bytes: text.bytes($0.token)) })
        }
    }
}

/// Legacy completions' `logprobs`: parallel lists, `top_logprobs` as one dictionary per token
/// (null where the token has no prediction: an echoed prompt's first token), `text_offset` the
/// position of each token in the choice's text, in Unicode scalars.
struct CompletionLogprobs: Encodable {
    var tokens: [String]
    var tokenLogprobs: [Float?]
    var topLogprobs: [[String: Float]?]
    var textOffset: [Int]

    enum CodingKeys: String, CodingKey {
        case tokens, tokenLogprobs = "token_logprobs", topLogprobs = "top_logprobs", textOffset = "text_offset"
    }

    /// `startOffset`: where the first token starts in the choice's text (streamed chunks continue a text).
    init(_ entries: [TokenLogprob], text: TokenText, startOffset: Int = 0) {
        tokens = entries.map { text.text($0.token) }
        tokenLogprobs = entries.map(\.logprob)
        topLogprobs = entries.map { entry in
            entry.logprob == nil ? nil : Dictionary(entry.top.map { (text.text($0.token), $0.logprob) }, uniquingKeysWith: max)
        }
        var offset = startOffset
        textOffset = entries.map { entry in
            defer { offset += text.scalarCount(entry.token) }
            return offset
        }
    }

    /// Explicit so a missing prediction is written as null rather than left out.
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tokens, forKey: .tokens)
        var logprobs = container.nestedUnkeyedContainer(forKey: .tokenLogprobs)
        for value in tokenLogprobs { if let value { try logprobs.encode(value) } else { try logprobs.encodeNil() } }
        var tops = container.nestedUnkeyedContainer(forKey: .topLogprobs)
        for value in topLogprobs { if let value { try tops.encode(value) } else { try tops.encodeNil() } }
        try container.encode(textOffset, forKey: .textOffset)
    }
}

/// The logprobs of one choice or chunk in the shape its route uses.
enum ChoiceLogprobs: Encodable {
    case chat(ChatLogprobs)
    case completion(CompletionLogprobs)

    func encode(to encoder: Encoder) throws {
        switch self {
        case .chat(let value): try value.encode(to: encoder)
        case .completion(let value): try value.encode(to: encoder)
        }
    }
}
