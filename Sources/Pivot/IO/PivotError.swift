/// Every user-facing failure: a message that names the file and the problem.
public enum PivotError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(String)
    case cannotRead(String, String)
    case malformed(file: String, String)
    case unsupported(file: String, String)
    case missingTensor(file: String, String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case invalidArgument(String)
    /// An output that cannot be written (checked before the work where possible).
    case cannotWrite(String, String)
    /// A run produced non-finite numbers: the weights (or an option) are broken, not the text.
    case nonFinite(file: String, String)

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
        case .cannotWrite(let path, let why): return "\(path): cannot write: \(why)"
        case .nonFinite(let file, let why): return "\(file): \(why): the file is corrupt or its weights are broken (try `pivot inspect --check`)"
        }
    }
}
