import ArgumentParser
import Foundation
import Pivot

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a GGUF file in another type, with llama.cpp's per-tensor rules, readable by llama.cpp.",
        discussion: """
        Types: \(QuantizePipeline.FileType.all.map(\.name).joined(separator: ", ")) (ggml's round-to-nearest, byte-identical \
        to llama-quantize without an importance matrix). Every projection gets the type; norms stay F32; the output head \
        (the tied embedding here) gets Q6_K — Q8_0 in a Q8_0 file — and falls back to Q8_0 on rows that are not a multiple \
        of 256, as llama.cpp does. An already quantized input is dequantized first. K-quant types and mixes (Q4_K_M, ...) \
        are not written yet.
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "Input .gguf file (or a name looked up like every verb's -m).")
    var input: String?

    @Option(name: [.customShort("o"), .customLong("output")], help: "Output .gguf file (written under a temporary name, then renamed).")
    var output: String

    @Option(help: "Target type.")
    var type: String

    func validate() throws {
        guard QuantizePipeline.FileType.named(type) != nil else {
            throw ValidationError("unknown --type '\(type)' (available: \(QuantizePipeline.FileType.all.map(\.name).joined(separator: ", ")))")
        }
    }

    func run() throws {
        guard let path = ModelLocator.resolve(input) else { throw PivotError.fileNotFound(input ?? ModelLocator.defaultModelName) }
        var isDirectory: ObjCBool = false
        guard !(FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue) else {
            throw ValidationError("\(path) is a folder: HuggingFace input is not supported by quantize yet (use --quantize-on-load to run it quantized)")
        }
        let fileType = QuantizePipeline.FileType.named(type)!
        let source = try GGUFFile(path: path)
        let quantizedTypes = Set(source.tensors.values.compactMap { t -> String? in if case .block(let f) = t.type { return f.name }; return nil })
        if !quantizedTypes.isEmpty {
            writeErr("note: \(path) is already quantized (\(quantizedTypes.sorted().joined(separator: ", "))); its weights are dequantized and requantized, which compounds the error\n")
        }
        let bar = ProgressBar(total: source.tensorOrder.count, label: "quantize")
        let start = Date()
        let choices = try QuantizePipeline.run(input: path, output: output, fileType: fileType) { done, _, _ in bar.update(done) }
        bar.finish()
        var counts: [String: Int] = [:]
        for c in choices { counts["\(c.to)", default: 0] += 1 }
        let size = (try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("\(output): \(String(format: "%.2f", Double(size) / 1_048_576)) MiB, " + counts.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
              + String(format: " (%.1f s)", Date().timeIntervalSince(start)))
    }
}
