import Foundation
import PivotKernels

/// llama.cpp's importance matrix: for each projection of each block, per input column, the sum of
/// x² over the calibration tokens and how many tokens were summed. Quantizers weigh each weight's
/// error by its column's mean x², so the columns the model leans on are kept more precisely.
///
/// Read and written in llama-imatrix's GGUF form (`<tensor>.in_sum2`, `<tensor>.counts`,
/// `imatrix.datasets` / `chunk_count` / `chunk_size`), so a matrix from either tool feeds the
/// other's quantizer.
public struct ImportanceMatrix: Sendable {
    public struct Entry: Sendable { public var sums: [Float]; public var count: Int }
    public var entries: [String: Entry]
    public var chunkCount: Int
    public var chunkSize: Int
    public var datasets: [String]

    /// Per tensor, the mean x² per column (1 where nothing was seen, as llama-quantize does).
    public var values: [String: [Float]] {
        entries.mapValues { e in e.count > 0 ? e.sums.map { $0 / Float(e.count) } : [Float](repeating: 1, count: e.sums.count) }
    }

    /// Runs `model` over `tokens` in chunks of `contextLength` (each from an empty cache, as
    /// llama-imatrix does) and sums x² at every block projection's input.
    public static func collect(model: LoadedModel, tokens: [Int], contextLength: Int = 512, chunks limit: Int? = nil,
                               dataset: String, execution: Execution,
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> ImportanceMatrix {
        var recorders: [(String, ImportanceRecorder)] = []
        let chunks = try model.runCalibration(tokens: tokens, contextLength: contextLength, chunks: limit, execution: execution,
                                              progress: progress) { index, op, role in
            let recorder = ImportanceRecorder(op)
            recorders.append((role.tensorName(layer: index), recorder))
            return recorder
        }
        var entries: [String: Entry] = [:]
        for (name, recorder) in recorders { entries[name] = Entry(sums: recorder.sums, count: recorder.count) }
        return ImportanceMatrix(entries: entries, chunkCount: chunks, chunkSize: contextLength, datasets: [dataset])
    }

    /// Writes llama-imatrix's GGUF form.
    public func write(to path: String) throws {
        let metadata = [
            GGUFMetadataEntry("general.type", .string("imatrix"), type: 8),
            GGUFMetadataEntry("imatrix.datasets", .array(datasets.map { .string($0) }), type: 9, itemType: 8),
            GGUFMetadataEntry("imatrix.chunk_count", .uint(UInt64(chunkCount)), type: 4),
            GGUFMetadataEntry("imatrix.chunk_size", .uint(UInt64(chunkSize)), type: 4),
        ]
        // One flat buffer: each tensor's sums, then its count.
        let names = entries.keys.sorted()
        var flat: [Float] = []
        var offsets: [Int] = []
        for name in names { offsets.append(flat.count); flat += entries[name]!.sums; flat.append(Float(entries[name]!.count)) }
        try flat.withUnsafeBufferPointer { all in
            var tensors: [GGUFWriter.Tensor] = []
            for (name, offset) in zip(names, offsets) {
                let n = entries[name]!.sums.count
                tensors.append(.init(name: name + ".in_sum2", ggmlType: 0, shape: [1, n],
                                     bytes: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: all[offset..<(offset + n)]))))
                tensors.append(.init(name: name + ".counts", ggmlType: 0, shape: [1, 1],
                                     bytes: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: all[(offset + n)..<(offset + n + 1)]))))
            }
            try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
        }
    }

    /// Reads llama-imatrix's GGUF form (one matrix per tensor; expert-stacked entries are rejected).
    public static func load(path: String) throws -> ImportanceMatrix {
        guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
        if let head = FileHandle(forReadingAtPath: path)?.readData(ofLength: 4), head != Data("GGUF".utf8) {
            throw PivotError.unsupported(file: path, "not a GGUF importance matrix (the legacy .dat form of older llama-imatrix is not read; convert it with a current llama-imatrix)")
        }
        let gguf = try GGUFFile(path: path)
        return try withExtendedLifetime(gguf) {
            var entries: [String: Entry] = [:]
            for name in gguf.tensorOrder where name.hasSuffix(".in_sum2") {
                let base = String(name.dropLast(".in_sum2".count))
                guard let sums = gguf.tensors[name], let counts = gguf.tensors[base + ".counts"], sums.type == .f32, counts.type == .f32 else {
                    throw PivotError.unsupported(file: path, "'\(base)' needs F32 .in_sum2 and .counts tensors")
                }
                guard counts.elementCount == 1 else {
                    throw PivotError.unsupported(file: path, "'\(base)' holds \(counts.elementCount) expert matrices; only dense models are supported")
                }
                var values = [Float](repeating: 0, count: sums.elementCount)
                values.withUnsafeMutableBufferPointer { sums.copyFloats(into: $0.baseAddress!) }
                let count = counts.data.loadUnaligned(as: Float.self)
                entries[base] = Entry(sums: values, count: Int(count.rounded()))
            }
            guard !entries.isEmpty else { throw PivotError.unsupported(file: path, "no '<tensor>.in_sum2' entries: not an importance matrix") }
            return ImportanceMatrix(entries: entries, chunkCount: gguf.metadata["imatrix.chunk_count"]?.int ?? 0,
                                    chunkSize: gguf.metadata["imatrix.chunk_size"]?.int ?? 0,
                                    datasets: gguf.metadata["imatrix.datasets"]?.array?.compactMap(\.string) ?? [])
        }
    }
}

/// Passes through to the wrapped projection, adding each input row's x² to per-column sums
/// (in float, in token order, as llama-imatrix accumulates).
final class ImportanceRecorder: LinearOperator {
    let inner: LinearOperator
    private(set) var sums: [Float]
    private(set) var count = 0

    init(_ inner: LinearOperator) {
        self.inner = inner
        sums = [Float](repeating: 0, count: inner.inFeatures)
    }

    var inFeatures: Int { inner.inFeatures }
    var outFeatures: Int { inner.outFeatures }
    var weightBytes: Int { inner.weightBytes }
    var formatName: String { inner.formatName }

    func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        let columns = inFeatures
        sums.withUnsafeMutableBufferPointer { acc in
            for t in 0..<x.rows {
                let row = x.row(t)
                for j in 0..<columns { acc[j] += row[j] * row[j] }
            }
        }
        count += x.rows
        inner.forward(x, into: y, context: context)
    }
}
