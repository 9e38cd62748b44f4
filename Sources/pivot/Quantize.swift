import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a GGUF file in another type, with llama.cpp's per-tensor rules, readable by llama.cpp.",
        discussion: """
        Types: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")). ggml's quantizers and llama.cpp's mixes: the \
        output is byte-identical to llama-quantize's for the same input (and importance matrix). The mixes give attn_v, \
        ffn_down and attn_output more bits in chosen layers (Q4_K_M: Q6_K for attn_v and ffn_down in the first and last \
        eighth of the layers and every third between); the output head (here the tied embedding) gets Q6_K, or Q8_0 in \
        a Q8_0 file; a K-quant on rows that are not a multiple of 256 falls back to a block-32 type (Q2_K, Q3_K → Q4_0, \
        Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), as llama.cpp does — on a 576-wide model that is every projection but \
        ffn_down. Norms stay F32. An already quantized input is dequantized first (a note says so: the errors compound); \
        a HuggingFace folder is converted to an F32 GGUF first (`pivot convert`'s code).
        Importance: --imatrix reads a matrix (llama-imatrix's or `pivot imatrix`'s); --calib computes one from a text first.
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "Input .gguf file or HuggingFace folder (or a name looked up like every verb's -m).")
    var input: String?

    @Option(name: [.customShort("o"), .customLong("output")], help: "Output .gguf file (written under a temporary name, then renamed).")
    var output: String

    @Option(help: "Target file type: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")).")
    var type: String

    @Option(help: "Importance matrix file (GGUF, from llama-imatrix or `pivot imatrix`).")
    var imatrix: String?

    @Option(help: "Calibration text: compute the importance matrix from it before quantizing (e.g. shared/data/calibration.txt).")
    var calib: String?

    @OptionGroup var calibration: CalibrationOptions

    @Flag(help: "No mix: every projection and the output head get the base type (then the block-size fallback), as llama-quantize --pure.")
    var pure = false

    @Option(name: [.customShort("t"), .customLong("threads")], help: "Worker threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        guard QuantizeFileType.named(type) != nil else {
            throw ValidationError("unknown --type '\(type)' (available: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")))")
        }
        guard imatrix == nil || calib == nil else { throw ValidationError("give --imatrix or --calib, not both") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        try calibration.check()
    }

    func run() throws {
        guard var path = ModelLocator.resolve(input) else { throw PivotError.fileNotFound(input ?? ModelLocator.defaultModelName) }
        var isDirectory: ObjCBool = false
        let intermediate = output + ".f32.tmp"
        defer { try? FileManager.default.removeItem(atPath: intermediate) }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue {
            // A HuggingFace folder: through `pivot convert`'s code to an F32 GGUF first.
            writeErr("\(path) is a HuggingFace folder: converting it to F32 GGUF first\n")
            try HuggingFaceConverter.convert(folder: path, to: intermediate, floatType: .f32)
            path = intermediate
        }
        let fileType = QuantizeFileType.named(type)!
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        let source = try GGUFFile(path: path)
        let quantizedTypes = Set(source.tensors.values.compactMap { t -> String? in if case .block(let f) = t.type { return f.name }; return nil })
        if !quantizedTypes.isEmpty {
            writeErr("note: \(path) is already quantized (\(quantizedTypes.sorted().joined(separator: ", "))); its weights are dequantized and requantized, which compounds the error\n")
        }
        var importance: ImportanceMatrix?
        if let imatrix { importance = try ImportanceMatrix.load(path: imatrix) }
        if let calib { importance = try calibration.collect(try LoadedModel.load(path: path), file: calib, pool: pool) }
        let bar = ProgressBar(total: source.tensorOrder.count, label: "quantize")
        let start = Date()
        let choices = try QuantizePipeline.run(input: path, output: output, fileType: fileType, importance: importance, pure: pure, pool: pool) { done, _, name in
            bar.update(done, suffix: name)
        }
        bar.finish()
        var counts: [String: Int] = [:]
        for c in choices { counts["\(c.to)", default: 0] += 1 }
        let size = (try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        let weights = choices.reduce(0) { $0 + (source.tensors[$1.name]?.elementCount ?? 0) }
        print("\(output): \(String(format: "%.2f MiB, %.2f bits per weight", Double(size) / 1_048_576, Double(size * 8) / Double(weights))), "
              + counts.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
              + (importance != nil ? ", with an importance matrix" : "")
              + String(format: " (%.1f s)", Date().timeIntervalSince(start)))
    }
}
