import Foundation
import Hummingbird

/// OpenAI's `usage`, with the prompt tokens served from a slot's cache.
struct Usage: Encodable, Equatable {
    struct PromptDetails: Encodable, Equatable {
        var cachedTokens: Int
        enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
    }

    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int
    var promptTokensDetails: PromptDetails

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
        case promptTokensDetails = "prompt_tokens_details"
    }

    init(_ c: Completion) {
        promptTokens = c.promptTokens
        completionTokens = c.completionTokens
        totalTokens = c.promptTokens + c.completionTokens
        promptTokensDetails = PromptDetails(cachedTokens: c.cachedTokens)
    }
}

/// llama-server's `timings`: prompt_n counts only the prompt tokens computed (not reused).
struct Timings: Encodable, Equatable {
    var promptN: Int
    var promptMs: Double
    var promptPerSecond: Double
    var predictedN: Int
    var predictedMs: Double
    var predictedPerSecond: Double
    var cacheN: Int
    var slot: Int

    enum CodingKeys: String, CodingKey {
        case promptN = "prompt_n", promptMs = "prompt_ms", promptPerSecond = "prompt_per_second"
        case predictedN = "predicted_n", predictedMs = "predicted_ms", predictedPerSecond = "predicted_per_second"
        case cacheN = "cache_n", slot
    }

    init(_ c: Completion) {
        promptN = c.promptTokens - c.cachedTokens
        promptMs = c.prefillSeconds * 1000
        promptPerSecond = c.prefillSeconds > 0 ? Double(promptN) / c.prefillSeconds : 0
        predictedN = c.completionTokens
        predictedMs = c.decodeSeconds * 1000
        predictedPerSecond = c.decodeSeconds > 0 ? Double(c.completionTokens) / c.decodeSeconds : 0
        cacheN = c.cachedTokens
        slot = c.slot
    }
}

/// `chat.completion`, `chat.completion.chunk` and `text_completion` share this envelope; `usage`
/// and `timings` appear only where set.
struct CompletionObject: Encodable {
    var id: String
    var object: String
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage?
    var timings: Timings?
}

/// One choice: `message` in a whole chat reply, `delta` in a chat chunk, `text` for completions.
/// `finish_reason` and `logprobs` are always present (null until known, or when not asked for).
struct Choice: Encodable {
    struct Message: Encodable {
        var role = "assistant"
        var content: String
    }

    /// Synthesized encoding: a key is left out when nil, so the final chunk's delta is `{}`.
    struct Delta: Encodable {
        var role: String?
        var content: String?
    }

    var message: Message?
    var delta: Delta?
    var text: String?
    var finishReason: String?
    var logprobs: ChoiceLogprobs?

    enum CodingKeys: String, CodingKey { case index, message, delta, text, finishReason = "finish_reason", logprobs }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(0, forKey: .index)
        try container.encodeIfPresent(message, forKey: .message)
        try container.encodeIfPresent(delta, forKey: .delta)
        try container.encodeIfPresent(text, forKey: .text)
        try container.encode(finishReason, forKey: .finishReason)
        try container.encode(logprobs, forKey: .logprobs)
    }
}

/// GET /health.
struct HealthReply: Encodable {
    var status = "ok"
    var slotsIdle: Int
    var slotsProcessing: Int
    var requestsWaiting: Int

    enum CodingKeys: String, CodingKey {
        case status, slotsIdle = "slots_idle", slotsProcessing = "slots_processing", requestsWaiting = "requests_waiting"
    }
}

/// GET /v1/models: the one model served, with llama-server's `meta`.
struct ModelList: Encodable {
    struct Model: Encodable {
        struct Meta: Encodable {
            var contextLength: Int
            var vocabularySize: Int
            enum CodingKeys: String, CodingKey { case contextLength = "n_ctx", vocabularySize = "n_vocab" }
        }

        var id: String
        var object = "model"
        var created = 0
        var ownedBy = "pivot"
        var meta: Meta

        enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by", meta }
    }

    var object = "list"
    var data: [Model]
}

/// The reply objects for one request, and the streamed chunks as server-sent events ending with
/// `data: [DONE]`.
struct ReplyFormat: Sendable {
    let chat: Bool
    let model: String
    let id: String
    let created: Int
    /// Whether the client asked for logprobs (else `logprobs` is null), and how tokens are shown.
    let logprobs: Bool
    let tokens: TokenText

    init(chat: Bool, model: String, requestID: String, logprobs: Bool, tokens: TokenText) {
        self.chat = chat
        self.model = model
        id = (chat ? "chatcmpl-" : "cmpl-") + requestID
        created = Int(Date().timeIntervalSince1970)
        self.logprobs = logprobs
        self.tokens = tokens
    }

