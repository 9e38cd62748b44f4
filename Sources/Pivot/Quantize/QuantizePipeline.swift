import Foundation
import PivotKernels

/// GGUF → GGUF quantization with llama.cpp's per-tensor rules, for the types Pivot can write so far
/// (block-32 round-to-nearest and F16; the K-quant scale searches and the K mixes come next).
///
/// Rules, as llama-quantize applies them to these file types: every 2-D projection gets the target
/// type; 1-D tensors (norms) stay F32; the output head — `output.weight`, or `token_embd.weight` when
/// the embedding is tied — gets Q6_K (Q8_0 in a Q8_0 file), and a K-quant on rows that are not a
/// multiple of 256 falls back to its block-32 twin (Q6_K → Q8_0), as llama.cpp falls back.
public enum QuantizePipeline {
    /// A target file type: its name, llama.cpp's `general.file_type` number, and the projection format.
    public struct FileType: Sendable {
        public let name: String
        public let llamaFileType: Int
        /// nil: F16.
        public let format: BlockFormat?

        public static let all: [FileType] = [
            .init(name: "F16", llamaFileType: 1, format: nil), .init(name: "Q4_0", llamaFileType: 2, format: .q4_0),
            .init(name: "Q4_1", llamaFileType: 3, format: .q4_1), .init(name: "Q8_0", llamaFileType: 7, format: .q8_0),
            .init(name: "Q5_0", llamaFileType: 8, format: .q5_0), .init(name: "Q5_1", llamaFileType: 9, format: .q5_1),
        ]

        public static func named(_ name: String) -> FileType? { all.first { $0.name.lowercased() == name.lowercased() } }
    }

    /// What one tensor became.
    public struct Choice: Sendable { public var name: String; public var from: TensorType; public var to: TensorType }

    /// K-quants on rows that are not whole super-blocks become the block-32 type llama.cpp uses instead.
    static func fallback(_ format: BlockFormat, columns: Int) -> BlockFormat {
        guard format.isKQuant, columns % 256 != 0 else { return format }
        switch format {
        case .q2_K, .q3_K: return .q4_0
        case .q4_K: return .q5_0
        case .q5_K: return .q5_1
        default: return .q8_0
        }
    }

    /// The type each tensor of `gguf` gets in a `fileType` file.
    public static func plan(_ gguf: GGUFFile, fileType: FileType) throws -> [Choice] {
        let tied = gguf.tensors["output.weight"] == nil
        return try gguf.tensorOrder.map { name in
            let t = gguf.tensors[name]!
            guard t.shape.count == 2 else { return Choice(name: name, from: t.type, to: t.type == .f16 || t.type == .bf16 ? .f32 : t.type) }
            let isOutput = name == "output.weight" || (tied && name == "token_embd.weight")
            guard let target = fileType.format else { return Choice(name: name, from: t.type, to: .f16) }
            var format = isOutput ? (target == .q8_0 ? .q8_0 : .q6_K) : target
            format = fallback(format, columns: t.shape[1])
            guard format.canQuantize else {
                throw PivotError.unsupported(file: gguf.path, "'\(name)' would be \(format.name) in a \(fileType.name) file; Pivot cannot write \(format.name) yet")
            }
            return Choice(name: name, from: t.type, to: .block(format))
        }
    }

    /// Writes `output`; `progress(done, total, tensorName)` after each tensor. Returns the plan it followed.
    @discardableResult
    public static func run(input: String, output: String, fileType: FileType,
                           progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> [Choice] {
        let gguf = try GGUFFile(path: input)
        let choices = try plan(gguf, fileType: fileType)
        var buffers: [OwnedBytes] = []
        var tensors: [GGUFWriter.Tensor] = []
        for (index, choice) in choices.enumerated() {
            let t = gguf.tensors[choice.name]!
            if choice.to == t.type {
                tensors.append(.init(name: choice.name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount)))
            } else {
                let converted = convert(t, to: choice.to)
                buffers.append(converted.owner as! OwnedBytes)
                tensors.append(.init(name: choice.name, ggmlType: choice.to.ggmlType, shape: t.shape,
                                     bytes: UnsafeRawBufferPointer(start: converted.data, count: converted.byteCount)))
            }
            progress(index + 1, choices.count, choice.name)
        }
        var metadata = gguf.metadataEntries.filter { $0.key != "general.file_type" && $0.key != "general.quantization_version" }
        metadata.append(GGUFMetadataEntry("general.file_type", .uint(UInt64(fileType.llamaFileType)), type: 4))
        if fileType.format != nil { metadata.append(GGUFMetadataEntry("general.quantization_version", .uint(2), type: 4)) }
        try GGUFWriter.write(metadata: metadata, tensors: tensors, to: output)
        withExtendedLifetime(buffers) {}
        return choices
    }

    /// `t` dequantized and re-encoded as `type` (F32, F16 or a quantizable block format).
    static func convert(_ t: TensorData, to type: TensorType) -> TensorData {
        if case .block(let format) = type { return t.quantized(to: format) }
        let count = t.elementCount
        let floats = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { floats.deallocate() }
        t.copyFloats(into: floats)
        let bytes = OwnedBytes(count: type == .f16 ? 2 * count : 4 * count)
        for i in 0..<count {
            if type == .f16 { bytes.pointer.storeBytes(of: Float16(floats[i]).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
            else { bytes.pointer.storeBytes(of: floats[i], toByteOffset: 4 * i, as: Float.self) }
        }
        return TensorData(name: t.name, type: type, shape: t.shape, data: UnsafeRawPointer(bytes.pointer),
                          byteCount: type == .f16 ? 2 * count : 4 * count, owner: bytes)
    }
}
