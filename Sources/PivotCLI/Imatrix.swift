import ArgumentParser
import Foundation
import Pivot
import PivotKernels

/// Calibration options shared by `imatrix` and `quantize --calib`.
struct CalibrationOptions: ParsableArguments {
    @Option(name: .customLong("calib-ctx"), parsing: .unconditional, help: "Calibration chunk length in tokens (each chunk starts from an empty cache, as llama-imatrix's --ctx-size).")
    var chunkLength: Int = 512

    @Option(name: .customLong("calib-chunks"), parsing: .unconditional, help: "Use at most this many chunks of the calibration text (default: all for an importance matrix, 128 for GPTQ).")
    var chunks: Int?

    func validate() throws {
        try checkRange("--calib-ctx", chunkLength, 16...8192)
        if let chunks { try checkRange("--calib-chunks", chunks, 1...Int.max) }
    }

    /// The calibration text in `loaded`'s tokens (no BOS, as llama-imatrix reads it).
    func tokens(_ loaded: LoadedModel, file: String) throws -> [Int] {
        loaded.tokenizer.encode(try readTextFile(file), addBOS: false)
    }

    /// Runs `loaded` over `file` and returns its importance matrix, with a progress bar.
    func collect(_ loaded: LoadedModel, file: String, pool: ThreadPool) throws -> ImportanceMatrix {
        let tokens = try tokens(loaded, file: file)
        let total = min(chunks ?? Int.max, tokens.count / chunkLength)
        writeErr("\(file): \(tokens.count) tokens, \(total) chunks of \(chunkLength) for the importance matrix\n")
        let bar = ProgressBar(total: total, label: "imatrix")
        let matrix = try ImportanceMatrix.collect(model: loaded, tokens: tokens, contextLength: chunkLength, chunks: chunks,
                                                  dataset: (file as NSString).lastPathComponent, execution: Execution(pool: pool)) { done, _ in bar.update(done) }
        bar.finish()
        return matrix
    }

    /// Runs `loaded` over `tokens` (of `file`) and returns every projection input's Hessian Σxxᵀ (for GPTQ).
    func collectHessians(_ loaded: LoadedModel, tokens: [Int], file: String, pool: ThreadPool) throws -> [String: InputHessian] {
        let total = min(chunks ?? 128, tokens.count / chunkLength)
        writeErr("\(file): \(tokens.count) tokens, \(total) chunks of \(chunkLength) for the GPTQ Hessians\n")
        let bar = ProgressBar(total: total, label: "hessians")
        let hessians = try HessianCollector.collect(model: loaded, tokens: tokens, contextLength: chunkLength, chunks: total, pool: pool) { done, _ in
            bar.update(done)
        }
        bar.finish()
        return hessians
    }
}

struct Imatrix: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compute an importance matrix (llama.cpp's imatrix) from calibration text.",
        discussion: """
        For every projection of every block, the sum of x² of its inputs per column over the calibration tokens. Written in \
        llama-imatrix's GGUF form, so `llama-quantize --imatrix` reads it, and `pivot quantize --imatrix` reads llama-imatrix's. \
        Calibrate on text you will not evaluate on (the default calibration.txt is the second half of wikitext-2 test; \
        evaluation uses its first windows).
        """)

    @OptionGroup(title: "Model") var model: ModelOptions

    @Option(name: [.customShort("f"), .customLong("file")], help: "Calibration text file.")
    var file: String

    @Option(name: [.customShort("o"), .customLong("output")], help: "Output file (GGUF).")
    var output: String = "imatrix.gguf"

    @OptionGroup(title: "Calibration") var calibration: CalibrationOptions

    func validate() throws { try OutputPath.check(output, flag: "--output") }

    func run() throws {
        let loaded = try model.load()
        let start = Date()
        let matrix = try calibration.collect(loaded, file: file, pool: model.makePool())
        try matrix.write(to: output)
        print(String(format: "%@: %d tensors, %d chunks of %d tokens (%.1f s)", output, matrix.entries.count, matrix.chunkCount,
                     matrix.chunkSize, Date().timeIntervalSince(start)))
    }
}
