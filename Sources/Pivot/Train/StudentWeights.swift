import Foundation
import PivotKernels

/// The straight-through estimator for a quantized student: the forward pass reads the float masters
/// as the student's file would store them, the gradient updates the masters as if it had read them
/// directly. Group-wise tensors keep each block's stored scale and minimum (the quantizer's choice,
/// e.g. GPTQ's) and move only codes; other block formats are re-encoded by their own search every
/// update; F32/F16/BF16 tensors pass through. With `learnsGrids`, the group-wise blocks' scales and
/// minimums train too (`LearnedGrids`), on a copy of the grids the output file then stores.
public final class StudentGrid: WeightProjection {
    struct Quantized {
        let offset: Int, rows: Int, columns: Int; let tensor: TensorData; let format: BlockFormat
        /// The row blocks whose scales/minimums the forward pass reads: the file's, or a learned copy.
        let grid: UnsafeRawPointer
        /// Index of the tensor's first block among all learned blocks (nil: the grid is the file's, fixed).
        let firstBlock: Int?
    }
    let student: GGUFFile
    let tensors: [Quantized]
    /// Mutable copies of the group-wise tensors' blocks when the grids learn.
    let ownedGrids: [OwnedBytes]
    let learned: LearnedGrids?

    public init(student: GGUFFile, layout: ParameterLayout, learnsGrids: Bool = false) {
        self.student = student
        var owned: [OwnedBytes] = [], blocks = 0, initial: [Float] = []
        tensors = layout.entries.compactMap { entry in
            guard let t = student.tensors[entry.name], case .block(let format) = t.type, t.shape.count == 2 else { return nil }
            guard learnsGrids, format.isExtension else {
                return Quantized(offset: entry.offset, rows: t.shape[0], columns: t.shape[1], tensor: t, format: format, grid: t.data, firstBlock: nil)
            }
            let copy = OwnedBytes(count: t.byteCount)
            copy.pointer.copyMemory(from: t.data, byteCount: t.byteCount)
            owned.append(copy)
            let count = t.byteCount / format.bytesPerBlock
            for b in 0..<count {
                let g = format.groupGrid(UnsafeRawPointer(copy.pointer), block: b)
                initial.append(g.scale); initial.append(g.minimum)
            }
            defer { blocks += count }
            return Quantized(offset: entry.offset, rows: t.shape[0], columns: t.shape[1], tensor: t, format: format,
                             grid: UnsafeRawPointer(copy.pointer), firstBlock: blocks)
        }
        ownedGrids = owned
        learned = learnsGrids && blocks > 0 ? LearnedGrids(values: initial) : nil
    }

    /// Whether some of the student's blocks have grids that can learn (group-wise tensors).
    public var hasGroupGrids: Bool { tensors.contains { $0.format.isExtension } }
    public var state: [Float] { learned?.state ?? [] }
    /// Restores the learned grids' masters and moments, and the stored grids the forward pass reads.
    public func restore(state: [Float]) throws {
        guard let learned else { return }
        try learned.restore(state)
        for q in tensors {
            guard let first = q.firstBlock else { continue }
            let grid = UnsafeMutableRawPointer(mutating: q.grid)
            for b in 0..<(q.tensor.byteCount / q.format.bytesPerBlock) {
                q.format.setGroupGrid(grid, block: b, scale: learned.values[2 * (first + b)], minimum: learned.values[2 * (first + b) + 1])
            }
        }
    }

    public var isEmpty: Bool { tensors.isEmpty }

    public func project(master: ParameterBuffer, into weights: ParameterBuffer, pool: ThreadPool) {
        weights.copy(from: master)
        for q in tensors {
            let source = master.base + q.offset, target = weights.base + q.offset
            if q.format.isExtension {
                let rowBytes = q.tensor.byteCount / q.rows
                pool.parallelRanges(count: q.rows, minChunk: 8) { rows in
                    for r in rows {
                        q.format.snapToGroupGrid(source + r * q.columns, count: q.columns, grid: q.grid + r * rowBytes,
                                                 snapped: target + r * q.columns, codes: nil)
                    }
                }
            } else {
                _ = q.format.roundTrip(source, rows: q.rows, columns: q.columns, importance: nil, pool: pool, restored: target)
            }
        }
    }

