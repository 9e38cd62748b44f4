import Foundation
import Pivot

/// A JSON value with its type kept exact (a `true` is never the number 1), so a request with a
/// wrong type gets an error that names the field.
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
}

/// The fields both completion routes share, read from the request body with OpenAI's rules.
struct SamplingRequest {
    var maxTokens: Int?
    var temperature: Float?
    var topP: Float?
    var seed: UInt64?
    var stop: [String] = []
    var stream = false
    var includeUsage = false
    var ignoreEOS = false
}

/// Reads typed fields out of a request object; every failure is an `APIError` naming the field.
struct RequestReader {
    let fields: [String: JSONValue]

    init(body: Data) throws {
        guard !body.isEmpty else { throw APIError.invalid("The request body is empty; expected a JSON object.") }
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: body) } catch {
            throw APIError.invalid("The request body is not valid JSON.")
        }
        guard case .object(let fields) = value else { throw APIError.invalid("The request body must be a JSON object, not \(value.typeName).") }
        self.fields = fields
    }

    func present(_ key: String) -> JSONValue? {
        if case .null? = fields[key] { return nil }
        return fields[key]
    }

    func number(_ key: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let value = present(key) else { return nil }
        guard case .number(let x) = value else { throw APIError.invalid("'\(key)' must be a number, not \(value.typeName).", param: key) }
        guard range.contains(x) else { throw APIError.invalid("'\(key)' must be between \(plain(range.lowerBound)) and \(plain(range.upperBound)); got \(plain(x)).", param: key) }
        return x
    }

    func integer(_ key: String, in range: ClosedRange<Double>) throws -> Int? {
        guard let x = try number(key, in: range) else { return nil }
        guard x == x.rounded() else { throw APIError.invalid("'\(key)' must be an integer; got \(plain(x)).", param: key) }
        return Int(x)
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = present(key) else { return nil }
        guard case .bool(let b) = value else { throw APIError.invalid("'\(key)' must be a boolean, not \(value.typeName).", param: key) }
        return b
    }

    func string(_ key: String) throws -> String? {
        guard let value = present(key) else { return nil }
        guard case .string(let s) = value else { throw APIError.invalid("'\(key)' must be a string, not \(value.typeName).", param: key) }
        return s
    }

    /// The sampling fields; `contextLength` bounds `max_tokens`.
    func sampling(contextLength: Int) throws -> SamplingRequest {
        var request = SamplingRequest()
        let limit = Double(contextLength)
        request.maxTokens = try integer("max_completion_tokens", in: 1...limit) ?? integer("max_tokens", in: 1...limit)
        request.temperature = try number("temperature", in: 0...2).map(Float.init)
        request.topP = try number("top_p", in: 0.000001...1).map(Float.init)
        request.seed = try integer("seed", in: -9.007e15...9.007e15).map { UInt64(bitPattern: Int64($0)) }
        if let n = try integer("n", in: 1...1e9), n != 1 { throw APIError.invalid("Only n = 1 is supported.", param: "n") }
        request.stream = try bool("stream") ?? false
        request.ignoreEOS = try bool("ignore_eos") ?? false
        switch present("stop") {
        case nil: break
        case .string(let s)?: request.stop = [s]
        case .array(let items)?:
            guard items.count <= 4 else { throw APIError.invalid("'stop' takes at most 4 sequences.", param: "stop") }
            request.stop = try items.map {
                guard case .string(let s) = $0 else { throw APIError.invalid("'stop' must hold strings, not \($0.typeName).", param: "stop") }
                return s
            }
        case let other?: throw APIError.invalid("'stop' must be a string or an array of strings, not \(other.typeName).", param: "stop")
        }
        if request.stop.contains(where: \.isEmpty) { throw APIError.invalid("'stop' sequences must not be empty.", param: "stop") }
        if let options = present("stream_options") {
            guard case .object(let o) = options else { throw APIError.invalid("'stream_options' must be an object.", param: "stream_options") }
            if case .bool(let b)? = o["include_usage"] { request.includeUsage = b }
        }
        return request
    }

    /// `messages` of a chat request: system, user and assistant turns with text content (a string,
    /// or an array of `{"type": "text", "text": ...}` parts).
    func messages() throws -> [ChatMessage] {
        guard let value = present("messages") else { throw APIError.invalid("'messages' is required.", param: "messages") }
        guard case .array(let items) = value else { throw APIError.invalid("'messages' must be an array, not \(value.typeName).", param: "messages") }
        guard !items.isEmpty else { throw APIError.invalid("'messages' must not be empty.", param: "messages") }
        return try items.enumerated().map { index, item in
            let param = "messages[\(index)]"
            guard case .object(let message) = item else { throw APIError.invalid("\(param) must be an object, not \(item.typeName).", param: param) }
            guard case .string(let role)? = message["role"] else { throw APIError.invalid("\(param).role must be a string.", param: param + ".role") }
            guard ["system", "user", "assistant", "developer"].contains(role) else {
                throw APIError.invalid("\(param).role '\(role)' is not supported (system, developer, user, assistant).", param: param + ".role")
            }
            let content: String
            switch message["content"] {
            case .string(let s)?: content = s
            case .array(let parts)?:
                content = try parts.map { part -> String in
                    guard case .object(let p) = part, case .string("text")? = p["type"], case .string(let text)? = p["text"] else {
                        throw APIError.invalid("\(param).content parts must be {\"type\": \"text\", \"text\": ...}.", param: param + ".content")
                    }
                    return text
                }.joined()
            default: throw APIError.invalid("\(param).content must be a string or an array of text parts.", param: param + ".content")
            }
            return ChatMessage(role: role == "developer" ? "system" : role, content: content)
        }
    }

    /// `prompt` of a completion request: a string, or an array holding one string.
    func prompt() throws -> String {
        switch present("prompt") {
        case .string(let s)?: return s
        case .array(let items)? where items.count == 1: if case .string(let s) = items[0] { return s }
        case nil: throw APIError.invalid("'prompt' is required.", param: "prompt")
        default: break
        }
        throw APIError.invalid("'prompt' must be a string (or an array of one string).", param: "prompt")
    }
}

/// 4096 rather than 4096.0 in messages.
private func plain(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
}
