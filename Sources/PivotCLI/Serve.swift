import ArgumentParser
import Foundation
import Pivot
import PivotKernels
import PivotServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "OpenAI-compatible HTTP server with streaming, concurrent slots and a chat page at /.",
        discussion: """
        Routes: POST /v1/chat/completions and /v1/completions (stream: true gives server-sent events ending with \
        data: [DONE]; max_tokens, temperature, top_p, seed, stop, ignore_eos; usage and llama-server's timings in every reply), \
        GET /v1/models, GET /health, GET / (chat page), GET /metrics (Prometheus), POST /tokenize and /detokenize \
        (llama-server's, and vLLM's field names with GET /tokenizer_info). Logprobs as OpenAI gives them: chat `logprobs: true` with `top_logprobs` 0-20, completions \
        `logprobs` 0-20 and `echo` (with max_tokens 0: the prompt's own logprobs, for lm-evaluation-harness); they \
        are the log-softmax of the raw logits, before temperature or top-p. Each of --parallel slots has its own KV cache of --ctx-size \
        tokens (F16 unless --kv-type says otherwise; memory is committed as tokens arrive); a request goes to the free slot whose cache holds the longest prefix of its prompt and prefills only \
        the rest (a multi-turn chat does not re-read its history). Continuous batching: every forward pass carries the next token of each running request \
        (with its draft under --draft) and up to 256 tokens of pending prompts, so throughput grows with clients. \
        With --kv-budget the running requests' caches share that much memory (a compressed cache fits more of them): a prompt starts once it fits, \
        and when decoding outgrows the budget the newest request is preempted and recomputed later, never dropped. \
        Up to --queue requests wait for a slot; beyond that the answer is 503. Errors are OpenAI-shaped JSON. \
        One line per request on stderr (id, route, status, tokens, time to first token, total time) unless --quiet. \
        SIGTERM or Ctrl-C drains: new requests get 503, running ones have --drain-seconds to finish, then the server \
        exits 0 (a second signal stops them at once).
        """)


    @Option(help: "Address to listen on (0.0.0.0 for every interface).")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "TCP port (0 picks a free one; the chosen port is printed).")
    var port = 8080

    @Option(name: [.customLong("parallel"), .customLong("np", withSingleDash: true)], parsing: .unconditional, help: "Slots: requests generated concurrently, each with its own KV cache.")
    var parallel = 4

    @Option(parsing: .unconditional, help: "Requests that may wait for a free slot; more get HTTP 503.")
    var queue = 64

    @Option(parsing: .unconditional, help: "Largest request body in bytes; larger ones get HTTP 413.")
    var maxBody = 1 << 20

    @Option(help: ArgumentHelp("Require 'Authorization: Bearer KEY' on every route but /health and the chat page (else 401). Default: $PIVOT_API_KEY.",
                               valueName: "key"))
    var apiKey: String?

    @Option(parsing: .unconditional, help: "After SIGTERM/SIGINT, seconds running requests may take to finish before they are stopped.")
    var drainSeconds = 30.0

    @Option(parsing: .unconditional, help: ArgumentHelp("KV cache memory the running requests' caches may hold together, at the cache type's bytes per token: a prompt starts once it fits; beyond it the newest request is preempted (its cache emptied) and recomputed later. Default: every slot's whole context (--parallel × --ctx-size).", valueName: "MiB"))
    var kvBudget: Double?

    @Flag(help: "No log line per request on stderr.")
    var quiet = false

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Context (per slot)") var contextOption: ContextOption
    @OptionGroup(title: "Drafting (faster, same output)") var drafting: DraftOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions
    @OptionGroup(title: "Output shortlist") var shortlist: ShortlistOptions

    func validate() throws {
        try checkRange("--parallel", parallel, 1...64)
        try checkRange("--queue", queue, 0...Int.max)
        try checkRange("--port", port, 0...65535)
        try checkRange("--max-body", maxBody, 1024...Int.max)
        guard drainSeconds >= 0 && drainSeconds.isFinite else { throw ValidationError("--drain-seconds must be 0 or more; got \(drainSeconds).") }
        if let kvBudget, !(kvBudget > 0 && kvBudget.isFinite) { throw ValidationError("--kv-budget must be a positive number of MiB; got \(kvBudget).") }
        if apiKey?.isEmpty == true { throw ValidationError("--api-key must not be empty.") }
        if let contextSize = contextOption.contextSize ?? contextOption.legacyContext { try checkRange("--ctx-size", contextSize, 16...1_048_576) }
    }

    /// $PIVOT_API_KEY when set and not empty: a key kept out of the process list.
    private var environmentKey: String? {
        ProcessInfo.processInfo.environment["PIVOT_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
    }

    func run() async throws {
        let pool = model.makePool()
        var configuration = try model.configuration(kv: kv.defaulting(to: .f16), draft: drafting, shortlist: shortlist)
        configuration.kvCacheIsDefault = kv.chosenKind == nil
        let loaded = try model.load(configuration, pool: pool)
        let context = contextOption.cacheSize(for: loaded)
        let generators = (0..<parallel).map { _ in Generator(model: loaded, configuration: configuration, pool: pool, contextLength: context) }
        let name = (loaded.path as NSString).lastPathComponent
        let server = PivotServer(model: loaded, modelName: name, generators: generators,
                                 options: ServerOptions(host: host, port: port, queueLimit: queue, maxBodyBytes: maxBody, quiet: quiet,
                                                        apiKey: apiKey ?? environmentKey, drainSeconds: drainSeconds, handleSignals: true,
                                                        kvBudgetBytes: kvBudget.map { $0 * 1_048_576 }))
        let host = self.host
        let parallel = self.parallel
        let cacheLabel = loaded.kvCache.spec.label
        let budgetLabel = server.kvBudget.tokens.map { String(format: "%.0f MiB (%.0f tokens)", server.kvBudget.bytes / 1_048_576, $0) }
            ?? "none (a fixed recurrent state per slot, no KV cache)"
        let secured = apiKey ?? environmentKey != nil ? " (API key required)" : ""
        do {
            try await server.run { port in
                writeErr("pivot serve: \(name), \(parallel) slot(s) × \(context) tokens, \(cacheLabel) KV cache, budget \(budgetLabel), \(KernelISA.active) kernels, listening on http://\(host):\(port)\(secured)\n")
            }
        } catch let error as ServerError {
            // Its description is the whole message; ArgumentParser would add "Error: ".
            writeErr("\(error)\n")
            throw ExitCode.failure
        }
    }
}
