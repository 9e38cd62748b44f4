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

    /// A KV budget of 60% of what four requests end up holding: all four start, decoding outgrows the
    /// budget, the newest are preempted (caches emptied, recomputed later), the held bytes never exceed
    /// the budget, and every reply is exactly what the request gets alone. A prompt that could never fit is a 400.
    func testKVBudgetPreemptsAndRecomputesWithTheSameReplies() async throws {
        let model = try TestModel.load()
        let perToken = model.makeCache(capacity: 16).bytesPerToken
        let prompts = ["Count: one, two, three,", "List the planets of the solar system:", "Write a poem about the sea.",
                       "The history of Rome begins"]
        let encoded = prompts.map { model.tokenizer.encode($0) }
        let expected = encoded.map { referenceGeneration(model, prompt: $0, maxTokens: 60).tokens }
        let finalLengths = zip(encoded, expected).map { $0.count + $1.count }
        let budget = finalLengths.reduce(0, +) * 6 / 10
        XCTAssertGreaterThan(budget, finalLengths.max()! + 1, "each fits alone")
        let server = try await RunningServer(slots: 4, kvBudgetBytes: Double(budget) * perToken)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let base = server.base
        let watching = Task { await mostHeldBytes(client, base) }
        let replies = try await withThrowingTaskGroup(of: (Int, Reply).self) { group in
            for (i, prompt) in prompts.enumerated() {
                group.addTask { (i, try await client.post(base + "/v1/completions", ["prompt": prompt, "max_tokens": 60, "temperature": 0])) }
            }
            var replies = [Reply?](repeating: nil, count: prompts.count)
            for try await (i, reply) in group { replies[i] = reply }
            return replies.map { $0! }
        }
        watching.cancel()
        let mostHeld = await watching.value
        for (i, reply) in replies.enumerated() {
            XCTAssertEqual(reply.status, 200)
            XCTAssertEqual((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String,
                           model.tokenizer.decode(expected[i], skipSpecial: true), "prompt \(i)")
        }
        let metrics = try await client.send(base + "/metrics", method: .GET).text
        XCTAssertGreaterThan(Self.gauge("pivot_preemptions_total", metrics), 0, "the budget was outgrown")
        XCTAssertEqual(Self.gauge("pivot_kv_budget_bytes", metrics), Double(budget) * perToken, accuracy: 1)
        XCTAssertGreaterThan(mostHeld, 0)
        XCTAssertLessThanOrEqual(mostHeld, Double(budget) * perToken + 1, "the running requests never held more than the budget")
        let tooLong = String(repeating: "word ", count: budget + 10)
        let refused = try await client.post(base + "/v1/completions", ["prompt": tooLong, "max_tokens": 4])
        XCTAssertEqual(refused.status, 400)
        XCTAssertEqual((refused.json["error"] as? [String: Any])?["code"] as? String, "kv_budget_exceeded")
        await server.stop()
    }

    static func gauge(_ name: String, _ text: String) -> Double {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) } ?? 0
    }
}

/// Scrapes /metrics until cancelled; the most KV cache bytes the running requests held at once, as the budget counts them.
func mostHeldBytes(_ client: HTTPClient, _ base: String) async -> Double {
    var most = 0.0
    while !Task.isCancelled {
        let text = (try? await client.send(base + "/metrics", method: .GET).text) ?? ""
        most = max(most, ServerBatchingTests.gauge("pivot_kv_budget_used_bytes", text))
        try? await Task.sleep(for: .milliseconds(10))
    }
    return most
}