    private func envelope(chunk: Bool, choices: [Choice]) -> CompletionObject {
        let object = chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"
        return CompletionObject(id: id, object: object, created: created, model: model, choices: choices)
    }

    /// `offset`: where the entries' text starts in the choice's text (legacy `text_offset`).
    private func choiceLogprobs(_ entries: [TokenLogprob], offset: Int = 0) -> ChoiceLogprobs? {
        guard logprobs else { return nil }
        // A chat message's content never shows the end-of-turn token, so its logprobs leave it out too.
        return chat ? .chat(ChatLogprobs(entries.filter { !tokens.tokenizer.stopTokens.contains($0.token) }, text: tokens))
                    : .completion(CompletionLogprobs(entries, text: tokens, startOffset: offset))
    }

    /// `entries`: the echoed prompt's, then the generated tokens' logprobs.
    func whole(text: String, logprobs entries: [TokenLogprob], completion: Completion) -> CompletionObject {
        let choice = chat ? Choice(message: .init(content: text), finishReason: completion.finishReason, logprobs: choiceLogprobs(entries))
                          : Choice(text: text, finishReason: completion.finishReason, logprobs: choiceLogprobs(entries))
        var object = envelope(chunk: false, choices: [choice])
        object.usage = Usage(completion)
        object.timings = Timings(completion)
        return object
    }

    private func chunk(text: String?, role: Bool = false, finish: String? = nil, logprobs: ChoiceLogprobs? = nil) -> CompletionObject {
        let choice = chat ? Choice(delta: .init(role: role ? "assistant" : nil, content: text), finishReason: finish, logprobs: logprobs)
                          : Choice(text: text ?? "", finishReason: finish, logprobs: logprobs)
        return envelope(chunk: true, choices: [choice])
    }

    static func event(_ object: CompletionObject) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(jsonData(object))
        buffer.writeString("\n\n")
        return buffer
    }

    /// Writes the events as they come, each text chunk with its tokens' logprobs; the last chunk
    /// carries finish_reason and timings, then a usage chunk when asked for
    /// (`stream_options.include_usage`), then `[DONE]`. `echo`: the prompt's text, sent first.
    func stream(_ events: AsyncStream<GenerationEvent>, echo: String?, includeUsage: Bool, record: RequestRecord?,
                into writer: inout any ResponseBodyWriter) async throws {
        if chat { try await writer.write(Self.event(chunk(text: "", role: true))) }
        var offset = 0
        if let echo, !logprobs {
            try await writer.write(Self.event(chunk(text: echo)))
        }
        for await event in events {
            try Task.checkCancellation()
            switch event {
            case .prompt(let entries):
                try await writer.write(Self.event(chunk(text: echo ?? "", logprobs: choiceLogprobs(entries, offset: offset))))
                offset += entries.map { tokens.scalarCount($0.token) }.reduce(0, +)
            case .text(let piece, let entries):
                try await writer.write(Self.event(chunk(text: piece, logprobs: choiceLogprobs(entries, offset: offset))))
                offset += entries.map { tokens.scalarCount($0.token) }.reduce(0, +)
            case .finished(let completion):
                record?.finish(completion)
                var last = chunk(text: chat ? nil : "", finish: completion.finishReason)
                last.timings = Timings(completion)
                try await writer.write(Self.event(last))
                if includeUsage {
                    var tail = envelope(chunk: true, choices: [])
                    tail.usage = Usage(completion)
                    try await writer.write(Self.event(tail))
                }
            }
        }
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
        try await writer.finish(nil)
    }

    /// Collects the events into one reply. A space (JSON allows leading whitespace) goes out every
    /// half second while generating, so a client that has gone away is noticed at the next write.
    func whole(_ events: AsyncStream<GenerationEvent>, echo: String?, record: RequestRecord?,
               into writer: inout any ResponseBodyWriter) async throws {
        var text = echo ?? ""
        var entries: [TokenLogprob] = []
        var lastWrite = Date()
        for await event in events {
            switch event {
            case .prompt(let scored):
                entries += scored
            case .text(let piece, let scored):
                text += piece
                entries += scored
                if Date().timeIntervalSince(lastWrite) > 0.5 {
                    try await writer.write(ByteBuffer(string: " "))
                    lastWrite = Date()
                }
            case .finished(let completion):
                record?.finish(completion)
                try await writer.write(ByteBuffer(bytes: jsonData(whole(text: text, logprobs: entries, completion: completion))))
            }
        }
        try await writer.finish(nil)
    }
}
