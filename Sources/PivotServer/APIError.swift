import Foundation
import Hummingbird
import NIOCore

/// An error in the shape OpenAI's API returns:
/// `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}` with a matching status.
struct APIError: Error, HTTPResponseError {
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

    static let notFound = APIError(status: .notFound, message: "Unknown route.", type: "invalid_request_error", code: "not_found")

    var body: [String: Any] {
        ["error": ["message": message, "type": type, "param": param ?? NSNull(), "code": code ?? NSNull()] as [String: Any]]
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        jsonResponse(body, status: status)
    }
}

/// Turns every error a route throws — Hummingbird's own (no route, body too large) and any
/// unexpected one — into OpenAI's error shape, so a client always gets JSON it can parse.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    static var tooLarge: APIError {
        APIError(status: .contentTooLarge, message: "The request body is larger than the server accepts (--max-body).",
                 type: "invalid_request_error", code: "request_too_large")
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return jsonResponse(error.body, status: error.status)
        } catch let error as HTTPError {
            let apiError: APIError
            switch error.status {
            case .notFound: apiError = .notFound
            case .contentTooLarge: apiError = Self.tooLarge
            case .methodNotAllowed:
                apiError = APIError(status: .methodNotAllowed, message: "Method not allowed on this route.", type: "invalid_request_error")
            default:
                apiError = APIError(status: error.status, message: error.body ?? error.status.reasonPhrase, type: "invalid_request_error")
            }
            return jsonResponse(apiError.body, status: apiError.status)
        } catch is NIOTooManyBytesError {
            return jsonResponse(Self.tooLarge.body, status: Self.tooLarge.status)
        } catch {
            return jsonResponse(APIError(status: .internalServerError, message: "Internal error: \(error)", type: "server_error").body,
                                status: .internalServerError)
        }
    }
}

/// Serializes a JSON object; keys sorted so responses are stable.
func jsonData(_ object: Any) -> Data {
    (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
}

func jsonResponse(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: jsonData(object))))
}
