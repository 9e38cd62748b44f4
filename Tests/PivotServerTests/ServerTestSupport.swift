import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Pivot
import PivotKernels
import PivotServer
import XCTest

/// The real model, found as the CLI finds it (`ModelLocator`); tests skip where it is absent.
enum TestModel {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func path() throws -> String {
        guard let found = ModelLocator.resolve(nil) else {
            throw XCTSkip("real model not found: put \(ModelLocator.defaultModelName) in ../shared/models or $PIVOT_MODELS")
        }
        return found
    }

    nonisolated(unsafe) private static var loaded: LoadedModel?
    private static let lock = NSLock()

    static func load() throws -> LoadedModel {
        let path = try path()
        return try lock.withLock {
            if let loaded { return loaded }
            let model = try LoadedModel.load(path: path)
            loaded = model
            return model
        }
    }
}

/// A `pivot serve` on a free loopback port, stopped by `stop()`.
final class RunningServer: @unchecked Sendable {
    let port: Int
    let model: LoadedModel
    let server: PivotServer
    private let task: Task<Void, Error>
    private let ended = DoneFlag()

    /// `drafting`: every slot drafts with an n-gram drafter (`--draft ngram`).
    init(slots: Int, context: Int = 1024, queueLimit: Int = 64, apiKey: String? = nil, drainSeconds: Double = 30,
         drafting: Bool = false, kvBudgetBytes: Double? = nil) async throws {
        let model = try TestModel.load()
        self.model = model
        let pool = ThreadPool(threads: 2)
        let generators = (0..<slots).map { _ in
            Generator(model: model, execution: Execution(pool: pool), contextLength: context, drafter: drafting ? NGramDrafter() : nil)
        }
        let server = PivotServer(model: model, modelName: "test-model", generators: generators,
                                 options: ServerOptions(host: "127.0.0.1", port: 0, queueLimit: queueLimit, maxBodyBytes: 1 << 20, quiet: true,
                                                        apiKey: apiKey, drainSeconds: drainSeconds, kvBudgetBytes: kvBudgetBytes))
        self.server = server
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let ended = self.ended
        task = Task {
            defer { ended.set() }
            try await server.run { continuation.yield($0) }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw XCTSkip("server did not start") }
        self.port = port
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }

    /// Waits for `run` to return by itself (after `shutDown()`); true when it did within `seconds`.
    func returns(within seconds: Double) async -> Bool {
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            if ended.isSet { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    var base: String { "http://127.0.0.1:\(port)" }
}

/// One HTTP exchange's status, parsed JSON body and raw text.
struct Reply {
    var status: Int
    var text: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }
}

/// Set once, read from any task.
final class DoneFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    var isSet: Bool { lock.withLock { done } }
    func set() { lock.withLock { done = true } }
}

extension HTTPClient {
    func send(_ url: String, method: HTTPMethod = .POST, body: String? = nil, key: String? = nil) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await execute(request, timeout: .seconds(120))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return Reply(status: Int(response.status.code), text: String(buffer: bytes))
    }

    func post(_ url: String, _ object: [String: Any]) async throws -> Reply {
        try await send(url, body: String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }

    /// The `data:` payloads of a server-sent-event stream, in order.
    func streamEvents(_ url: String, _ object: [String: Any]) async throws -> [String] {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: object)))
        let response = try await execute(request, timeout: .seconds(120))
        XCTAssertEqual(response.status.code, 200)
        XCTAssertEqual(response.headers.first(name: "content-type"), "text/event-stream")
        var text = ""
        for try await buffer in response.body { text += String(buffer: buffer) }
        return text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map {
            XCTAssertTrue($0.hasPrefix("data: "), "not an SSE data line: \($0)")
            return String($0.dropFirst(6))
        }
    }
}

func parse(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// Greedy generation through the library itself: what the server must return.
func referenceGeneration(_ model: LoadedModel, prompt: [Int], maxTokens: Int) -> (text: String, tokens: [Int]) {
    let generator = Generator(model: model, execution: Execution(pool: ThreadPool(threads: 2)), contextLength: 1024)
    var sampler = Sampler(temperature: 0)
    var stats = GenerationStats()
    var tokens: [Int] = []
    generator.generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stats: &stats) { tokens.append($0); return true }
    return (model.tokenizer.decode(tokens, skipSpecial: true), tokens)
}
