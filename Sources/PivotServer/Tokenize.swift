import Foundation
import Hummingbird

/// llama-server's POST /tokenize: `{"content": "...", "add_special": false}` → `{"tokens": [...]}`.
/// `add_special` puts the model's start token first where its tokenizer uses one.
struct TokenizeRequest: Decodable {
    var content: String
    var addSpecial: Bool?
    enum CodingKeys: String, CodingKey { case content, addSpecial = "add_special" }
}

struct TokenizeReply: Encodable {
    var tokens: [Int]
}

/// llama-server's POST /detokenize: `{"tokens": [...]}` → `{"content": "..."}`; special tokens are
/// written as their text.
struct DetokenizeRequest: Decodable {
    var tokens: [Int]
}

struct DetokenizeReply: Encodable {
    var content: String
}

extension PivotServer {
    func tokenize(_ request: Request) async throws -> Response {
        let body = try await decodeRequest(TokenizeRequest.self, from: Data(buffer: request.body.collect(upTo: options.maxBodyBytes)))
        return jsonResponse(TokenizeReply(tokens: engine.model.tokenizer.encode(body.content, addBOS: body.addSpecial ?? false)))
    }

    func detokenize(_ request: Request) async throws -> Response {
        let body = try await decodeRequest(DetokenizeRequest.self, from: Data(buffer: request.body.collect(upTo: options.maxBodyBytes)))
        let tokenizer = engine.model.tokenizer
        if let at = body.tokens.firstIndex(where: { !(0..<tokenizer.vocabularySize).contains($0) }) {
            throw APIError.invalid("tokens[\(at)] is \(body.tokens[at]), outside the vocabulary (0 to \(tokenizer.vocabularySize - 1)).",
                                   param: "tokens[\(at)]")
        }
        return jsonResponse(DetokenizeReply(content: tokenizer.decode(body.tokens)))
    }
}
