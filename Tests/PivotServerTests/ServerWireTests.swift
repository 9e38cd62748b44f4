import AsyncHTTPClient
import Foundation
import Pivot
import PivotKernels
import PivotServer
import XCTest

/// The wire format: error messages that name the field, the exact keys of each reply, and a
/// clear error when the port is taken.
final class ServerWireTests: XCTestCase {
    func testWrongFieldsGet400NamingTheField() async throws {
        let server = try await RunningServer(slots: 1, context: 256)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let chat = server.base + "/v1/chat/completions", completions = server.base + "/v1/completions"
        let hi = #""messages": [{"role": "user", "content": "hi"}]"#
        let cases: [(url: String, body: String, param: String?, message: String)] = [
            (chat, "{\(hi), \"temperature\": \"hot\"}", "temperature", "'temperature' must be a number, not a string."),
            (chat, "{\(hi), \"max_tokens\": true}", "max_tokens", "'max_tokens' must be a number, not a boolean."),
            (chat, "{\(hi), \"max_tokens\": -1}", "max_tokens", "'max_tokens' must be between 1 and 256; got -1."),
            (chat, "{\(hi), \"seed\": 1.5}", "seed", "'seed' must be an integer; got 1.5."),
            (chat, "{\(hi), \"stream\": 1}", "stream", "'stream' must be a boolean, not a number."),
            (chat, "{\(hi), \"ignore_eos\": \"no\"}", "ignore_eos", "'ignore_eos' must be a boolean, not a string."),
            (chat, "{\(hi), \"stream_options\": {\"include_usage\": \"yes\"}}", "stream_options.include_usage",
             "stream_options.include_usage must be a boolean, not a string."),
            (chat, "{\(hi), \"stream_options\": 5}", "stream_options", "'stream_options' must be an object."),
            (chat, "{\(hi), \"stop\": [\"a\", 2]}", "stop", "'stop' must hold strings, not a number."),
            (chat, "{\(hi), \"stop\": {}}", "stop", "'stop' must be a string or an array of strings, not an object."),
            (chat, "{\(hi), \"n\": 2}", "n", "Only n = 1 is supported."),
            (chat, #"{"messages": "hello"}"#, "messages", "'messages' must be an array, not a string."),
            (chat, #"{"messages": null}"#, "messages", "'messages' is required."),
            (chat, #"{"messages": [{"role": "user", "content": "hi"}, 5]}"#, "messages[1]", "messages[1] must be an object, not a number."),
            (chat, #"{"messages": [{"role": "robot", "content": "hi"}]}"#, "messages[0].role",
             "messages[0].role 'robot' is not supported (system, developer, user, assistant)."),
            (chat, #"{"messages": [{"content": "hi"}]}"#, "messages[0].role", "messages[0].role must be a string."),
            (chat, #"{"messages": [{"role": "user", "content": 5}]}"#, "messages[0].content",
             "messages[0].content must be a string or an array of text parts."),
            (chat, "{bad json", nil, "The request body is not valid JSON."),
            (chat, "[1]", nil, "The request body must be a JSON object, not an array."),
            (completions, #"{"prompt": 42}"#, "prompt", "'prompt' must be a string, token ids, or an array of one of those."),
            (completions, #"{"max_tokens": 4}"#, "prompt", "'prompt' is required."),
        ]
        do {
            for (index, c) in cases.enumerated() {
                let reply = try await client.send(c.url, body: c.body)
                XCTAssertEqual(reply.status, 400, "case \(index)")
                let error = try XCTUnwrap(reply.json["error"] as? [String: Any], "case \(index): \(reply.text)")
                XCTAssertEqual(error["message"] as? String, c.message, "case \(index)")
                XCTAssertEqual(error["type"] as? String, "invalid_request_error", "case \(index)")
                if let param = c.param { XCTAssertEqual(error["param"] as? String, param, "case \(index)") }
                else { XCTAssertTrue(error["param"] is NSNull, "case \(index)") }
            }
        } catch {
            try? await client.shutdown(); await server.stop(); throw error
        }
        try await client.shutdown()
        await server.stop()
    }

    func testRepliesHaveExactlyTheExpectedKeys() async throws {
        let server = try await RunningServer(slots: 1, context: 256)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        func keys(_ value: Any?) -> Set<String> { Set((value as? [String: Any])?.keys.map { $0 } ?? []) }
        func firstChoice(_ object: [String: Any]) -> Any? { (object["choices"] as? [Any])?.first }
        let envelope: Set = ["id", "object", "created", "model", "choices"]
        let usageKeys: Set = ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"]
        let timingKeys: Set = ["prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second", "cache_n", "slot"]
        do {
            let messages = [["role": "user", "content": "Hi"]]
            let chat = try await client.post(server.base + "/v1/chat/completions", ["messages": messages, "max_tokens": 3, "temperature": 0]).json
            XCTAssertEqual(keys(chat), envelope.union(["usage", "timings"]))
            XCTAssertEqual(keys(firstChoice(chat)), ["index", "message", "finish_reason", "logprobs"])
            XCTAssertTrue((firstChoice(chat) as? [String: Any])?["logprobs"] is NSNull)
            XCTAssertEqual(keys((firstChoice(chat) as? [String: Any])?["message"]), ["role", "content"])
            XCTAssertEqual(keys(chat["usage"]), usageKeys)
            XCTAssertEqual(keys((chat["usage"] as? [String: Any])?["prompt_tokens_details"]), ["cached_tokens"])
            XCTAssertEqual(keys(chat["timings"]), timingKeys)

            let events = try await client.streamEvents(server.base + "/v1/chat/completions",
                                                       ["messages": messages, "max_tokens": 3, "temperature": 0, "stream": true,
                                                        "stream_options": ["include_usage": true]])
            let chunks = events.dropLast().map(parse)
            // The role chunk, the text chunks, the finishing chunk, the usage chunk.
            _ = try XCTUnwrap(chunks.count >= 4 ? chunks : nil, "stream too short: \(events)")
            XCTAssertEqual(keys(chunks[0]), envelope)
            XCTAssertEqual(keys(firstChoice(chunks[0])), ["index", "delta", "finish_reason", "logprobs"])
            XCTAssertTrue((firstChoice(chunks[0]) as? [String: Any])?["finish_reason"] is NSNull)
            XCTAssertEqual(keys((firstChoice(chunks[0]) as? [String: Any])?["delta"]), ["role", "content"])
            for chunk in chunks[1..<chunks.count - 2] {
                XCTAssertEqual(keys(chunk), envelope)
                XCTAssertEqual(keys((firstChoice(chunk) as? [String: Any])?["delta"]), ["content"])
            }
            let finish = chunks[chunks.count - 2], usage = chunks[chunks.count - 1]
            XCTAssertEqual(keys(finish), envelope.union(["timings"]))
            XCTAssertEqual(keys((firstChoice(finish) as? [String: Any])?["delta"]), [])
            XCTAssertEqual(keys(usage), envelope.union(["usage"]))
            XCTAssertEqual((usage["choices"] as? [Any])?.count, 0)

            let text = try await client.post(server.base + "/v1/completions", ["prompt": "Hi", "max_tokens": 2, "temperature": 0]).json
            XCTAssertEqual(text["object"] as? String, "text_completion")
            XCTAssertEqual(keys(text), envelope.union(["usage", "timings"]))
            XCTAssertEqual(keys(firstChoice(text)), ["index", "text", "finish_reason", "logprobs"])

            let health = try await client.send(server.base + "/health", method: .GET).json
            XCTAssertEqual(keys(health), ["status", "slots_idle", "slots_processing", "requests_waiting"])
            let models = try await client.send(server.base + "/v1/models", method: .GET).json
            XCTAssertEqual(keys(models), ["object", "data"])
            let card = (models["data"] as? [Any])?.first
            XCTAssertEqual(keys(card), ["id", "object", "created", "owned_by", "meta"])
            XCTAssertEqual(keys((card as? [String: Any])?["meta"]), ["n_ctx", "n_vocab"])
            let missing = try await client.send(server.base + "/v1/nothing", body: "{}").json
            XCTAssertEqual(keys(missing), ["error"])
            XCTAssertEqual(keys(missing["error"]), ["message", "type", "param", "code"])
            XCTAssertTrue((missing["error"] as? [String: Any])?["param"] is NSNull)
        } catch {
            try? await client.shutdown(); await server.stop(); throw error
        }
        try await client.shutdown()
        await server.stop()
    }

    func testPortInUseGivesOneClearError() async throws {
        let first = try await RunningServer(slots: 1, context: 64)
        let model = try TestModel.load()
        let second = PivotServer(model: model, modelName: "second", generators: [Generator(model: model, execution: Execution(pool: ThreadPool(threads: 1)), contextLength: 64)],
                                 options: ServerOptions(host: "127.0.0.1", port: first.port, quiet: true))
        let run = Task { try await second.run { _ in XCTFail("the second server must not listen") } }
        let watchdog = Task { try await Task.sleep(for: .seconds(20)); run.cancel() }
        do {
            try await run.value
            XCTFail("binding a port in use should throw")
        } catch let error as ServerError {
            XCTAssertEqual(error, .portInUse(host: "127.0.0.1", port: first.port))
            XCTAssertEqual("\(error)", "pivot serve: port \(first.port) is already in use on 127.0.0.1 (choose another with --port)")
        }
        watchdog.cancel()
        await first.stop()
    }

    /// A prompt given as token ids (bare or in a one-element list) is used as given: the reply equals
    /// the text prompt's, and echo returns the ids' text; an id outside the vocabulary is a 400.
    func testTokenIDPromptsEqualTheirText() async throws {
        let server = try await RunningServer(slots: 2, context: 256)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let text = "The capital of France is"
        let ids = server.model.tokenizer.encode(text)
        let url = server.base + "/v1/completions"
        func reply(_ prompt: Any, echo: Bool = false) async throws -> String? {
            let r = try await client.post(url, ["prompt": prompt, "max_tokens": 8, "temperature": 0, "echo": echo])
            XCTAssertEqual(r.status, 200)
            return (r.json["choices"] as? [[String: Any]])?.first?["text"] as? String
        }
        let expected = try await reply(text)
        XCTAssertNotNil(expected)
        let fromIDs = try await reply(ids)
        let fromListOfIDs = try await reply([ids])
        XCTAssertEqual(fromIDs, expected)
        XCTAssertEqual(fromListOfIDs, expected)
        let echoed = try await reply(ids, echo: true)
        XCTAssertEqual(echoed, server.model.tokenizer.decode(ids) + (expected ?? ""))
        let bad = try await client.post(url, ["prompt": [1, 10_000_000], "max_tokens": 2])
        XCTAssertEqual(bad.status, 400)
        XCTAssertEqual((bad.json["error"] as? [String: Any])?["param"] as? String, "prompt")
        await server.stop()
    }
}
