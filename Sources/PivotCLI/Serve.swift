import ArgumentParser
import Foundation
import Pivot
import PivotServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "OpenAI-compatible HTTP server with streaming, concurrent slots and a chat page at /.",
        discussion: """
        Routes: POST /v1/chat/completions and /v1/completions (stream: true gives server-sent events ending with \
        data: [DONE]; max_tokens, temperature, top_p, seed, stop, ignore_eos; usage and llama-server's timings in every reply), \
        GET /v1/models, GET /health, GET / (chat page). Each of --parallel slots has its own KV cache of --ctx-size \
        tokens; a request goes to the free slot whose cache holds the longest prefix of its prompt and prefills only \
        the rest (a multi-turn chat does not re-read its history). Running requests advance one token each in turn; a long prompt is prefilled 256 tokens at a time between their steps. \
        Up to --queue requests wait for a slot; beyond that the answer is 503. Errors are OpenAI-shaped JSON.
        """)

    @OptionGroup var model: ModelOptions

    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "KV cache size per slot in tokens (default: the model's context length, at most 4096).")
    var contextSize: Int?

    @Option(help: "Address to listen on (0.0.0.0 for every interface).")
    var host = "127.0.0.1"

    @Option(help: "TCP port (0 picks a free one; the chosen port is printed).")
    var port = 8080

    @Option(name: [.customLong("parallel"), .customLong("np", withSingleDash: true)], help: "Slots: requests generated concurrently, each with its own KV cache.")
    var parallel = 4

    @Option(help: "Requests that may wait for a free slot; more get HTTP 503.")
    var queue = 64

    @Option(help: "Largest request body in bytes; larger ones get HTTP 413.")
    var maxBody = 1 << 20

    @OptionGroup var drafting: DraftOptions
    @OptionGroup var precisionOption: PrecisionOption
    @OptionGroup var kv: KVCacheOptions

    func validate() throws {
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be between 1 and 64") }
        guard queue >= 0 else { throw ValidationError("--queue must not be negative") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard maxBody >= 1024 else { throw ValidationError("--max-body must be at least 1024") }
        if let contextSize, contextSize < 16 { throw ValidationError("--ctx-size must be at least 16") }
        try drafting.check()
    }

    func run() async throws {
        let loaded = try model.load()
        let pool = model.makePool()
        try kv.apply(to: loaded, pool: pool)
        let context = contextSize ?? min(loaded.config.contextLength, 4096)
        let generators = (0..<parallel).map { _ in
            Generator(model: loaded, pool: pool, contextLength: context, precision: precisionOption.precision,
                      drafter: drafting.makeDrafter(), maxDraft: drafting.draftMax)
        }
        let name = (loaded.path as NSString).lastPathComponent
        let server = PivotServer(model: loaded, modelName: name, generators: generators,
                                 options: ServerOptions(host: host, port: port, queueLimit: queue, maxBodyBytes: maxBody))
        let host = self.host
        let parallel = self.parallel
        do {
            try await server.run { port in
                writeErr("pivot serve: \(name), \(parallel) slot(s) × \(context) tokens, listening on http://\(host):\(port)\n")
            }
        } catch let error as ServerError {
            // Its description is the whole message; ArgumentParser would add "Error: ".
            writeErr("\(error)\n")
            throw ExitCode.failure
        }
    }
}
