import ArgumentParser
import Pivot

@main
struct PivotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pivot",
        abstract: "Run, compress and evaluate Llama-family language models on the CPU.",
        subcommands: [Generate.self, Chat.self, Perplexity.self, Eval.self, KLD.self, AttentionMap.self, Quantize.self, Convert.self, Imatrix.self, Serve.self, Bench.self, Inspect.self, Tokenize.self])
}

