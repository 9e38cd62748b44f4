import ArgumentParser
import Foundation
import Pivot

/// Output files are checked before any work: their folder is created if missing, and refused (one
/// clear line naming the flag) when it cannot be created or written, so nothing computed is lost.
enum OutputPath {
    static func check(_ path: String?, flag: String, directory: Bool = false) throws {
        guard let path else { return }
        let folder = directory ? path : (path as NSString).deletingLastPathComponent
        let target = folder.isEmpty ? "." : folder
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw ValidationError("\(flag) \(path): \(target) is not a folder") }
        } else {
            do { try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true) } catch {
                throw ValidationError("\(flag) \(path): cannot create the folder \(target) (\(reason(error)))")
            }
        }
        // access() says yes to root on /proc and read-only mounts: only a real file proves the folder takes one.
        let probe = (target as NSString).appendingPathComponent(".pivot-write-check-\(getpid())")
        guard FileManager.default.createFile(atPath: probe, contents: Data()) else {
            throw ValidationError("\(flag) \(path): cannot write in the folder \(target)")
        }
        try? FileManager.default.removeItem(atPath: probe)
        if !directory, FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ValidationError("\(flag) \(path): is a folder, not a file")
        }
    }

    /// Writes `data` atomically, as one clear error on failure.
    static func write(_ data: Data, to path: String) throws {
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw PivotError.cannotWrite(path, reason(error))
        }
    }

    /// The short reason of a Foundation error (never its whole dump).
    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if ns.domain == NSCocoaErrorDomain {
            switch ns.code {
            case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file or directory"
            case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return "permission denied"
            case NSFileWriteOutOfSpaceError: return "no space left on the device"
            case NSFileWriteVolumeReadOnlyError: return "read-only file system"
            default: break
            }
        }
        return ns.localizedFailureReason ?? ns.localizedDescription
    }
}
