import AsyncHTTPClient
import Foundation
import Pivot
import XCTest
import PivotServer

/// Continuous batching: requests that share forward passes reply exactly as each would alone.
final class ServerBatchingTests: XCTestCase {
    /// Prompts that invite copying, so the n-gram drafter's drafts are accepted often.
    static let prompts = [
        "Repeat exactly: the quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox",
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,",
        "A short story about a lighthouse keeper named Tom.",
        "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday,",
        "def square(x):\n    return x * x\n\ndef cube(x):\n    return",
        "The capital of France is Paris. The capital of Spain is Madrid. The capital of Italy is",
    ]

    /// Six concurrent greedy requests over four drafting slots: some decode with drafts verified in
    /// the shared pass while others prefill; every reply equals plain decoding of its prompt alone.
    func testConcurrentDraftingRepliesEqualPlainDecodingAlone() async throws {
        let server = try await RunningServer(slots: 4, drafting: true)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let model = server.model
        let expected = Self.prompts.map { referenceGeneration(model, prompt: model.tokenizer.encode($0), maxTokens: 24).text }
        let replies = try await withThrowingTaskGroup(of: (Int, Reply).self) { group in
            for (i, prompt) in Self.prompts.enumerated() {
                group.addTask { (i, try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 24, "temperature": 0])) }
            }
            var replies = [Reply?](repeating: nil, count: Self.prompts.count)
            for try await (i, reply) in group { replies[i] = reply }
            return replies.map { $0! }
        }
        for (i, reply) in replies.enumerated() {
            XCTAssertEqual(reply.status, 200)
            XCTAssertEqual((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String, expected[i], "prompt \(i)")
        }
        await server.stop()
    }

    /// A KV budget of 250 tokens' worth: requests reserving 100-odd tokens each run two at a time
    /// (never more reserved than the budget), the others wait and then complete; one that could
    /// never fit is refused with a 400 naming max_tokens.
    func testKVBudgetAdmitsWhatFitsAndQueuesTheRest() async throws {
        let perToken = try TestModel.load().makeCache(capacity: 16).bytesPerToken
        let server = try await RunningServer(slots: 4, kvBudgetBytes: 250 * perToken)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let prompt = "Count: one, two, three,"
        let promptTokens = server.model.tokenizer.encode(prompt).count
        let base = server.base
        let watching = Task { await mostBusyAndReserved(client, base) }
        let replies = try await withThrowingTaskGroup(of: Reply.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 100, "temperature": 0, "ignore_eos": true])
                }
            }
            return try await group.reduce(into: [Reply]()) { $0.append($1) }
        }
        watching.cancel()
        let most = await watching.value
        for reply in replies {
            XCTAssertEqual(reply.status, 200)
            XCTAssertEqual((reply.json["usage"] as? [String: Any])?["completion_tokens"] as? Int, 100)
        }
        XCTAssertEqual(most[0], 2, "two reservations of \(promptTokens + 100) tokens fit in 250")
        XCTAssertEqual(most[1], Double(2 * (promptTokens + 100)) * perToken, accuracy: 1)
        let tooBig = try await client.post(server.base + "/v1/completions", ["prompt": prompt, "max_tokens": 300])
        XCTAssertEqual(tooBig.status, 400)
        XCTAssertEqual((tooBig.json["error"] as? [String: Any])?["code"] as? String, "kv_budget_exceeded")
        await server.stop()
    }

    static func gauge(_ name: String, _ text: String) -> Double {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) } ?? 0
    }
}

/// Scrapes /metrics until cancelled; the largest busy-slot count and reserved bytes seen.
func mostBusyAndReserved(_ client: HTTPClient, _ base: String) async -> [Double] {
    var busy = 0.0, reserved = 0.0
    while !Task.isCancelled {
        let text = (try? await client.send(base + "/metrics", method: .GET).text) ?? ""
        busy = max(busy, ServerBatchingTests.gauge("pivot_slots_busy", text))
        reserved = max(reserved, ServerBatchingTests.gauge("pivot_kv_reserved_bytes", text))
        try? await Task.sleep(for: .milliseconds(20))
    }
    return [busy, reserved]
}
