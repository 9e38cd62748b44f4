import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// An error in the shape OpenAI's API returns:
/// `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}` with a matching status.
struct APIError: Error, Equatable {
    var status: HTTPResponse.Status
    var message: String
    var type: String
    var param: String?
    var code: String?

    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    static let busy = APIError(status: .serviceUnavailable, message: "The server is busy: every slot is generating and the queue is full. Retry later.",
                               type: "server_error", code: "server_busy")

    static let unauthorized = APIError(status: .unauthorized, message: "Missing or wrong API key: send the header 'Authorization: Bearer KEY'.",
                                       type: "invalid_request_error", code: "invalid_api_key")

    static let shuttingDown = APIError(status: .serviceUnavailable, message: "The server is shutting down and takes no new requests.",
                                       type: "server_error", code: "shutting_down")

    static let notFound = APIError(status: .notFound, message: "Unknown route.", type: "invalid_request_error", code: "not_found")

    static let tooLarge = APIError(status: .contentTooLarge, message: "The request body is larger than the server accepts (--max-body).",
                                   type: "invalid_request_error", code: "request_too_large")

    static let methodNotAllowed = APIError(status: .methodNotAllowed, message: "Method not allowed on this route.", type: "invalid_request_error")

    var response: Response { jsonResponse(ErrorBody(error: self), status: status) }
}

extension APIError {
    /// Whatever a route threw — our own errors, Hummingbird's (no route, body too large) or an
    /// unexpected one — as what the client is told. The one place errors become responses.
    init(_ error: any Error) {
        switch error {
        case let error as APIError: self = error
        case SlotPoolError.queueFull: self = .busy
        case is NIOTooManyBytesError: self = .tooLarge
        // The client's request was cut off or is not HTTP (a body shorter than its Content-Length, then EOF).
        case is HTTPParserError:
            self = APIError(status: .badRequest, message: "The request was cut off or is not valid HTTP: \(error).", type: "invalid_request_error")
        case let error as HTTPError:
            switch error.status {
            case .notFound: self = .notFound
            case .contentTooLarge: self = .tooLarge
            case .methodNotAllowed: self = .methodNotAllowed
            default: self = APIError(status: error.status, message: error.body ?? error.status.reasonPhrase, type: "invalid_request_error")
            }
        default: self = APIError(status: .internalServerError, message: "Internal error: \(error)", type: "server_error")
        }
    }
}

/// The wire form of an `APIError`; `param` and `code` are always present, null when unset.
struct ErrorBody: Encodable {
    var error: APIError

    enum CodingKeys: String, CodingKey { case error }
    enum DetailKeys: String, CodingKey { case message, type, param, code }

    func encode(to encoder: Encoder) throws {
        var outer = encoder.container(keyedBy: CodingKeys.self)
        var detail = outer.nestedContainer(keyedBy: DetailKeys.self, forKey: .error)
        try detail.encode(error.message, forKey: .message)
        try detail.encode(error.type, forKey: .type)
        try detail.encode(error.param, forKey: .param)
        try detail.encode(error.code, forKey: .code)
    }
}

/// Sends every error a route throws as OpenAI's error shape, so a client always gets JSON it can parse.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return APIError(error).response
        }
    }
}

/// Encodes a reply; keys sorted so responses are stable. Encoding fails only on a non-finite
/// number, which no reply holds.
func jsonData(_ value: some Encodable) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(value)) ?? Data("{}".utf8)
}

func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: jsonData(value))))
}
