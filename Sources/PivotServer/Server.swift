import Foundation
import Hummingbird
import Logging
import NIOCore
import Pivot
import ServiceLifecycle

/// Where and how `pivot serve` listens.
public struct ServerOptions: Sendable {
    public var host: String
    public var port: Int
    /// Requests that may wait for a slot before new ones get 503.
    public var queueLimit: Int
    /// Largest request body accepted (413 beyond).
    public var maxBodyBytes: Int
    /// No line per request on stderr, and Hummingbird's own log lines only when critical.
    public var quiet: Bool
    /// When set, every route but /health and the chat page needs `Authorization: Bearer KEY`.
    public var apiKey: String?
    /// After SIGTERM/SIGINT (or `shutDown()`), how long running requests may take to finish.
    public var drainSeconds: Double
    /// Whether `run` handles SIGTERM and SIGINT itself (the CLI); tests call `shutDown()` instead.
    public var handleSignals: Bool
    /// KV cache bytes the running requests' caches may hold together (beyond it the newest is preempted); nil: every slot's whole context.
    public var kvBudgetBytes: Double?

    public init(host: String = "127.0.0.1", port: Int = 8080, queueLimit: Int = 64, maxBodyBytes: Int = 1 << 20, quiet: Bool = false,
                apiKey: String? = nil, drainSeconds: Double = 30, handleSignals: Bool = false, kvBudgetBytes: Double? = nil) {
        self.kvBudgetBytes = kvBudgetBytes
        self.host = host; self.port = port; self.queueLimit = queueLimit; self.maxBodyBytes = maxBodyBytes; self.quiet = quiet
        self.apiKey = apiKey; self.drainSeconds = drainSeconds; self.handleSignals = handleSignals
    }
}

/// An OpenAI-compatible HTTP server over one model: /v1/chat/completions, /v1/completions
/// (both with server-sent-event streaming and logprobs), /v1/models, /tokenize, /detokenize,
/// /tokenizer_info, /metrics, /health and a chat page at /.
public final class PivotServer: Sendable {
    let engine: Engine
    let options: ServerOptions
    let gate = DrainGate()

    /// `generators`: one per slot, each with its own KV cache, all over `model` and one thread pool.
    public init(model: LoadedModel, modelName: String, generators: [Generator], options: ServerOptions = ServerOptions()) {
        precondition(!generators.isEmpty)
        engine = Engine(model: model, modelName: modelName, generators: generators, queueLimit: options.queueLimit,
                        kvBudget: options.kvBudgetBytes)
        self.options = options
    }

    /// KV cache bytes the running requests' caches may hold together (`ServerOptions.kvBudgetBytes` or its default),
    /// and that many tokens of the slots' cache (nil where caches hold nothing per token: a recurrent state).
    public var kvBudget: (bytes: Double, tokens: Double?) {
        (engine.kvBudgetBytes, engine.budgetBytesPerToken > 0 ? engine.kvBudgetBytes / engine.budgetBytesPerToken : nil)
    }

    /// Begins a graceful shutdown, as SIGTERM does: new requests get 503, running ones have
    /// `drainSeconds` to finish, then `run` returns. A second call stops running generations at once.
    public func shutDown() {
        guard gate.beginDrain() else { engine.stopAll.set(); return }
        note("draining: \(gate.inside) request(s) running, up to \(PrometheusText.number(options.drainSeconds)) s; new requests get 503")
    }

    private func note(_ message: String) {
        if !options.quiet { FileHandle.standardError.write(Data("pivot serve: \(message)\n".utf8)) }
    }

