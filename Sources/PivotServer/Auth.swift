import Foundation
import Hummingbird

/// `--api-key`: every route except /health (for load balancers' probes) and the chat page at /
/// (static HTML that asks for the key itself) needs `Authorization: Bearer KEY`.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: [UInt8]
    static var openPaths: Set<String> { ["/health", "/"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Self.openPaths.contains(request.uri.path) || presentedKey(request).map({ constantTimeEquals($0, key) }) == true else {
            throw APIError.unauthorized
        }
        return try await next(request, context)
    }

    private func presentedKey(_ request: Request) -> [UInt8]? {
        guard let value = request.headers[.authorization] else { return nil }
        let scheme = "bearer "
        guard value.count > scheme.count, value.prefix(scheme.count).lowercased() == scheme else { return nil }
        return Array(value.dropFirst(scheme.count).trimmingCharacters(in: .whitespaces).utf8)
    }
}

/// Compares two byte strings in time that depends only on their lengths, so the time a wrong key
/// takes to refuse says nothing about how many of its leading bytes were right.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    if a.count != b.count { difference |= 1 }
    // Over the longer length, reading a zero past the end of the shorter one.
    for i in 0..<max(a.count, b.count) {
        difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return difference == 0
}
