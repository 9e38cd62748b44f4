import ArgumentParser
import Pivot

public struct PivotCommand: AsyncParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        commandName: "pivot",
        abstract: "Run, compress and evaluate Llama-family language models on the CPU.",
        subcommands: [Generate.self, Chat.self, Perplexity.self, Eval.self, KLD.self, AttentionMap.self, Quantize.self, Convert.self, Imatrix.self, Serve.self, Bench.self, Inspect.self, Tokenize.self])
}

