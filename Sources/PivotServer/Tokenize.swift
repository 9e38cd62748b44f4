import Foundation
import Hummingbird

/// POST /tokenize as llama-server has it — `{"content": "...", "add_special": false}` → `{"tokens": [...]}` —
/// and as vLLM names the fields (`prompt`, `add_special_tokens`), which lm-evaluation-harness's
/// `tokenizer_backend=remote` sends. `add_special` puts the model's start token first where its
/// tokenizer uses one; special-token text in the content becomes their ids.
struct TokenizeRequest: Decodable {
    var content: String
    var addSpecial: Bool

    enum CodingKeys: String, CodingKey { case content, prompt, addSpecial = "add_special", addSpecialTokens = "add_special_tokens" }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        guard let content = try container.decodeIfPresent(String.self, forKey: .content) ?? container.decodeIfPresent(String.self, forKey: .prompt) else {
            throw DecodingError.keyNotFound(CodingKeys.content, .init(codingPath: container.codingPath, debugDescription: ""))
        }
        self.content = content
        addSpecial = try container.decodeIfPresent(Bool.self, forKey: .addSpecial)
            ?? container.decodeIfPresent(Bool.self, forKey: .addSpecialTokens) ?? false
    }
}

struct TokenizeReply: Encodable {
    var tokens: [Int]
}

/// POST /detokenize: `{"tokens": [...]}` → `{"content": "..."}` (and vLLM's `prompt`, the same text);
/// special tokens are written as their text.
struct DetokenizeRequest: Decodable {
    var tokens: [Int]
}

struct DetokenizeReply: Encodable {
    var content: String
    var prompt: String
}

/// GET /tokenizer_info, vLLM's: the special tokens' text, for clients that tokenize through the server.
struct TokenizerInfo: Encodable {
    var bosToken: String?
    var eosToken: String?
    var padToken: String?
    var vocabularySize: Int

    enum CodingKeys: String, CodingKey { case bosToken = "bos_token", eosToken = "eos_token", padToken = "pad_token", vocabularySize = "vocab_size" }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(bosToken, forKey: .bosToken)
        try container.encode(eosToken, forKey: .eosToken)
        try container.encode(padToken, forKey: .padToken)
        try container.encode(vocabularySize, forKey: .vocabularySize)
    }
}

extension PivotServer {
    func tokenize(_ request: Request) async throws -> Response {
        let body = try await decodeRequest(TokenizeRequest.self, from: Data(buffer: request.body.collect(upTo: options.maxBodyBytes)))
        return jsonResponse(TokenizeReply(tokens: engine.model.tokenizer.encode(body.content, addBOS: body.addSpecial)))
    }

    func detokenize(_ request: Request) async throws -> Response {
        let body = try await decodeRequest(DetokenizeRequest.self, from: Data(buffer: request.body.collect(upTo: options.maxBodyBytes)))
        let tokenizer = engine.model.tokenizer
        if let at = body.tokens.firstIndex(where: { !(0..<tokenizer.vocabularySize).contains($0) }) {
            throw APIError.invalid("tokens[\(at)] is \(body.tokens[at]), outside the vocabulary (0 to \(tokenizer.vocabularySize - 1)).",
                                   param: "tokens[\(at)]")
        }
        let text = tokenizer.decode(body.tokens)
        return jsonResponse(DetokenizeReply(content: text, prompt: text))
    }

    func tokenizerInfo() -> Response {
        let tokenizer = engine.model.tokenizer
        return jsonResponse(TokenizerInfo(bosToken: tokenizer.bos.map { tokenizer.tokens[$0] }, eosToken: tokenizer.eos.map { tokenizer.tokens[$0] },
                                          padToken: nil, vocabularySize: tokenizer.vocabularySize))
    }
}
