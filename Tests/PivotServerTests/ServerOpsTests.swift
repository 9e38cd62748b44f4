import AsyncHTTPClient
import Foundation
import PivotServer
import XCTest

/// Running a server for many users: API keys, /metrics, /tokenize, graceful shutdown.
final class ServerOpsTests: XCTestCase {
    func testConstantTimeEqualsComparesEveryByteAndTheLength() {
        let key = Array("s3cret-key".utf8)
        XCTAssertTrue(constantTimeEquals(key, key))
        XCTAssertTrue(constantTimeEquals([], []))
        XCTAssertFalse(constantTimeEquals(key, Array("s3cret-kez".utf8)), "last byte differs")
        XCTAssertFalse(constantTimeEquals(key, Array("t3cret-key".utf8)), "first byte differs")
        XCTAssertFalse(constantTimeEquals(key, Array("s3cret-key\0".utf8)), "a trailing zero byte is still a different length")
        XCTAssertFalse(constantTimeEquals(key, Array("s3cret".utf8)), "a prefix is not the key")
        XCTAssertFalse(constantTimeEquals([], key))
        // 256 apart in length: the length check must not wrap to equal.
        XCTAssertFalse(constantTimeEquals([], [UInt8](repeating: 0, count: 256)))
    }

    func testDrainGateAdmitsUntilDrainingThenWaitsForTheRequestsInside() async throws {
        let gate = DrainGate()
        XCTAssertTrue(gate.enter())
        XCTAssertTrue(gate.enter())
        XCTAssertEqual(gate.inside, 2)
        XCTAssertTrue(gate.beginDrain())
        XCTAssertFalse(gate.beginDrain(), "the second signal is not a new drain")
        XCTAssertFalse(gate.enter(), "no request is admitted while draining")
        XCTAssertEqual(gate.inside, 2)
        let tooSoon = try await gate.drained(within: 0.1, poll: .milliseconds(10))
        XCTAssertFalse(tooSoon, "two requests are still inside")
        gate.leave()
        Task { try await Task.sleep(for: .milliseconds(100)); gate.leave() }
        let drained = try await gate.drained(within: 5, poll: .milliseconds(10))
        XCTAssertTrue(drained)
        XCTAssertEqual(gate.inside, 0)
    }

