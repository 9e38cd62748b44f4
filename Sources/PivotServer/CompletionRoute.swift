import Foundation
import Hummingbird
import Pivot

extension PivotServer {
    /// Validates the request, waits for a slot and answers as one JSON object or as a stream.
    func complete(_ request: Request, chat: Bool) async throws -> Response {
        let body = try await request.body.collect(upTo: options.maxBodyBytes)
        let model = engine.model
        var text: String, sampling: SamplingRequest, logprobs: Int?, echo: Bool, given: [Int]? = nil
        if chat {
            let request = try decodeRequest(ChatCompletionRequest.self, from: Data(buffer: body))
            sampling = try request.sampling.validated(contextLength: engine.contextLength)
            logprobs = try request.validatedLogprobs()
            echo = false
            text = model.chatTemplate.render(request.messages.map(\.chatMessage))
        } else {
            let request = try decodeRequest(CompletionRequest.self, from: Data(buffer: body))
            echo = request.echo ?? false
            sampling = try request.sampling.validated(contextLength: engine.contextLength, allowNoTokens: echo)
            logprobs = try request.validatedLogprobs()
            text = request.prompt.text
            given = request.prompt.tokens
        }
        let vocabulary = model.config.vocabularySize
        if let given, let bad = given.first(where: { $0 >= vocabulary }) {
            throw APIError.invalid("Token id \(bad) in the prompt is outside the vocabulary of \(vocabulary).", param: "prompt")
        }
        if let given { text = model.tokenizer.decode(given, skipSpecial: false) }
        let prompt = given ?? model.tokenizer.encode(text)
        guard !prompt.isEmpty else { throw APIError.invalid("The prompt is empty.", param: chat ? "messages" : "prompt") }
        // The prompt plus at least one generated token must fit.
        guard prompt.count < engine.contextLength - 1 else {
            throw APIError.invalid("This model's context is \(engine.contextLength) tokens, but the prompt has \(prompt.count).",
                                   param: chat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        let room = engine.contextLength - 1 - prompt.count
        let sampler = model.generationDefaults.sampler(temperature: sampling.temperature, topP: sampling.topP,
                                                        seed: sampling.seed ?? UInt64.random(in: 0...UInt64.max))
        let record = RequestRecord.current
        var job = GenerationJob(prompt: prompt, maxTokens: min(sampling.maxTokens ?? room, room), sampler: sampler,
                                stop: sampling.stop, ignoreEOS: sampling.ignoreEOS, logprobs: logprobs, echo: echo && logprobs != nil)
        if let record { job.arrival = record.arrival }
        // The prompt and one generated token must fit in the KV budget, or the request could never run.
        guard prompt.count + 1 <= engine.kvBudgetTokens else {
            throw APIError.invalid(String(format: "The prompt's %d tokens need %.1f MiB of KV cache, more than the server's --kv-budget of %.1f MiB.",
                                          prompt.count, Double(prompt.count + 1) * engine.budgetBytesPerToken / 1_048_576,
                                          engine.kvBudgetBytes / 1_048_576), param: chat ? "messages" : "prompt", code: "kv_budget_exceeded")
        }
        let slot = try await engine.slots.acquire(prompt: prompt)
        let cancel = CancelFlag()
        let events = engine.start(job, slot: slot, cancel: cancel)
        let reply = ReplyFormat(chat: chat, model: engine.modelName, requestID: record?.id ?? RequestRecord().id,
                                logprobs: logprobs != nil, tokens: TokenText(tokenizer: model.tokenizer))
        let echoed = echo ? text : nil
        let stream = sampling.stream, includeUsage = sampling.includeUsage
        let headers: HTTPFields = stream ? [.contentType: "text/event-stream", .cacheControl: "no-cache"] : [.contentType: "application/json"]
        // A whole reply is still sent as a stream (see `ReplyFormat.whole`), so a client that has gone
        // away is noticed and its slot freed, as with streaming.
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            do {
                if stream {
                    try await reply.stream(events, echo: echoed, includeUsage: includeUsage, record: record, into: &writer)
                } else {
                    try await reply.whole(events, echo: echoed, record: record, into: &writer)
                }
            } catch {
                cancel.set()
                throw error
            }
        })
    }
}
