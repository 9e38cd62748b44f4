import Foundation

/// Where models and data are found, from any working directory: `$PIVOT_MODELS` / `$PIVOT_DATA`,
/// the cache folder `~/.cache/pivot` (`$PIVOT_CACHE`) that scripts/fetch-model.sh fills, `./models`,
/// and `shared/` beside the checkout the running binary was built in (then beside the working directory).
public enum ModelLocator {
    public static let defaultModelName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// `$PIVOT_CACHE`, else `$XDG_CACHE_HOME/pivot`, else `~/.cache/pivot`.
    public static var cacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["PIVOT_CACHE"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/pivot" }
        return NSHomeDirectory() + "/.cache/pivot"
    }

    /// The checkouts this process can see: the one holding the executable (…/.build/release/pivot), and the working directory.
    static var checkoutDirectories: [String] {
        var dirs: [String] = []
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        var dir = executable.deletingLastPathComponent()
        for _ in 0..<4 {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { dirs.append(dir.path); break }
            dir = dir.deletingLastPathComponent()
        }
        dirs.append(FileManager.default.currentDirectoryPath)
        return dirs
    }

    public static var searchDirectories: [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["PIVOT_MODELS"], !env.isEmpty { dirs.append(env) }
        dirs.append(cacheDirectory + "/models")
        for checkout in checkoutDirectories {
            dirs += [checkout + "/models", (checkout as NSString).deletingLastPathComponent + "/shared/models"]
        }
        return dirs
    }

    /// Folders holding the evaluation task files (`hellaswag_validation.jsonl`, ...).
    public static var dataDirectories: [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["PIVOT_DATA"], !env.isEmpty { dirs.append(env) }
        dirs.append(cacheDirectory + "/data/eval")
        for checkout in checkoutDirectories { dirs.append((checkout as NSString).deletingLastPathComponent + "/shared/data/eval") }
        return dirs
    }

    /// `shared/data/NAME` beside the checkout (or the working directory), e.g. the calibration text that
    /// pruning and the shortlist default to; nil when absent.
    public static func sharedDataFile(_ name: String) -> String? {
        checkoutDirectories.map { (($0 as NSString).deletingLastPathComponent as NSString).appendingPathComponent("shared/data/" + name) }
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The first data folder that holds `file`.
    public static func dataDirectory(containing file: String) -> String? {
        dataDirectories.first { FileManager.default.fileExists(atPath: ($0 as NSString).appendingPathComponent(file)) }
    }

    /// "NAME: no such file or directory (looked in: …)", so a bare name that is not found says where it was looked for.
    public static func notFound(_ name: String?, context: String? = nil) -> PivotError {
        let wanted = name ?? defaultModelName
        var message = wanted + ": no such model file or folder" + (context.map { " (\($0))" } ?? "")
        if !wanted.contains("/") {
            var seen = Set<String>()
            let folders = ([FileManager.default.currentDirectoryPath] + searchDirectories).filter { seen.insert($0).inserted }
            message += "; looked in " + folders.joined(separator: ", ")
        }
        if name == nil { message += "; run scripts/fetch-model.sh to download the default model" }
        return PivotError.invalidArgument(message)
    }

    public static func resolve(_ name: String?) -> String? {
        let wanted = name ?? defaultModelName
        if FileManager.default.fileExists(atPath: wanted) { return wanted }
        if wanted.contains("/") && name != nil { return nil }
        for dir in searchDirectories {
            let candidate = (dir as NSString).appendingPathComponent(wanted)
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return nil
    }
}
