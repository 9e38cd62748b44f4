/// Why `pivot serve` could not start listening. The description is the one line the CLI prints,
/// instead of the socket library's error.
public enum ServerError: Error, CustomStringConvertible, Equatable {
    case portInUse(host: String, port: Int)
    case cannotListen(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case .portInUse(let host, let port):
            "pivot serve: port \(port) is already in use on \(host) (choose another with --port)"
        case .cannotListen(let host, let port, let reason):
            "pivot serve: cannot listen on \(host):\(port): \(reason)"
        }
    }
}
