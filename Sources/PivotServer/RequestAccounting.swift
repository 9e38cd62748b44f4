import Foundation
import Hummingbird
import HTTPTypes
import Synchronization

/// What one request did, filled in as it runs: the route writes its token counts when generation
/// ends, the accounting middleware the rest when the response has been written.
final class RequestRecord: Sendable {
    /// The record of the request a route is answering.
    @TaskLocal static var current: RequestRecord?

    struct Tokens {
        var prompt: Int
        var generated: Int
        var firstTokenSeconds: Double?
    }

    let id: String
    let arrival = DispatchTime.now().uptimeNanoseconds
    private let tokens = Mutex<Tokens?>(nil)

    init() {
        id = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(24).description
    }

    func finish(_ completion: Completion) {
        tokens.withLock { $0 = Tokens(prompt: completion.promptTokens, generated: completion.completionTokens,
                                      firstTokenSeconds: completion.firstTokenSeconds) }
    }

    /// One logfmt line: `request=… endpoint=… status=… prompt_tokens=… generated_tokens=… ttft_s=… total_s=…`.
    func line(endpoint: String, status: Int) -> String {
        let total = Double(DispatchTime.now().uptimeNanoseconds - arrival) / 1e9
        var fields = ["request=\(id)", "endpoint=\(endpoint)", "status=\(status)"]
        if let t = tokens.withLock({ $0 }) {
            fields += ["prompt_tokens=\(t.prompt)", "generated_tokens=\(t.generated)"]
            if let ttft = t.firstTokenSeconds { fields.append("ttft_s=" + String(format: "%.3f", ttft)) }
        }
        fields.append("total_s=" + String(format: "%.3f", total))
        return fields.joined(separator: " ")
    }
}

/// The outermost middleware: admits a request unless the server is draining (then 503), counts it
/// in /metrics by route and status, and logs one line on stderr once its response — a stream
/// too — has been written.
struct RequestAccountingMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics
    let gate: DrainGate
    let logLines: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let record = RequestRecord()
        guard gate.enter() else {
            done(record, endpoint: request.uri.path, status: APIError.shuttingDown.status.code)
            return APIError.shuttingDown.response
        }
        var response: Response
        do {
            response = try await RequestRecord.$current.withValue(record) { try await next(request, context) }
        } catch {
            // The error middleware inside turns every error into a response; this is a safety net.
            response = APIError(error).response
        }
        response.headers[HTTPField.Name("X-Request-Id")!] = record.id
        // The matched route's path; Hummingbird names a miss "NotFound", and a request refused before routing has none.
        let endpoint = context.endpointPath.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "unmatched"
        let status = response.status.code
        let body = response.body
        response.body = ResponseBody(contentLength: body.contentLength) { [self] writer in
            do {
                try await body.write(writer)
            } catch {
                gate.leave()
                done(record, endpoint: endpoint, status: status)
                throw error
            }
            gate.leave()
            done(record, endpoint: endpoint, status: status)
        }
        return response
    }

    private func done(_ record: RequestRecord, endpoint: String, status: Int) {
        metrics.countRequest(endpoint: endpoint, status: status)
        if logLines { FileHandle.standardError.write(Data((record.line(endpoint: endpoint, status: status) + "\n").utf8)) }
    }
}
