import Foundation
import Pivot

/// The body of POST /v1/chat/completions.
struct ChatCompletionRequest: Decodable {
    var messages: [RequestMessage]
    var sampling: SamplingFields
    var logprobs: Bool?
    var topLogprobs: Double?

    enum CodingKeys: String, CodingKey { case messages, logprobs, topLogprobs = "top_logprobs" }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sampling = try SamplingFields(from: decoder)
        logprobs = try container.decodeIfPresent(Bool.self, forKey: .logprobs)
        topLogprobs = try container.decodeIfPresent(Double.self, forKey: .topLogprobs)
        // decodeIfPresent: a null counts as absent, as in OpenAI's API.
        guard let messages = try container.decodeIfPresent([RequestMessage].self, forKey: .messages) else {
            throw DecodingError.keyNotFound(CodingKeys.messages, .init(codingPath: container.codingPath, debugDescription: ""))
        }
        guard !messages.isEmpty else { throw ruleBroken("'messages' must not be empty.", at: container.codingPath + [CodingKeys.messages]) }
        self.messages = messages
    }
}

/// The body of POST /v1/completions.
struct CompletionRequest: Decodable {
    var prompt: PromptField
    var sampling: SamplingFields
    /// How many alternatives to report per token (OpenAI allows 0–5; up to 20 here); null: no logprobs.
    var logprobs: Double?
    var echo: Bool?

    enum CodingKeys: String, CodingKey { case prompt, logprobs, echo }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sampling = try SamplingFields(from: decoder)
        logprobs = try container.decodeIfPresent(Double.self, forKey: .logprobs)
        echo = try container.decodeIfPresent(Bool.self, forKey: .echo)
        guard let prompt = try container.decodeIfPresent(PromptField.self, forKey: .prompt) else {
            throw DecodingError.keyNotFound(CodingKeys.prompt, .init(codingPath: container.codingPath, debugDescription: ""))
        }
        self.prompt = prompt
    }
}

/// The fields both completion routes share. Numbers stay `Double` here so the range and integer
/// checks in `validated` can quote exactly what the client sent.
struct SamplingFields: Decodable {
    var maxCompletionTokens: Double?
    var maxTokens: Double?
    var temperature: Double?
    var topP: Double?
    var seed: Double?
    var n: Double?
    var stream: Bool?
    var streamOptions: StreamOptions?
    /// llama-server's extension: end-of-turn tokens do not stop generation.
    var ignoreEOS: Bool?
    var stop: StopSequences?

    enum CodingKeys: String, CodingKey {
        case maxCompletionTokens = "max_completion_tokens", maxTokens = "max_tokens", temperature, topP = "top_p", seed, n
        case stream, streamOptions = "stream_options", ignoreEOS = "ignore_eos", stop
    }
}

struct StreamOptions: Decodable {
    var includeUsage: Bool?

    enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }

    init(from decoder: Decoder) throws {
        guard case .object = try JSONValue(from: decoder) else { throw ruleBroken("'stream_options' must be an object.", at: decoder.codingPath) }
        includeUsage = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Bool.self, forKey: .includeUsage)
    }
}

/// `stop`: a string or an array of up to 4 non-empty strings.
struct StopSequences: Decodable {
    var sequences: [String]

    init(from decoder: Decoder) throws {
        let name = fieldName(decoder.codingPath)
        switch try JSONValue(from: decoder) {
        case .string(let s): sequences = [s]
        case .array(let items):
            guard items.count <= 4 else { throw ruleBroken("\(name) takes at most 4 sequences.", at: decoder.codingPath) }
            sequences = try items.map {
                guard case .string(let s) = $0 else { throw ruleBroken("\(name) must hold strings, not \($0.typeName).", at: decoder.codingPath) }
                return s
            }
        case let other: throw ruleBroken("\(name) must be a string or an array of strings, not \(other.typeName).", at: decoder.codingPath)
        }
        if sequences.contains(where: \.isEmpty) { throw ruleBroken("\(name) sequences must not be empty.", at: decoder.codingPath) }
    }
}

