import Foundation

/// A UTF-8 text file (calibration text, a task file, a text to score), or one clear error naming it.
public func readTextFile(_ path: String) throws -> String {
    guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw PivotError.cannotRead(path, "not UTF-8 text") }
    return text
}
