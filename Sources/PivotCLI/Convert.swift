import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a HuggingFace folder to a GGUF file that llama.cpp, ollama and Pivot load.",
        discussion: """
        Reads config.json (every form transformers writes), the safetensors (single or sharded, F32/F16/BF16) and \
        tokenizer.json (byte-level BPE), and writes llama.cpp's metadata keys and tensor names: Llama/Mistral Q/K rows \
        permuted for pairwise RoPE as llama.cpp's converter does, Qwen2/Qwen3 unchanged, the vocabulary with merges, \
        token types, BOS/EOS and the chat template. --type F32, F16 or BF16 writes the projections in that type (norms \
        stay F32); a quantized type (Q8_0, Q4_K_M, ...) converts to F32 first, then quantizes with llama.cpp's rules \
        exactly as `pivot quantize` does.
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "HuggingFace folder (config.json, *.safetensors, tokenizer.json).")
    var input: String

    @Option(name: [.customShort("o"), .customLong("output")], help: "Output .gguf file (written under a temporary name, then renamed).")
    var output: String

    @Option(help: "F32, F16 (default), BF16, or a quantized type: \(QuantizeFileType.all.filter { $0.base != nil }.map(\.name).joined(separator: ", ")).")
    var type: QuantizeFileType = .named("F16")!

    @Option(name: [.customShort("t"), .customLong("threads")], parsing: .unconditional, help: "Worker threads for quantized types, 1-256 (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads { try checkRange("--threads", threads, 1...256) }
        try OutputPath.check(output, flag: "--output")
    }

    func run() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory) else { throw PivotError.fileNotFound(input) }
        guard isDirectory.boolValue else { throw ValidationError("\(input) is a file: convert reads HuggingFace folders (use `pivot quantize` for GGUF files)") }
        let start = Date()
        if type.base == nil {
            let floatType = type.floatType
            let count = try HuggingFaceConverter.convert(folder: input, to: output, floatType: floatType)
            report(count: count, start: start)
            return
        }
        // A quantized type: exactly `pivot quantize` on the folder (which converts to F32 GGUF first).
        try Quantize.parse(["-m", input, "-o", output, "--type", type.name] + (threads.map { ["-t", String($0)] } ?? [])).run()
    }

    private func report(count: Int, start: Date) {
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("\(output): \(count) tensors, \(String(format: "%.2f MiB (%.1f s)", Double(size) / 1_048_576, Date().timeIntervalSince(start)))")
    }
}
