import ArgumentParser
import Foundation
import Pivot

public struct PivotCommand: AsyncParsableCommand {
    public init() {}
    public static let version = "0.20.0"
    public static let configuration = CommandConfiguration(
        commandName: "pivot",
        abstract: "Run, compress and evaluate Llama-family language models on the CPU.",
        discussion: "Environment: PIVOT_ISA=avx512|avxvnni|avx2|portable chooses the kernel path (default: the best this CPU runs; `pivot bench` shows it).",
        version: version,
        subcommands: [Generate.self, Chat.self, Perplexity.self, Eval.self, KLD.self, AttentionMap.self, Quantize.self, Intact.self, Convert.self, Imatrix.self,
                      Serve.self, Bench.self, Inspect.self, Tokenize.self, Train.self, Distill.self, Prune.self])

    static var verbs: [String] { configuration.subcommands.map { $0._commandName } }

    /// Parses and runs `arguments`; every failure is one message on stderr and an exit code:
    /// 0 success, 64 a usage error (the verb's usage follows), 1 a runtime error (no usage).
    public static func run(arguments: [String]) async -> Int32 {
        if let message = unknownVerb(arguments) ?? unknownOption(arguments) {
            writeErr("pivot: \(message)\n")
            return ExitCode.validationFailure.rawValue
        }
        let command: ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if !message.isEmpty { (code == .success ? writeOut : writeErr)(message + "\n") }
            return code.rawValue
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand { try await asyncCommand.run() } else {
                var command = command
                try command.run()
            }
            return 0
        } catch let exit as ExitCode {
            return exit.rawValue
        } catch let error as ValidationError {
            writeErr("pivot \(type(of: command)._commandName): error: \(error.message)\n")
            return ExitCode.validationFailure.rawValue
        } catch let error as PivotError {
            writeErr("pivot \(type(of: command)._commandName): error: \(error.description)\n")
            return 1
        } catch where String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            // Help, version and clean exits travel as the parser's own errors.
            let code = exitCode(for: error), message = fullMessage(for: error)
            if !message.isEmpty { (code == .success ? writeOut : writeErr)(message + "\n") }
            return code.rawValue
        } catch {
            writeErr("pivot \(type(of: command)._commandName): error: \(OutputPath.reason(error))\n")
            return 1
        }
    }

    /// "unknown verb 'genrate'; did you mean 'generate'?", or nil when the first word is a verb or a flag.
    static func unknownVerb(_ arguments: [String]) -> String? {
        var words = arguments[...]
        if words.first == "help" { words = words.dropFirst(); if words.isEmpty { return nil } }
        guard let first = words.first, !first.hasPrefix("-"), !verbs.contains(first) else { return nil }
        return "unknown verb '\(first)'" + (Suggestion.closest(first, among: verbs).map { "; did you mean '\($0)'?" } ?? "")
            + " (verbs: \(verbs.joined(separator: ", ")))"
    }

    /// "unknown option '--limt' for 'eval'; did you mean '--limit'?": named before any argument is read
    /// (a misspelled option would otherwise be taken for a positional argument, e.g. a task).
    static func unknownOption(_ arguments: [String]) -> String? {
        guard let verb = arguments.first, let command = configuration.subcommands.first(where: { $0._commandName == verb }) else { return nil }
        let help = command.helpMessage(includeHidden: true, columns: 10_000)
        var known: [String: Bool] = ["--help": false, "-h": false]  // option → takes a value
        let pattern = try! NSRegularExpression(pattern: "(?<![\\w-])(--?[A-Za-z][\\w-]*)( <[^>]+>)?")
        for match in pattern.matches(in: help, range: NSRange(help.startIndex..., in: help)) {
            let name = String(help[Range(match.range(at: 1), in: help)!])
            known[name] = (known[name] ?? false) || match.range(at: 2).location != NSNotFound
        }
        var index = 1
        while index < arguments.count {
            let word = arguments[index]
            if word == "--" { return nil }
            let name = String(word.split(separator: "=", maxSplits: 1).first ?? "")
            if word.hasPrefix("--"), known[name] == nil {
                let suggestion = Suggestion.closest(name, among: Array(known.keys.filter { $0.hasPrefix("--") }))
                return "unknown option '\(name)' for '\(verb)'" + (suggestion.map { "; did you mean '\($0)'?" } ?? "") + " (see 'pivot \(verb) --help')"
            }
            index += known[name] == true && !word.contains("=") ? 2 : 1
        }
        return nil
    }

    /// The process entry point (`main.swift`): runs the command line and exits with its code.
    public static func start() async {
        let code = await run(arguments: Array(CommandLine.arguments.dropFirst()))
        Foundation.exit(code)
    }
}

/// "Did you mean" for verbs, tasks and types: the closest name within a small edit distance.
enum Suggestion {
    static func closest(_ word: String, among names: [String]) -> String? {
        let scored = names.map { ($0, distance(word.lowercased(), $0.lowercased())) }.min { $0.1 < $1.1 }
        guard let (name, d) = scored, d <= max(2, word.count / 3) else { return nil }
        return name
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
}
