import AsyncHTTPClient
import Foundation
import Pivot
import PivotKernels
import XCTest

/// Logprobs in OpenAI's shapes, checked against a direct forward pass over the same tokens.
final class ServerLogprobTests: XCTestCase {
    /// Each position's log-softmax row from one forward pass over `tokens` (what scoring computes).
    private func referenceRows(_ model: LoadedModel, _ tokens: [Int]) -> [[Float]] {
        let execution = Execution(pool: ThreadPool(threads: 2))
        let state = ForwardState(config: model.config, maxTokens: tokens.count, allLogits: true, execution: execution)
        let cache = model.makeCache(capacity: 1024, maxBatch: tokens.count)
        let logits = model.transformer.forward(tokens, cache: cache, state: state, logits: .all)
        let vocabulary = model.config.vocabularySize
        return (0..<tokens.count).map { t in
            let row = logits.row(t), lse = logSumExp(row, count: vocabulary)
            return (0..<vocabulary).map { row[$0] - lse }
        }
    }

    func testEchoedPromptLogprobsEqualTheEnginesScoring() async throws {
        let server = try await RunningServer(slots: 1, context: 1024)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown(); await server.stop() } }
        let model = server.model
        let prompt = "The capital of France is Paris, and the capital of Germany is Berlin."
        let tokens = model.tokenizer.encode(prompt)
        let rows = referenceRows(model, tokens)

        let reply = try await client.post(server.base + "/v1/completions",
                                          ["prompt": prompt, "echo": true, "max_tokens": 0, "logprobs": 5, "temperature": 0])
        XCTAssertEqual(reply.status, 200)
        let choice = try XCTUnwrap((reply.json["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual(choice["text"] as? String, prompt)
        XCTAssertEqual((reply.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, 0)
        let logprobs = try XCTUnwrap(choice["logprobs"] as? [String: Any])
        let strings = try XCTUnwrap(logprobs["tokens"] as? [String])
        let values = try XCTUnwrap(logprobs["token_logprobs"] as? [Any])
        let tops = try XCTUnwrap(logprobs["top_logprobs"] as? [Any])
        let offsets = try XCTUnwrap(logprobs["text_offset"] as? [Int])
        XCTAssertEqual(strings.count, tokens.count)
        XCTAssertEqual(strings.joined(), prompt)
        XCTAssertTrue(values[0] is NSNull, "nothing predicts the first token")
        XCTAssertTrue(tops[0] is NSNull)
        XCTAssertEqual(offsets, strings.indices.map { strings[..<$0].joined().unicodeScalars.count })
        for i in 1..<tokens.count {
            let value = try XCTUnwrap(values[i] as? Double)
            XCTAssertEqual(value, Double(rows[i - 1][tokens[i]]), accuracy: 1e-4, "token \(i)")
            let top = try XCTUnwrap(tops[i] as? [String: Double])
            XCTAssertLessThanOrEqual(top.count, 5)
            XCTAssertEqual(top.values.max() ?? 0, Double(rows[i - 1].max()!), accuracy: 1e-4, "the best alternative is the row's maximum")
        }

        // One generated token more: lm-evaluation-harness reads is_greedy from the last prompt token's top_logprobs.
        let plusOne = try await client.post(server.base + "/v1/completions",
                                            ["prompt": prompt, "echo": true, "max_tokens": 1, "logprobs": 1, "temperature": 0])
        let more = try XCTUnwrap(((plusOne.json["choices"] as? [[String: Any]])?.first?["logprobs"]) as? [String: Any])
        let moreValues = try XCTUnwrap(more["token_logprobs"] as? [Any])
        XCTAssertEqual(moreValues.count, tokens.count + 1)
        let last = try XCTUnwrap(moreValues.last as? Double)
        let lastTop = try XCTUnwrap((more["top_logprobs"] as? [Any])?.last as? [String: Double])
        XCTAssertEqual(last, lastTop.values.max()!, accuracy: 1e-6, "temperature 0 takes the top-1 token")
        XCTAssertEqual(last, Double(rows[tokens.count - 1].max()!), accuracy: 1e-4)

        // A reply that ends with the end-of-turn token still lists it: one entry per generated token.
        let turn = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris."
        let ended = try await client.post(server.base + "/v1/completions",
                                          ["prompt": turn, "echo": true, "max_tokens": 1, "logprobs": 1, "temperature": 0])
        let endedCount = try XCTUnwrap((((ended.json["choices"] as? [[String: Any]])?.first?["logprobs"]) as? [String: Any])?["token_logprobs"] as? [Any]).count
        XCTAssertEqual(endedCount, model.tokenizer.encode(turn).count + 1)
        XCTAssertEqual((ended.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, 1)
        XCTAssertEqual((ended.json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "stop", "the model ends its turn here")

        // Streamed, the prompt's chunk comes first and the chunks' lists add up to the whole reply's.
        let events = try await client.streamEvents(server.base + "/v1/completions",
                                                   ["prompt": prompt, "echo": true, "max_tokens": 3, "logprobs": 2, "temperature": 0, "stream": true])
        let chunks = events.dropLast().compactMap { (parse($0)["choices"] as? [[String: Any]])?.first }
        XCTAssertEqual(chunks.first?["text"] as? String, prompt)
        let streamedTokens = chunks.compactMap { ($0["logprobs"] as? [String: Any])?["tokens"] as? [String] }.joined()
        XCTAssertEqual(streamedTokens.count, tokens.count + 3)
        let streamedOffsets = chunks.compactMap { ($0["logprobs"] as? [String: Any])?["text_offset"] as? [Int] }.joined()
        XCTAssertEqual(Array(streamedOffsets.prefix(tokens.count)), offsets, "offsets continue across chunks")
    }

    func testChatLogprobsSortedWithTheGreedyTokenFirst() async throws {
        let server = try await RunningServer(slots: 1, context: 1024)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown(); await server.stop() } }
        let model = server.model
        let messages = [["role": "user", "content": "What is the capital of France?"]]
        let request: [String: Any] = ["messages": messages, "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 4]
        let reply = try await client.post(server.base + "/v1/chat/completions", request)
        XCTAssertEqual(reply.status, 200)
        let choice = try XCTUnwrap((reply.json["choices"] as? [[String: Any]])?.first)
        let content = try XCTUnwrap((choice["message"] as? [String: Any])?["content"] as? String)
        let entries = try XCTUnwrap((choice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        XCTAssertEqual(entries.count, 8)
        XCTAssertEqual(entries.compactMap { $0["token"] as? String }.joined(), content)

        let prompt = model.tokenizer.encode(model.chatTemplate.render(messages.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }))
        let generated = referenceGeneration(model, prompt: prompt, maxTokens: 8).tokens
        let rows = referenceRows(model, prompt + generated)
        for (k, entry) in entries.enumerated() {
            let logprob = try XCTUnwrap(entry["logprob"] as? Double)
            let bytes = try XCTUnwrap(entry["bytes"] as? [Int])
            XCTAssertEqual(bytes.map(UInt8.init), model.tokenizer.bytes(of: generated[k]))
            XCTAssertEqual(logprob, Double(rows[prompt.count - 1 + k][generated[k]]), accuracy: 2e-3, "token \(k)")
            let top = try XCTUnwrap(entry["top_logprobs"] as? [[String: Any]])
            XCTAssertEqual(top.count, 4)
            let topValues = top.compactMap { $0["logprob"] as? Double }
            XCTAssertEqual(topValues, topValues.sorted(by: >), "best first")
            XCTAssertEqual(top[0]["token"] as? String, entry["token"] as? String, "greedy: the chosen token is the top-1")
            XCTAssertEqual(topValues[0], logprob)
        }

        var streamed = request
        streamed["stream"] = true
        let events = try await client.streamEvents(server.base + "/v1/chat/completions", streamed)
        let streamedEntries = events.dropLast().flatMap { event -> [[String: Any]] in
            let choice = (parse(event)["choices"] as? [[String: Any]])?.first
            return (choice?["logprobs"] as? [String: Any])?["content"] as? [[String: Any]] ?? []
        }
        XCTAssertEqual(streamedEntries.compactMap { $0["token"] as? String }, entries.compactMap { $0["token"] as? String })
        for (a, b) in zip(streamedEntries, entries) {
            XCTAssertEqual(a["logprob"] as? Double ?? 0, b["logprob"] as? Double ?? 1, accuracy: 2e-3)
        }

        // A reply that ends its turn: the entries spell the content, without the end-of-turn token.
        let ended = try await client.post(server.base + "/v1/chat/completions",
                                          ["messages": [["role": "system", "content": "Answer in one word."]] + messages,
                                           "max_tokens": 300, "temperature": 0, "logprobs": true])
        let endedChoice = try XCTUnwrap((ended.json["choices"] as? [[String: Any]])?.first)
        let endedByTurn = endedChoice["finish_reason"] as? String == "stop"
        XCTAssertTrue(endedByTurn, "the reference answer ends its turn within 300 tokens")
        let endedEntries = try XCTUnwrap((endedChoice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        XCTAssertEqual(endedEntries.compactMap { $0["token"] as? String }.joined(), (endedChoice["message"] as? [String: Any])?["content"] as? String)
        XCTAssertEqual(endedEntries.count + (endedByTurn ? 1 : 0), (ended.json["usage"] as? [String: Any])?["completion_tokens"] as? Int)

        let plain = try await client.post(server.base + "/v1/chat/completions", ["messages": messages, "max_tokens": 2])
        XCTAssertTrue((plain.json["choices"] as? [[String: Any]])?.first?["logprobs"] is NSNull, "null unless asked for")
    }

    func testLogprobFieldsOutOfRangeGet400() async throws {
        let server = try await RunningServer(slots: 1, context: 256)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown(); await server.stop() } }
        let chat = server.base + "/v1/chat/completions", completions = server.base + "/v1/completions"
        let hi = #""messages": [{"role": "user", "content": "hi"}]"#
        let cases: [(url: String, body: String, param: String, message: String)] = [
            (chat, "{\(hi), \"logprobs\": true, \"top_logprobs\": 21}", "top_logprobs", "'top_logprobs' must be between 0 and 20; got 21."),
            (chat, "{\(hi), \"logprobs\": true, \"top_logprobs\": 1.5}", "top_logprobs", "'top_logprobs' must be an integer; got 1.5."),
            (chat, "{\(hi), \"top_logprobs\": 2}", "top_logprobs", "'top_logprobs' needs 'logprobs' set to true."),
            (chat, "{\(hi), \"logprobs\": 3}", "logprobs", "'logprobs' must be a boolean, not a number."),
            (completions, #"{"prompt": "a", "logprobs": 21}"#, "logprobs", "'logprobs' must be between 0 and 20; got 21."),
            (completions, #"{"prompt": "a", "logprobs": true}"#, "logprobs", "'logprobs' must be a number, not a boolean."),
            (completions, #"{"prompt": "a", "echo": 1}"#, "echo", "'echo' must be a boolean, not a number."),
            (completions, #"{"prompt": "a", "max_tokens": 0}"#, "max_tokens", "'max_tokens' must be between 1 and 256; got 0."),
        ]
        for c in cases {
            let reply = try await client.send(c.url, body: c.body)
            XCTAssertEqual(reply.status, 400, c.body)
            let error = reply.json["error"] as? [String: Any]
            XCTAssertEqual(error?["param"] as? String, c.param, c.body)
            XCTAssertEqual(error?["message"] as? String, c.message, c.body)
        }
    }
}
