import Foundation

/// The sampling fields, validated: what a generation job is built from.
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

/// A request rule broken inside `init(from:)`; it travels as a `DecodingError` so its coding path
/// names the field, and marks the message as one written for the client.
struct RuleBroken: Error {
    var message: String
}

func ruleBroken(_ message: String, at path: [CodingKey]) -> DecodingError {
    .dataCorrupted(.init(codingPath: path, debugDescription: message, underlyingError: RuleBroken(message: message)))
}

/// A coding path as the client wrote it: `max_tokens`, `messages[0].role`.
func fieldPath(_ path: [CodingKey]) -> String {
    path.enumerated().map { index, key in
        if let i = key.intValue { return "[\(i)]" }
        return index == 0 ? key.stringValue : "." + key.stringValue
    }.joined()
}

/// A field as messages name it: top-level fields quoted ('max_tokens'), nested paths bare.
func fieldName(_ path: [CodingKey]) -> String {
    path.count == 1 ? "'\(fieldPath(path))'" : fieldPath(path)
}

/// Decodes a request body; every failure is a 400 `APIError` naming the field.
func decodeRequest<T: Decodable>(_ type: T.Type, from body: Data) throws -> T {
    guard !body.isEmpty else { throw APIError.invalid("The request body is empty; expected a JSON object.") }
    // Parsed once untyped first: malformed JSON gets one message, and a type error can say what
    // the field holds.
    let root: JSONValue
    do { root = try JSONDecoder().decode(JSONValue.self, from: body) } catch {
        throw APIError.invalid("The request body is not valid JSON.")
    }
    guard case .object = root else { throw APIError.invalid("The request body must be a JSON object, not \(root.typeName).") }
    do {
        return try JSONDecoder().decode(type, from: body)
    } catch let error as DecodingError {
        throw APIError(decoding: error, in: root)
    }
}

extension APIError {
    /// A decoding error as OpenAI reports a bad field: its path in `param` and in the message.
    init(decoding error: DecodingError, in root: JSONValue) {
        let path: [CodingKey], message: String
        switch error {
        case .typeMismatch(let expected, let context):
            path = context.codingPath
            let found = root.value(at: path)?.typeName ?? "something else"
            message = "\(fieldName(path)) must be \(Self.describe(expected)), not \(found)."
        case .keyNotFound(let key, let context):
            path = context.codingPath + [key]
            message = "\(fieldName(path)) is required."
        case .valueNotFound(_, let context):
            path = context.codingPath
            message = "\(fieldName(path)) is required."
        case .dataCorrupted(let context):
            path = context.codingPath
            message = (context.underlyingError as? RuleBroken)?.message ?? "\(fieldName(path)) has an invalid value."
        @unknown default:
            self = .invalid("The request body could not be read.")
            return
        }
        self = path.isEmpty ? .invalid("The request body could not be read.") : .invalid(message, param: fieldPath(path))
    }

    /// A Swift type as a JSON type, for messages.
    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Bool.Type: "a boolean"
        case is String.Type: "a string"
        case is any Numeric.Type: "a number"
        case is [Any].Type: "an array"
        case is [String: Any].Type: "an object"
        default: "of another type"
        }
    }
}

extension SamplingFields {
    /// Applies OpenAI's ranges; `contextLength` bounds `max_tokens`, which may be 0 only where the
    /// request asks for nothing but its prompt's logprobs (`echo`).
    func validated(contextLength: Int, allowNoTokens: Bool = false) throws -> SamplingRequest {
        var request = SamplingRequest()
        let limit = Double(contextLength)
        if allowNoTokens && (maxTokens == 0 || maxCompletionTokens == 0) {
            request.maxTokens = 0
        } else {
            request.maxTokens = try integer("max_completion_tokens", maxCompletionTokens, in: 1...limit)
                ?? integer("max_tokens", maxTokens, in: 1...limit)
        }
        request.temperature = try number("temperature", temperature, in: 0...2).map(Float.init)
        request.topP = try number("top_p", topP, in: 0.000001...1).map(Float.init)
        request.seed = try integer("seed", seed, in: -9.007e15...9.007e15).map { UInt64(bitPattern: Int64($0)) }
        if let n = try integer("n", n, in: 1...1e9), n != 1 { throw APIError.invalid("Only n = 1 is supported.", param: "n") }
        request.stream = stream ?? false
        request.ignoreEOS = ignoreEOS ?? false
        request.stop = stop?.sequences ?? []
        request.includeUsage = streamOptions?.includeUsage ?? false
        return request
    }
}

/// What the logprob fields ask for: nil, or the number of alternatives per token.
extension ChatCompletionRequest {
    func validatedLogprobs() throws -> Int? {
        let top = try integer("top_logprobs", topLogprobs, in: 0...20)
        if top != nil && logprobs != true { throw APIError.invalid("'top_logprobs' needs 'logprobs' set to true.", param: "top_logprobs") }
        return logprobs == true ? top ?? 0 : nil
    }
}

extension CompletionRequest {
    func validatedLogprobs() throws -> Int? { try integer("logprobs", logprobs, in: 0...20) }
}

/// A number field checked against its range, quoted as the client sent it.
func number(_ key: String, _ value: Double?, in range: ClosedRange<Double>) throws -> Double? {
    guard let x = value else { return nil }
    guard range.contains(x) else {
        throw APIError.invalid("'\(key)' must be between \(plain(range.lowerBound)) and \(plain(range.upperBound)); got \(plain(x)).", param: key)
    }
    return x
}

func integer(_ key: String, _ value: Double?, in range: ClosedRange<Double>) throws -> Int? {
    guard let x = try number(key, value, in: range) else { return nil }
    guard x == x.rounded() else { throw APIError.invalid("'\(key)' must be an integer; got \(plain(x)).", param: key) }
    return Int(x)
}

/// 4096 rather than 4096.0 in messages.
private func plain(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
}
