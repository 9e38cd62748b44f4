import Foundation
import Hummingbird
import Logging
import NIOCore
import Pivot

/// Where and how `pivot serve` listens.
public struct ServerOptions: Sendable {
    public var host: String
    public var port: Int
    /// Requests that may wait for a slot before new ones get 503.
    public var queueLimit: Int
    /// Largest request body accepted (413 beyond).
    public var maxBodyBytes: Int
    /// Hummingbird's own log lines (start, shutdown) only when critical.
    public var quiet: Bool

    public init(host: String = "127.0.0.1", port: Int = 8080, queueLimit: Int = 64, maxBodyBytes: Int = 1 << 20, quiet: Bool = false) {
        self.host = host; self.port = port; self.queueLimit = queueLimit; self.maxBodyBytes = maxBodyBytes; self.quiet = quiet
    }
}

/// An OpenAI-compatible HTTP server over one model: /v1/chat/completions, /v1/completions
/// (both with server-sent-event streaming), /v1/models, /health and a chat page at /.
public final class PivotServer: Sendable {
    let engine: Engine
    let options: ServerOptions

    /// `generators`: one per slot, each with its own KV cache, all over `model` and one thread pool.
    public init(model: LoadedModel, modelName: String, generators: [Generator], options: ServerOptions = ServerOptions()) {
        precondition(!generators.isEmpty)
        engine = Engine(model: model, modelName: modelName, generators: generators, queueLimit: options.queueLimit)
        self.options = options
    }

    /// Serves until the task is cancelled (or SIGINT/SIGTERM); `onListening` gets the bound port
    /// (useful with port 0). Throws `ServerError` when it cannot listen.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        router.middlewares.add(OpenAIErrorMiddleware())
        addRoutes(to: router)
        var logger = Logger(label: "pivot")
        logger.logLevel = options.quiet ? .critical : .info
        let app = Application(router: router,
                              configuration: .init(address: .hostname(options.host, port: options.port), serverName: "pivot"),
                              onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) }, logger: logger)
        do {
            try await app.runService()
        } catch let error as IOError {
            // Socket errors reach here only from binding: once listening, Hummingbird logs them.
            throw error.errnoCode == EADDRINUSE
                ? ServerError.portInUse(host: options.host, port: options.port)
                : ServerError.cannotListen(host: options.host, port: options.port, reason: String(cString: strerror(error.errnoCode)))
        } catch let error as SocketAddressError {
            throw ServerError.cannotListen(host: options.host, port: options.port, reason: Self.describe(error))
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
        router.get("/v1/models") { [engine] _, _ in
            jsonResponse(ModelList(data: [.init(id: engine.modelName, meta: .init(contextLength: engine.contextLength,
                                                                                   vocabularySize: engine.model.config.vocabularySize))]))
        }
        router.post("/v1/chat/completions") { [self] request, _ in try await complete(request, chat: true) }
        router.post("/v1/completions") { [self] request, _ in try await complete(request, chat: false) }
        router.post("/chat/completions") { [self] request, _ in try await complete(request, chat: true) }
        router.post("/completions") { [self] request, _ in try await complete(request, chat: false) }
    }

    /// Validates the request, waits for a slot and answers as one JSON object or as a stream.
    private func complete(_ request: Request, chat: Bool) async throws -> Response {
        let body = try await request.body.collect(upTo: options.maxBodyBytes)
        let model = engine.model
        let text: String, sampling: SamplingRequest
        if chat {
            let request = try decodeRequest(ChatCompletionRequest.self, from: Data(buffer: body))
            sampling = try request.sampling.validated(contextLength: engine.contextLength)
            text = model.chatTemplate.render(request.messages.map(\.chatMessage))
        } else {
            let request = try decodeRequest(CompletionRequest.self, from: Data(buffer: body))
            sampling = try request.sampling.validated(contextLength: engine.contextLength)
            text = request.prompt.text
        }
        let prompt = model.tokenizer.encode(text)
        guard !prompt.isEmpty else { throw APIError.invalid("The prompt is empty.", param: chat ? "messages" : "prompt") }
        // The prompt plus at least one generated token must fit.
        guard prompt.count < engine.contextLength - 1 else {
            throw APIError.invalid("This model's context is \(engine.contextLength) tokens, but the prompt has \(prompt.count).",
                                   param: chat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        let room = engine.contextLength - 1 - prompt.count
        let sampler = model.generationDefaults.sampler(temperature: sampling.temperature, topP: sampling.topP,
                                                        seed: sampling.seed ?? UInt64.random(in: 0...UInt64.max))
        let job = GenerationJob(prompt: prompt, maxTokens: min(sampling.maxTokens ?? room, room), sampler: sampler,
                                stop: sampling.stop, ignoreEOS: sampling.ignoreEOS)
        let slot = try await engine.slots.acquire(prompt: prompt)
        let cancel = CancelFlag()
        let events = engine.start(job, slot: slot, cancel: cancel)
        let reply = ReplyFormat(chat: chat, model: engine.modelName)
        if sampling.stream {
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody { writer in
                                do {
                                    try await reply.stream(events, includeUsage: sampling.includeUsage, into: &writer)
                                } catch {
                                    cancel.set()
                                    throw error
                                }
                            })
        }
        // A whole reply is still sent as a stream: a space (JSON allows leading whitespace) every
        // half second while generating, so a client that has gone away is noticed at the next write
        // and its slot freed, as with streaming.
        return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody { writer in
            do {
                var text = ""
                var lastWrite = Date()
                for await event in events {
                    switch event {
                    case .text(let piece):
                        text += piece
                        if Date().timeIntervalSince(lastWrite) > 0.5 {
                            try await writer.write(ByteBuffer(string: " "))
                            lastWrite = Date()
                        }
                    case .finished(let completion):
                        try await writer.write(ByteBuffer(bytes: jsonData(reply.whole(text: text, completion: completion))))
                    }
                }
                try await writer.finish(nil)
            } catch {
                cancel.set()
                throw error
            }
        })
    }
}
