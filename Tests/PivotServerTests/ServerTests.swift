import AsyncHTTPClient
import Foundation
import Pivot
import XCTest

/// `pivot serve` driven over real HTTP on loopback with AsyncHTTPClient.
final class ServerTests: XCTestCase {
    let question = [["role": "user", "content": "What is the capital of France?"]]

    func testChatStreamedAndWholeMatchTheEngine() async throws {
        try await withServer(slots: 2) { server, client in

            let whole = try await client.post(server.base + "/v1/chat/completions", ["messages": question, "max_tokens": 16, "temperature": 0])
            XCTAssertEqual(whole.status, 200)
            let json = whole.json
            XCTAssertEqual(json["object"] as? String, "chat.completion")
            XCTAssertEqual(json["model"] as? String, "test-model")
            let choice = try XCTUnwrap((json["choices"] as? [[String: Any]])?.first)
            let content = try XCTUnwrap((choice["message"] as? [String: Any])?["content"] as? String)
            XCTAssertEqual(choice["finish_reason"] as? String, "length")

            // Exactly what the engine itself generates for the rendered template.
            let model = server.model
            let prompt = model.tokenizer.encode(model.chatTemplate.render(question.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }))
            let reference = referenceGeneration(model, prompt: prompt, maxTokens: 16)
            XCTAssertEqual(content, reference.text)
            let usage = try XCTUnwrap(json["usage"] as? [String: Any])
            XCTAssertEqual(usage["prompt_tokens"] as? Int, prompt.count)
            XCTAssertEqual(usage["completion_tokens"] as? Int, 16)
            XCTAssertEqual(usage["total_tokens"] as? Int, prompt.count + 16)

            let events = try await client.streamEvents(server.base + "/v1/chat/completions",
                                                       ["messages": question, "max_tokens": 16, "temperature": 0, "stream": true,
                                                        "stream_options": ["include_usage": true]])
            XCTAssertEqual(events.last, "[DONE]")
            let chunks = events.dropLast().map(parse)
            XCTAssertTrue(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
            let first = try XCTUnwrap((chunks.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])
            XCTAssertEqual(first["role"] as? String, "assistant")
            let streamed = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String }.joined()
            XCTAssertEqual(streamed, reference.text)
            let finishes = chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
            XCTAssertEqual(finishes, ["length"])
            let usageChunk = try XCTUnwrap(chunks.last)
            XCTAssertEqual((usageChunk["choices"] as? [Any])?.count, 0)
            XCTAssertEqual((usageChunk["usage"] as? [String: Any])?["completion_tokens"] as? Int, 16)
        }
    }

    func testCompletionStopSequenceWholeAndStreamed() async throws {
        try await withServer(slots: 1) { server, client in
            let model = server.model
            let prompt = "The capital of France is"
            let free = referenceGeneration(model, prompt: model.tokenizer.encode(prompt), maxTokens: 12).text
            // Stop at the first full stop the model writes.
            let stopAt = try XCTUnwrap(free.range(of: "."), "reference continuation has no full stop: \(free)")
            let expected = String(free[..<stopAt.lowerBound])

            let whole = try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": ["."]])
            XCTAssertEqual(whole.status, 200)
            let choice = try XCTUnwrap((whole.json["choices"] as? [[String: Any]])?.first)
            XCTAssertEqual(choice["text"] as? String, expected)
            XCTAssertEqual(choice["finish_reason"] as? String, "stop")

            let events = try await client.streamEvents(server.base + "/v1/completions",
                                                       ["prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": "."  , "stream": true])
            XCTAssertEqual(events.last, "[DONE]")
            let chunks = events.dropLast().map(parse)
            let text = chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["text"] as? String }.joined()
            XCTAssertEqual(text, expected)
            XCTAssertEqual(chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }, ["stop"])

            // A chat turn's greedy answer ends with the end-of-turn token; ignore_eos runs on past it.
            let turn = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
            let ending = referenceGeneration(model, prompt: model.tokenizer.encode(turn), maxTokens: 200).tokens.count
            XCTAssertLessThan(ending, 200, "the reference continuation should end by itself")
            let untilEnd = try await client.post(server.base + "/v1/completions", ["prompt": turn, "max_tokens": 200, "temperature": 0])
            XCTAssertEqual((untilEnd.json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "stop")
            XCTAssertEqual((untilEnd.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, ending)
            let onward = try await client.post(server.base + "/v1/completions", ["prompt": turn, "max_tokens": ending + 10, "temperature": 0, "ignore_eos": true])
            XCTAssertEqual((onward.json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "length")
            XCTAssertEqual((onward.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, ending + 10)
        }
    }

    func testLongPromptPrefilledInPiecesEqualsOneBatch() async throws {
        try await withServer(slots: 2) { server, client in
            let model = server.model
            let text = try String(contentsOfFile: TestModel.packageRoot.appendingPathComponent("README.md").path, encoding: .utf8)
            let prompt = String(text.prefix(2400))
            let tokens = model.tokenizer.encode(prompt)
            XCTAssertGreaterThan(tokens.count, 2 * 256, "the prompt must span several prefill pieces")
            let reference = referenceGeneration(model, prompt: tokens, maxTokens: 12).text
            let reply = try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 12, "temperature": 0])
            XCTAssertEqual((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String, reference)
            XCTAssertEqual((reply.json["timings"] as? [String: Any])?["prompt_n"] as? Int, tokens.count)
        }
    }

    func testEightConcurrentClientsAndPrefixReuse() async throws {
        try await withServer(slots: 4) { server, client in
            let model = server.model
            let prompts = (0..<8).map { "Item \($0): a short story about the number \($0)." }
            let expected = prompts.map { referenceGeneration(model, prompt: model.tokenizer.encode($0), maxTokens: 10).text }
            let replies = try await withThrowingTaskGroup(of: (Int, Reply).self) { group in
                for (i, prompt) in prompts.enumerated() {
                    group.addTask { (i, try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 10, "temperature": 0])) }
                }
                var replies = [Reply?](repeating: nil, count: 8)
                for try await (i, reply) in group { replies[i] = reply }
                return replies.map { $0! }
            }
            for (i, reply) in replies.enumerated() {
                XCTAssertEqual(reply.status, 200)
                XCTAssertEqual((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String, expected[i], "client \(i)")
            }
            let slotsUsed = Set(replies.compactMap { ($0.json["timings"] as? [String: Any])?["slot"] as? Int })
            XCTAssertEqual(slotsUsed.count, 4, "8 concurrent requests spread over the 4 slots")

            // Second turn of a chat: only the tokens after what the slot already holds are prefilled.
            var messages: [[String: String]] = [["role": "user", "content": "Name a fruit."]]
            let first = try await client.post(server.base + "/v1/chat/completions", ["messages": messages, "max_tokens": 8, "temperature": 0])
            let firstUsage = try XCTUnwrap(first.json["usage"] as? [String: Any])
            let reply = try XCTUnwrap(((first.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String)
            messages += [["role": "assistant", "content": reply], ["role": "user", "content": "And a vegetable?"]]
            let second = try await client.post(server.base + "/v1/chat/completions", ["messages": messages, "max_tokens": 8, "temperature": 0])
            let usage = try XCTUnwrap(second.json["usage"] as? [String: Any])
            let timings = try XCTUnwrap(second.json["timings"] as? [String: Any])
            let promptTokens = try XCTUnwrap(usage["prompt_tokens"] as? Int)
            let cached = try XCTUnwrap((usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int)
            let firstPrompt = try XCTUnwrap(firstUsage["prompt_tokens"] as? Int)
            let firstCompletion = try XCTUnwrap(firstUsage["completion_tokens"] as? Int)
            // The slot holds turn 1's prompt and all but the last generated token (the reply re-encodes to the same tokens).
            XCTAssertEqual(model.tokenizer.encode(reply, addBOS: false).count, firstCompletion)
            XCTAssertEqual(cached, firstPrompt + firstCompletion - 1)
            XCTAssertEqual(timings["prompt_n"] as? Int, promptTokens - cached)
            XCTAssertEqual(timings["slot"] as? Int, (first.json["timings"] as? [String: Any])?["slot"] as? Int)
        }
    }

    func testMalformedRequestsGetOpenAIErrorsAndServingGoesOn() async throws {
        try await withServer(slots: 1, context: 256) { server, client in
            let chat = server.base + "/v1/chat/completions"
            let cases: [(url: String, body: String?, status: Int, param: String?)] = [
                (chat, "{bad json", 400, nil),
                (chat, "[1, 2]", 400, nil),
                (chat, "", 400, nil),
                (chat, #"{"messages": "hello"}"#, 400, "messages"),
                (chat, #"{"messages": []}"#, 400, "messages"),
                (chat, #"{"messages": [{"role": "robot", "content": "hi"}]}"#, 400, "messages[0].role"),
                (chat, #"{"messages": [{"role": "user", "content": 5}]}"#, 400, "messages[0].content"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#, 400, "max_tokens"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e15}"#, 400, "max_tokens"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}"#, 400, "max_tokens"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "temperature": 7}"#, 400, "temperature"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#, 400, "stream"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "stop": [1]}"#, 400, "stop"),
                (chat, #"{"messages": [{"role": "user", "content": "hi"}], "n": 3}"#, 400, "n"),
                (chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"" + String(repeating: "word ", count: 400) + "\"}]}", 400, "messages"),
                (server.base + "/v1/completions", #"{"prompt": 42}"#, 400, "prompt"),
                (server.base + "/v1/completions", #"{"max_tokens": 4}"#, 400, "prompt"),
                (server.base + "/v1/nothing", "{}", 404, nil),
                (chat, String(repeating: "x", count: 10 << 20), 413, nil),
                (server.base + "/v1/completions", #"{"prompt": "hi", "seed": 1.5}"#, 400, "seed"),
            ]
            XCTAssertEqual(cases.count, 20)
            // 200 malformed requests, 20 at a time.
            for _ in 0..<10 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, c) in cases.enumerated() {
                        group.addTask {
                            let reply = try await client.send(c.url, body: c.body)
                            XCTAssertEqual(reply.status, c.status, "case \(index): \(reply.text.prefix(200))")
                            let error = try XCTUnwrap(reply.json["error"] as? [String: Any], "case \(index) body: \(reply.text.prefix(200))")
                            XCTAssertFalse((error["message"] as? String ?? "").isEmpty)
                            XCTAssertNotNil(error["type"] as? String)
                            if let param = c.param { XCTAssertEqual(error["param"] as? String, param, "case \(index)") }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            let overLong = try await client.send(chat, body: cases[14].body)
            XCTAssertEqual((overLong.json["error"] as? [String: Any])?["code"] as? String, "context_length_exceeded")
            let health = try await client.send(server.base + "/health", method: .GET)
            XCTAssertEqual(health.status, 200)
            XCTAssertEqual(health.json["slots_idle"] as? Int, 1)
            let ok = try await client.post(server.base + "/v1/completions", ["prompt": "Hello", "max_tokens": 3, "temperature": 0])
            XCTAssertEqual(ok.status, 200)
        }
    }

    func testDisconnectFreesTheSlotAndFullQueueGets503() async throws {
        try await withServer(slots: 1, context: 4096, queueLimit: 1) { server, client in
            let long: [String: Any] = ["prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0.8, "seed": 1, "stream": true]

            // A streaming client reads one chunk and goes away: the slot is free again at once.
            let (started, startedSignal) = AsyncStream<Void>.makeStream()
            let reader = Task {
                var request = HTTPClientRequest(url: server.base + "/v1/completions")
                request.method = .POST
                request.body = .bytes(.init(data: try JSONSerialization.data(withJSONObject: long)))
                let response = try await client.execute(request, timeout: .seconds(120))
                for try await _ in response.body { startedSignal.yield(); try await Task.sleep(for: .seconds(60)) }
            }
            var it = started.makeAsyncIterator()
            _ = await it.next()
            var health = try await client.send(server.base + "/health", method: .GET)
            XCTAssertEqual(health.json["slots_processing"] as? Int, 1)
            reader.cancel()
            let cancelledAt = Date()
            while true {
                health = try await client.send(server.base + "/health", method: .GET)
                if health.json["slots_idle"] as? Int == 1 { break }
                XCTAssertLessThan(Date().timeIntervalSince(cancelledAt), 2, "slot still busy after the client left")
                try await Task.sleep(for: .milliseconds(20))
            }

            // The same for a client waiting for a whole (non-streamed) reply.
            let waiter = Task { try await client.post(server.base + "/v1/completions", ["prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true]) }
            try await waitFor { try await client.send(server.base + "/health", method: .GET).json["slots_processing"] as? Int == 1 }
            try await Task.sleep(for: .milliseconds(300))
            waiter.cancel()
            let leftAt = Date()
            while try await client.send(server.base + "/health", method: .GET).json["slots_idle"] as? Int != 1 {
                XCTAssertLessThan(Date().timeIntervalSince(leftAt), 3, "slot still busy after the client left")
                if Date().timeIntervalSince(leftAt) > 3 { break }
                try await Task.sleep(for: .milliseconds(20))
            }

            // One request generating, one queued, the third is refused with 503.
            let whole: [String: Any] = ["prompt": "Once upon a time", "max_tokens": 300, "temperature": 0.8, "seed": 2]
            let running = Task { try await client.post(server.base + "/v1/completions", whole) }
            try await waitFor { try await client.send(server.base + "/health", method: .GET).json["slots_processing"] as? Int == 1 }
            let queued = Task { try await client.post(server.base + "/v1/completions", ["prompt": "Hi", "max_tokens": 2, "temperature": 0]) }
            try await waitFor { try await client.send(server.base + "/health", method: .GET).json["requests_waiting"] as? Int == 1 }
            let refused = try await client.post(server.base + "/v1/completions", ["prompt": "Hi", "max_tokens": 2])
            XCTAssertEqual(refused.status, 503)
            XCTAssertEqual((refused.json["error"] as? [String: Any])?["code"] as? String, "server_busy")
            let first = try await running.value
            let second = try await queued.value
            XCTAssertEqual(first.status, 200)
            XCTAssertEqual(second.status, 200)
            XCTAssertEqual((second.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, 2)
            health = try await client.send(server.base + "/health", method: .GET)
            XCTAssertEqual(health.status, 200)
            XCTAssertEqual(health.json["slots_idle"] as? Int, 1)
        }
    }

    /// Runs `body` against a fresh server and client, and shuts both down whatever happens.
    private func withServer(slots: Int, context: Int = 1024, queueLimit: Int = 64,
                            _ body: (RunningServer, HTTPClient) async throws -> Void) async throws {
        let server = try await RunningServer(slots: slots, context: context, queueLimit: queueLimit)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do { try await body(server, client) } catch {
            try? await client.shutdown(); await server.stop(); throw error
        }
        try await client.shutdown()
        await server.stop()
    }

    private func waitFor(_ condition: () async throws -> Bool) async throws {
        let start = Date()
        while try await !condition() {
            XCTAssertLessThan(Date().timeIntervalSince(start), 10)
            if Date().timeIntervalSince(start) > 10 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