    /// The master weights stored in the student's own types: group-wise blocks with their grids and
    /// new codes, other formats re-encoded, float tensors as floats. Same tensors, same size.
    func encoded(_ name: String, master: ParameterBuffer, pool: ThreadPool) -> TensorData? {
        guard let q = tensors.first(where: { $0.tensor.name == name }) else { return nil }
        let source = master.base + q.offset
        guard q.format.isExtension else {
            return TensorData.floatView(source, rows: q.rows, columns: q.columns).quantized(to: q.format, importance: nil, pool: pool)
        }
        let bytes = OwnedBytes(count: q.tensor.byteCount), rowBytes = q.tensor.byteCount / q.rows
        pool.parallelRanges(count: q.rows, minChunk: 8) { rows in
            for r in rows {
                q.format.snapToGroupGrid(source + r * q.columns, count: q.columns, grid: q.grid + r * rowBytes,
                                         snapped: nil, codes: bytes.pointer + r * rowBytes)
            }
        }
        return TensorData(name: name, type: q.tensor.type, shape: q.tensor.shape, data: UnsafeRawPointer(bytes.pointer),
                          byteCount: q.tensor.byteCount, owner: bytes)
    }
}

/// Writes trained weights as a GGUF beside the model they came from: its metadata and tokenizer,
/// its tensor order, and either its own types (`StudentGrid`, the same file size) or a file type
/// (F32/F16/BF16, or quantized by the existing pipeline from an F32 intermediate).
public enum TrainedModelWriter {
    public static func write(weights: ParameterBuffer, like student: GGUFFile, grid: StudentGrid?, fileType: QuantizeFileType?,
                             extraMetadata: [GGUFMetadataEntry] = [], to path: String, pool: ThreadPool,
                             progress: (Int, Int, String) -> Void = { _, _, _ in }) throws {
        if let fileType, fileType.name != "F32" {
            let intermediate = path + ".f32.partial"
            defer { try? FileManager.default.removeItem(atPath: intermediate) }
            try write(weights: weights, like: student, grid: nil, fileType: nil, extraMetadata: extraMetadata, to: intermediate, pool: pool)
            _ = try QuantizePipeline.run(input: intermediate, output: path, fileType: fileType, pool: pool, progress: progress)
            return
        }
        var owners: [AnyObject] = []
        var tensors: [GGUFWriter.Tensor] = []
        for name in student.tensorOrder {
            let original = student.tensors[name]!
            if let entry = weights.layout[name] {
                if fileType == nil, let grid, let encoded = grid.encoded(name, master: weights, pool: pool) {
                    owners.append(encoded.owner)
                    tensors.append(.init(name: name, ggmlType: encoded.type.ggmlType, shape: encoded.shape,
                                         bytes: UnsafeRawBufferPointer(start: encoded.data, count: encoded.byteCount)))
                } else {
                    let view = TensorData(name: name, type: .f32, shape: original.shape, data: UnsafeRawPointer(weights.base + entry.offset),
                                          byteCount: 4 * entry.count, owner: weights)
                    let keepType = fileType == nil && original.type != .f32 && { if case .block = original.type { return false }; return true }()
                    let stored = keepType ? QuantizePipeline.convert(view, to: original.type, importance: nil, pool: pool) : view
                    owners.append(stored.owner)
                    tensors.append(.init(name: name, ggmlType: stored.type.ggmlType, shape: stored.shape,
                                         bytes: UnsafeRawBufferPointer(start: stored.data, count: stored.byteCount)))
                }
            } else {
                tensors.append(.init(name: name, ggmlType: original.type.ggmlType, shape: original.shape,
                                     bytes: UnsafeRawBufferPointer(start: original.data, count: original.byteCount)))
            }
            progress(tensors.count, student.tensorOrder.count, name)
        }
        let replaced = Set(extraMetadata.map(\.key) + (fileType == nil ? [] : ["general.file_type"]))
        var metadata = student.metadataEntries.filter { !replaced.contains($0.key) }
        if fileType != nil { metadata.append(GGUFMetadataEntry("general.file_type", .uint(0), type: 4)) }
        metadata += extraMetadata
        try withExtendedLifetime((student, owners)) {
            try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
        }
    }
}