    /// Serves until drained after `shutDown()` (or SIGINT/SIGTERM with `handleSignals`), or until the
    /// task is cancelled; `onListening` gets the bound port (useful with port 0). Throws
    /// `ServerError` when it cannot listen.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        router.middlewares.add(RequestAccountingMiddleware(metrics: engine.metrics, gate: gate, logLines: !options.quiet))
        router.middlewares.add(OpenAIErrorMiddleware())
        if let key = options.apiKey { router.middlewares.add(APIKeyMiddleware(key: Array(key.utf8))) }
        addRoutes(to: router)
        var logger = Logger(label: "pivot")
        logger.logLevel = options.quiet ? .critical : .info
        let app = Application(router: router,
                              configuration: .init(address: .hostname(options.host, port: options.port), serverName: "pivot"),
                              onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) }, logger: logger)
        let signals = options.handleSignals ? watchSignals() : []
        defer { signals.forEach { $0.cancel() } }
        // Our own service group, so a drained server shuts down gracefully (idle connections closed, no errors logged).
        let services = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await services.run() }
                tasks.addTask { [self] in
                    try await drain()
                    await services.triggerGracefulShutdown()
                }
                try await tasks.next()
                // The server ended without a shutdown (it could not listen): nothing to drain.
                if gate.phase == .serving { tasks.cancelAll() }
                try await tasks.waitForAll()
            }
        } catch let error as IOError {
            // Socket errors reach here only from binding: once listening, Hummingbird logs them.
            throw error.errnoCode == EADDRINUSE
                ? ServerError.portInUse(host: options.host, port: options.port)
                : ServerError.cannotListen(host: options.host, port: options.port, reason: String(cString: strerror(error.errnoCode)))
        } catch let error as SocketAddressError {
            throw ServerError.cannotListen(host: options.host, port: options.port, reason: Self.describe(error))
        }
    }

    /// Waits for a shutdown to begin and the running requests to finish (or the time to run out:
    /// then their generations stop at the next token and their replies end as cut at length).
    private func drain() async throws {
        if try await !gate.drained(within: options.drainSeconds) {
            note("drain time over: stopping \(gate.inside) request(s)")
            engine.stopAll.set()
            _ = try await gate.drained(within: 5)
        }
        note("stopped")
    }

    /// SIGTERM and SIGINT begin a graceful shutdown (a second one stops generations at once).
    private func watchSignals() -> [any DispatchSourceSignal] {
        [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in shutDown() }
            source.resume()
            return source
        }
    }

    private static func describe(_ error: SocketAddressError) -> String {
        switch error {
        case .unknown: "unknown host"
        case .unsupported: "unsupported address family"
        case .unixDomainSocketPathTooLong: "socket path too long"
        case .failedToParseIPString(let s): "'\(s)' is not an IP address"
        }
    }

    private func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: chatPageHTML)))
        }
        router.get("/health") { [engine] _, _ in
            let idle = engine.slots.idleCount
            return jsonResponse(HealthReply(slotsIdle: idle, slotsProcessing: engine.slots.count - idle, requestsWaiting: engine.slots.waitingCount))
        }
        router.get("/metrics") { [self] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: metricsText())))
        }
        router.get("/v1/models") { [engine] _, _ in
            jsonResponse(ModelList(data: [.init(id: engine.modelName, meta: .init(contextLength: engine.contextLength,
                                                                                   vocabularySize: engine.model.config.vocabularySize))]))
        }
        router.post("/v1/chat/completions") { [self] request, _ in try await complete(request, chat: true) }
        router.post("/v1/completions") { [self] request, _ in try await complete(request, chat: false) }
        router.post("/chat/completions") { [self] request, _ in try await complete(request, chat: true) }
        router.post("/completions") { [self] request, _ in try await complete(request, chat: false) }
        router.post("/tokenize") { [self] request, _ in try await tokenize(request) }
        router.post("/detokenize") { [self] request, _ in try await detokenize(request) }
        router.get("/tokenizer_info") { [self] _, _ in tokenizerInfo() }
    }

    func metricsText() -> String {
        let idle = engine.slots.idleCount
        let kv = engine.kvCacheBytes
        return engine.metrics.render(.init(requestsWaiting: engine.slots.waitingCount, slotsBusy: engine.slots.count - idle,
                                           slots: engine.slots.count, requestsInFlight: gate.inside,
                                           kvCacheBytes: kv.used, kvCacheCapacityBytes: kv.capacity,
                                           kvBudgetBytes: engine.kvBudgetBytes, kvBudgetUsedBytes: engine.kvBudgetUsedBytes,
                                           sequencesResident: engine.sequencesResident))
    }
}