    func testAPIKeyRequiredOnEveryRouteButHealthAndThePage() async throws {
        let server = try await RunningServer(slots: 1, context: 256, apiKey: "s3cret")
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown(); await server.stop() } }
        let completion = #"{"prompt": "Hi", "max_tokens": 2, "temperature": 0}"#
        for key in [nil, "wrong", "s3cre", "s3cret "] as [String?] {
            for (route, body) in [("/v1/models", nil), ("/metrics", nil), ("/v1/completions", completion), ("/tokenize", #"{"content": "a"}"#)] {
                let reply = try await client.send(server.base + route, method: body == nil ? .GET : .POST, body: body, key: key)
                XCTAssertEqual(reply.status, key == "s3cret " ? 200 : 401, "\(route) with key \(key ?? "none")")
                guard reply.status == 401 else { continue }
                let error = try XCTUnwrap(reply.json["error"] as? [String: Any])
                XCTAssertEqual(error["type"] as? String, "invalid_request_error")
                XCTAssertEqual(error["code"] as? String, "invalid_api_key")
                XCTAssertNotNil(error["message"] as? String)
            }
        }
        for route in ["/v1/models", "/metrics"] {
            let reply = try await client.send(server.base + route, method: .GET, key: "s3cret")
            XCTAssertEqual(reply.status, 200, route)
        }
        let generated = try await client.send(server.base + "/v1/completions", body: completion, key: "s3cret")
        XCTAssertEqual(generated.status, 200)
        XCTAssertEqual((generated.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, 2)
        let health = try await client.send(server.base + "/health", method: .GET)
        XCTAssertEqual(health.status, 200)
        let page = try await client.send(server.base + "/", method: .GET)
        XCTAssertEqual(page.status, 200)
    }

    func testMetricsParseAndMoveAfterARequest() async throws {
        let server = try await RunningServer(slots: 2, context: 256)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown(); await server.stop() } }
        let before = try await metrics(client, server)
        XCTAssertEqual(before["pivot_slots"], 2)
        XCTAssertEqual(before["pivot_slots_busy"], 0)
        XCTAssertEqual(before["pivot_kv_cache_bytes"], 0)
        XCTAssertGreaterThan(before["pivot_kv_cache_capacity_bytes"] ?? 0, 0)
        XCTAssertEqual(before["pivot_generated_tokens_total"], 0)

        let prompt = "The capital of France is"
        let promptTokens = server.model.tokenizer.encode(prompt).count
        let reply = try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": true])
        XCTAssertEqual(reply.status, 200)
        let bad = try await client.post(server.base + "/v1/completions", ["max_tokens": 8])
        XCTAssertEqual(bad.status, 400)
        // Requests are counted once their response is written, which may be a moment after the client has it.
        var after: [String: Double] = [:]
        for _ in 0..<40 {
            after = try await metrics(client, server)
            if after[#"pivot_requests_total{endpoint="/v1/completions",status="400"}"#] == 1 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertEqual(after[#"pivot_requests_total{endpoint="/v1/completions",status="200"}"#], 1)
        XCTAssertEqual(after[#"pivot_requests_total{endpoint="/v1/completions",status="400"}"#], 1)
        XCTAssertGreaterThanOrEqual(after[#"pivot_requests_total{endpoint="/metrics",status="200"}"#] ?? 0, 1, "scrapes count too")
        XCTAssertEqual(after["pivot_prompt_tokens_total"], Double(promptTokens))
        XCTAssertEqual(after["pivot_generated_tokens_total"], 8)
        XCTAssertEqual(after["pivot_time_to_first_token_seconds_count"], 1)
        XCTAssertEqual(after[#"pivot_time_to_first_token_seconds_bucket{le="+Inf"}"#], 1)
        XCTAssertEqual(after["pivot_inter_token_latency_seconds_count"], 7, "8 tokens, 7 gaps")
        XCTAssertGreaterThan(after["pivot_time_to_first_token_seconds_sum"] ?? 0, 0)
        // The slot keeps the prompt and the generated tokens (all but the last, never fed back).
        let perToken = try XCTUnwrap(after["pivot_kv_cache_capacity_bytes"]) / Double(2 * 256)
        XCTAssertEqual(after["pivot_kv_cache_bytes"] ?? 0, perToken * Double(promptTokens + 7), accuracy: 1)
    }

    /// /metrics in Prometheus' text format: every family has HELP and TYPE before its samples,
    /// every sample line is `name{labels} number`, histogram buckets are cumulative.
    private func metrics(_ client: HTTPClient, _ server: RunningServer) async throws -> [String: Double] {
        let reply = try await client.send(server.base + "/metrics", method: .GET)
        XCTAssertEqual(reply.status, 200)
        var values: [String: Double] = [:]
        var typed: Set<String> = [], helped: Set<String> = []
        var lastBucket: (name: String, value: Double)?
        for line in reply.text.split(separator: "\n").map(String.init) {
            let words = line.split(separator: " ", maxSplits: 3).map(String.init)
            if line.hasPrefix("# HELP ") { helped.insert(words[2]); continue }
            if line.hasPrefix("# TYPE ") {
                XCTAssertTrue(["counter", "gauge", "histogram"].contains(words[3]), line)
                typed.insert(words[2]); continue
            }
            let match = try XCTUnwrap(line.wholeMatch(of: /([a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+-]+)/), "not a sample: \(line)")
            let name = String(match.1), value = try XCTUnwrap(Double(match.4))
            let family = ["_bucket", "_sum", "_count"].reduce(name) { typed.contains($0) ? $0 : ($0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0) }
            XCTAssertTrue(typed.contains(family) && helped.contains(family), "no HELP/TYPE before \(name)")
            XCTAssertTrue(name.hasPrefix("pivot_"))
            if name.hasSuffix("_bucket") {
                if let last = lastBucket, last.name == name { XCTAssertGreaterThanOrEqual(value, last.value, "buckets are cumulative") }
                lastBucket = (name, value)
            }
            values[name + String(match.2 ?? "")] = value
        }
        return values
    }

    func testTokenizeDetokenizeRoundTripOnTheRealTokenizer() async throws {
        let server = try await RunningServer(slots: 1, context: 256)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown(); await server.stop() } }
        let text = "Hello, wörld! 👋 The capital of France is Paris.<|im_end|>"
        let tokenized = try await client.post(server.base + "/tokenize", ["content": text])
        XCTAssertEqual(tokenized.status, 200)
        let tokens = try XCTUnwrap(tokenized.json["tokens"] as? [Int])
        XCTAssertEqual(tokens, server.model.tokenizer.encode(text, addBOS: false))
        XCTAssertEqual(tokens.last, server.model.tokenizer.tokenIDs["<|im_end|>"], "special tokens are parsed")
        let detokenized = try await client.post(server.base + "/detokenize", ["tokens": tokens])
        XCTAssertEqual(detokenized.status, 200)
        XCTAssertEqual(detokenized.json["content"] as? String, text)
        // vLLM's names, as lm-evaluation-harness's remote tokenizer sends them.
        let vllm = try await client.post(server.base + "/tokenize", ["prompt": text, "add_special_tokens": false])
        XCTAssertEqual(vllm.json["tokens"] as? [Int], tokens)
        XCTAssertEqual(detokenized.json["prompt"] as? String, text)
        let info = try await client.send(server.base + "/tokenizer_info", method: .GET)
        let eos = try XCTUnwrap(info.json["eos_token"] as? String)
        XCTAssertEqual(server.model.tokenizer.encode(eos, addBOS: false), [server.model.tokenizer.eos!])

        let cases: [(route: String, body: String, param: String)] = [
            ("/detokenize", #"{"tokens": [1, -1]}"#, "tokens[1]"),
            ("/detokenize", #"{"tokens": [99999999]}"#, "tokens[0]"),
            ("/detokenize", #"{"tokens": "abc"}"#, "tokens"),
            ("/detokenize", #"{}"#, "tokens"),
            ("/tokenize", #"{"content": 5}"#, "content"),
            ("/tokenize", #"{"content": "a", "add_special": "yes"}"#, "add_special"),
        ]
        for c in cases {
            let reply = try await client.send(server.base + c.route, body: c.body)
            XCTAssertEqual(reply.status, 400, c.body)
            let error = reply.json["error"] as? [String: Any]
            XCTAssertEqual(error?["param"] as? String, c.param, c.body)
            XCTAssertEqual(error?["type"] as? String, "invalid_request_error")
        }
    }

    func testShutdownRefusesNewRequestsAndLetsRunningOnesFinish() async throws {
        let server = try await RunningServer(slots: 1, context: 512, drainSeconds: 60)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown() } }
        let running = try await shutDownDuringARequest(of: 48, server, client)
        let refused = try await client.post(server.base + "/v1/completions", ["prompt": "Hi", "max_tokens": 2])
        XCTAssertEqual(refused.status, 503)
        XCTAssertEqual((refused.json["error"] as? [String: Any])?["code"] as? String, "shutting_down")
        let finished = try await running.value
        XCTAssertEqual(finished.status, 200)
        XCTAssertEqual((finished.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, 48, "the running request was not cut")
        let returned = await server.returns(within: 20)
        XCTAssertTrue(returned, "run() returns once drained")
    }

    func testShutdownStopsRequestsStillRunningWhenTheDrainTimeIsOver() async throws {
        let server = try await RunningServer(slots: 1, context: 1024, drainSeconds: 0.3)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { Task { try? await client.shutdown() } }
        let running = try await shutDownDuringARequest(of: 1000, server, client)
        let returned = await server.returns(within: 20)
        XCTAssertTrue(returned, "run() returns after the drain time")
        let cut = try await running.value
        XCTAssertEqual(cut.status, 200)
        let generated = try XCTUnwrap((cut.json["usage"] as? [String: Any])?["completion_tokens"] as? Int)
        XCTAssertLessThan(generated, 1000)
        XCTAssertEqual((cut.json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "length")
    }

    /// Starts a greedy completion of `tokens` tokens, waits until its slot is busy, then asks the
    /// server to shut down; returns the running request.
    private func shutDownDuringARequest(of tokens: Int, _ server: RunningServer, _ client: HTTPClient) async throws -> Task<Reply, Error> {
        let url = server.base + "/v1/completions"
        let running = Task { try await client.post(url, ["prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0, "ignore_eos": true]) }
        try await waitUntilBusy(client, server)
        server.server.shutDown()
        return running
    }

    private func waitUntilBusy(_ client: HTTPClient, _ server: RunningServer) async throws {
        for _ in 0..<200 {
            let health = try await client.send(server.base + "/health", method: .GET)
            if health.json["slots_processing"] as? Int == 1 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTFail("the request never started")
    }
}
