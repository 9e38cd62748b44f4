import Foundation
import Hummingbird

/// OpenAI's response objects for one request: `chat.completion` / `text_completion`, and the
/// streamed `chat.completion.chunk`s as server-sent events ending with `data: [DONE]`.
struct ReplyFormat: Sendable {
    let chat: Bool
    let model: String
    let id: String
    let created: Int

    init(chat: Bool, model: String) {
        self.chat = chat
        self.model = model
        id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(24)
        created = Int(Date().timeIntervalSince1970)
    }

    func usage(_ c: Completion) -> [String: Any] {
        ["prompt_tokens": c.promptTokens, "completion_tokens": c.completionTokens, "total_tokens": c.promptTokens + c.completionTokens,
         "prompt_tokens_details": ["cached_tokens": c.cachedTokens]]
    }

    /// llama-server's `timings`: prompt_n counts only the prompt tokens computed (not reused).
    func timings(_ c: Completion) -> [String: Any] {
        let promptN = c.promptTokens - c.cachedTokens
        return ["prompt_n": promptN, "prompt_ms": c.prefillSeconds * 1000,
                "prompt_per_second": c.prefillSeconds > 0 ? Double(promptN) / c.prefillSeconds : 0,
                "predicted_n": c.completionTokens, "predicted_ms": c.decodeSeconds * 1000,
                "predicted_per_second": c.decodeSeconds > 0 ? Double(c.completionTokens) / c.decodeSeconds : 0,
                "cache_n": c.cachedTokens, "slot": c.slot]
    }

    private func envelope(object: String, choices: [[String: Any]]) -> [String: Any] {
        ["id": id, "object": object, "created": created, "model": model, "choices": choices]
    }

    func whole(text: String, completion: Completion) -> [String: Any] {
        let choice: [String: Any] = chat
            ? ["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": completion.finishReason, "logprobs": NSNull()]
            : ["index": 0, "text": text, "finish_reason": completion.finishReason, "logprobs": NSNull()]
        var object = envelope(object: chat ? "chat.completion" : "text_completion", choices: [choice])
        object["usage"] = usage(completion)
        object["timings"] = timings(completion)
        return object
    }

    private func chunk(text: String?, role: Bool = false, finish: String? = nil) -> [String: Any] {
        var choice: [String: Any] = ["index": 0, "finish_reason": finish ?? NSNull(), "logprobs": NSNull()]
        if chat {
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if let text { delta["content"] = text }
            choice["delta"] = delta
        } else {
            choice["text"] = text ?? ""
        }
        return envelope(object: chat ? "chat.completion.chunk" : "text_completion", choices: [choice])
    }

    static func event(_ object: Any) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(jsonData(object))
        buffer.writeString("\n\n")
        return buffer
    }

    /// Writes the events as they come; the last chunk carries finish_reason and timings, then a
    /// usage chunk when asked for (`stream_options.include_usage`), then `[DONE]`.
    func stream(_ events: AsyncStream<GenerationEvent>, includeUsage: Bool, into writer: inout any ResponseBodyWriter) async throws {
        if chat { try await writer.write(Self.event(chunk(text: "", role: true))) }
        for await event in events {
            try Task.checkCancellation()
            switch event {
            case .text(let piece):
                try await writer.write(Self.event(chunk(text: piece)))
            case .finished(let completion):
                var last = chunk(text: chat ? nil : "", finish: completion.finishReason)
                last["timings"] = timings(completion)
                try await writer.write(Self.event(last))
                if includeUsage {
                    var tail = envelope(object: chat ? "chat.completion.chunk" : "text_completion", choices: [])
                    tail["usage"] = usage(completion)
                    try await writer.write(Self.event(tail))
                }
            }
        }
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
        try await writer.finish(nil)
    }
}