/// `prompt`: a string, an array holding one string, or token ids (an array of integers, or an
/// array holding one, as OpenAI and vLLM take them; lm-evaluation-harness sends these with
/// `tokenized_requests=True`).
struct PromptField: Decodable {
    var text: String
    /// The prompt's token ids when it was given as ids (they are used as given: no BOS is added).
    var tokens: [Int]?

    init(from decoder: Decoder) throws {
        let value = try JSONValue(from: decoder)
        if case .string(let s) = value { text = s; return }
        if case .array(let items) = value, items.count == 1, case .string(let s) = items[0] { text = s; return }
        if case .array(let items) = value, let ids = Self.tokenIDs(items) ?? (items.count == 1 ? Self.tokenIDs(items[0]) : nil) {
            text = ""
            tokens = ids
            return
        }
        throw ruleBroken("\(fieldName(decoder.codingPath)) must be a string, token ids, or an array of one of those.", at: decoder.codingPath)
    }

    /// Whole non-negative numbers as ids; nil when anything else is among them.
    private static func tokenIDs(_ value: JSONValue) -> [Int]? {
        guard case .array(let items) = value else { return nil }
        return tokenIDs(items)
    }

    private static func tokenIDs(_ items: [JSONValue]) -> [Int]? {
        guard !items.isEmpty else { return nil }
        var ids: [Int] = []
        for item in items {
            guard case .number(let n) = item, n >= 0, n < Double(Int32.max), n == n.rounded() else { return nil }
            ids.append(Int(n))
        }
        return ids
    }
}

/// One chat turn: system, developer, user or assistant, with text content (a string, or an array
/// of `{"type": "text", "text": ...}` parts).
struct RequestMessage: Decodable {
    var role: String
    var content: String

    enum CodingKeys: String, CodingKey { case role, content }

    static let roles = ["system", "user", "assistant", "developer"]

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let name = fieldName(decoder.codingPath)
        let rolePath = container.codingPath + [CodingKeys.role], contentPath = container.codingPath + [CodingKeys.content]
        guard case .string(let role)? = try container.decodeIfPresent(JSONValue.self, forKey: .role) else {
            throw ruleBroken("\(name).role must be a string.", at: rolePath)
        }
        guard Self.roles.contains(role) else {
            throw ruleBroken("\(name).role '\(role)' is not supported (system, developer, user, assistant).", at: rolePath)
        }
        switch try container.decodeIfPresent(JSONValue.self, forKey: .content) {
        case .string(let s)?: content = s
        case .array(let parts)?:
            content = try parts.map { part -> String in
                guard case .object(let p) = part, case .string("text")? = p["type"], case .string(let text)? = p["text"] else {
                    throw ruleBroken("\(name).content parts must be {\"type\": \"text\", \"text\": ...}.", at: contentPath)
                }
                return text
            }.joined()
        default: throw ruleBroken("\(name).content must be a string or an array of text parts.", at: contentPath)
        }
        self.role = role
    }

    /// Developer turns are system turns to the chat template.
    var chatMessage: ChatMessage { ChatMessage(role: role == "developer" ? "system" : role, content: content) }
}

/// A JSON value with its type kept exact (a `true` is never the number 1), so an error can say
/// what a field holds instead of what was expected.
enum JSONValue: Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// The value at a decoding error's coding path, if the body has one there.
    func value(at path: [CodingKey]) -> JSONValue? {
        guard let key = path.first else { return self }
        switch self {
        case .object(let fields): return fields[key.stringValue]?.value(at: Array(path.dropFirst()))
        case .array(let items):
            guard let index = key.intValue, items.indices.contains(index) else { return nil }
            return items[index].value(at: Array(path.dropFirst()))
        default: return nil
        }
    }
}
