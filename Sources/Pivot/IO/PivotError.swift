/// Every user-facing failure: a message that names the file and the problem.
public enum PivotError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(String)
    case cannotRead(String, String)
    case malformed(file: String, String)
    case unsupported(file: String, String)
    case missingTensor(file: String, String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .fileNotFound(let path): return "\(path): no such file or directory"
        case .cannotRead(let path, let why): return "\(path): cannot read: \(why)"
        case .malformed(let file, let why): return "\(file): malformed file: \(why)"
        case .unsupported(let file, let why): return "\(file): unsupported: \(why)"
        case .missingTensor(let file, let name): return "\(file): missing tensor '\(name)'"
        case .shapeMismatch(let file, let tensor, let expected, let found):
            return "\(file): tensor '\(tensor)' has shape \(found), expected \(expected)"
        case .invalidArgument(let why): return why
        }
    }
}
