import Foundation
import PivotKernels

/// GGUF → GGUF quantization with llama.cpp's per-tensor rules (`QuantizeRecipe`) and ggml's
/// quantizers, byte-identical to llama-quantize's for the same input (and the same importance
/// matrix, when one is given). Norms and other 1-D tensors stay F32; metadata and the tokenizer
/// are copied; `general.file_type` is set.
public enum QuantizePipeline {
    public typealias FileType = QuantizeFileType

    /// What one tensor became.
    public struct Choice: Sendable { public var name: String; public var from: TensorType; public var to: TensorType }

    /// The type each tensor of `gguf` gets in a `fileType` file.
    public static func plan(_ gguf: GGUFFile, fileType: FileType, hasImportance: Bool = false, pure: Bool = false) throws -> [Choice] {
        let config = try ModelConfig(gguf: gguf)
        let recipe = QuantizeRecipe(fileType: fileType, layers: config.layerCount, gqa: config.headCount / max(1, config.kvHeadCount),
                                    hasImportance: hasImportance, tiedEmbedding: gguf.tensors["output.weight"] == nil, pure: pure)
        var seen: [QuantizeRecipe.Role: Int] = [:]
        // llama.cpp visits tensors by layer, then by name; its per-role counters are layer indices.
        let visitOrder = gguf.tensorOrder.sorted { a, b in
            let (la, lb) = (layerIndex(a), layerIndex(b))
            return la != lb ? la < lb : a < b
        }
        var chosen: [String: TensorType] = [:]
        for name in visitOrder {
            let t = gguf.tensors[name]!
            // llama-quantize's rules: weights only (not Mamba's ssm_a / ssm_d), never norms or Mamba's small convolution.
            guard t.shape.count == 2, name.hasSuffix("weight"), !name.hasSuffix("_norm.weight"), !name.contains("ssm_conv1d") else {
                chosen[name] = t.type == .f16 || t.type == .bf16 ? .f32 : t.type
                continue
            }
            let role = QuantizeRecipe.role(of: name, tiedEmbedding: recipe.tiedEmbedding)
            let layer = seen[role, default: 0]
            seen[role] = layer + 1
            if let format = recipe.format(for: name, columns: t.shape[1], layer: layer) {
                // Rows no block type fits (Mamba's Δ projection of rank 4) stay F16, as llama-quantize leaves them.
                chosen[name] = t.shape[1] % format.elementsPerBlock == 0 ? .block(format) : .f16
            } else {
                chosen[name] = fileType.floatType
            }
        }
        return gguf.tensorOrder.map { Choice(name: $0, from: gguf.tensors[$0]!.type, to: chosen[$0]!) }
    }

    /// The N of "blk.N.", or −1 (llama.cpp's order puts non-layer tensors first).
    static func layerIndex(_ name: String) -> Int {
        TensorName(name).layer ?? -1
    }

    /// Writes `output`; `progress(done, total, tensorName)` after each tensor. `importance` maps tensor
    /// names to per-column importances (an imatrix); tensors without an entry are quantized without.
    /// `lsi` compensates with `gptq`'s Hessians, or `lsiHessians`' when the rounding is not GPTQ's.
    /// `rewritten` replaces tensors of the input by float ones (channel scaling's folded weights); `extra`
    /// metadata entries are added, replacing the input's of the same key.
    @discardableResult
    public static func run(input: String, output: String, fileType: FileType, importance: ImportanceMatrix? = nil, pure: Bool = false,
                           rewritten: [String: TensorData] = [:], metadata extra: [GGUFMetadataEntry] = [], gptq: GPTQPlan? = nil, lsiHessians: GPTQPlan? = nil, overrides: [String: BlockFormat] = [:], outliers: OutlierPlan? = nil,
                           lsi: SingularValueCompensation? = nil, pool: ThreadPool? = nil,
                           progress: (Int, Int, String) -> Void = { _, _, _ in }, report: (String) -> Void = { _ in }) throws -> [Choice] {
        let gguf = try GGUFFile(path: input)
        let choices = try plan(gguf, fileType: fileType, hasImportance: importance != nil, pure: pure).map { c in
            overrides[c.name].map { Choice(name: c.name, from: c.from, to: .block($0)) } ?? c
        }
        let importanceValues = importance?.values  // mean x² per column, computed once for every tensor
        if let importanceValues {
            for (name, values) in importanceValues {
                guard let t = gguf.tensors[name] else { continue }
                guard t.shape.count == 2, values.count == t.shape[1] else {
                    throw PivotError.invalidArgument("importance matrix entry '\(name)' has \(values.count) values; the tensor has \(t.shape.last ?? 0) columns")
                }
            }
        }
        var buffers: [AnyObject] = []
        var tensors: [GGUFWriter.Tensor] = []
        for (index, choice) in choices.enumerated() {
            let t = rewritten[choice.name] ?? gguf.tensors[choice.name]!
            if choice.to == t.type {
                tensors.append(.init(name: choice.name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount)))
            } else {
                let converted: TensorData
                var kept: (indices: [Int], corrections: [Float]) = ([], [])
                let workers = pool ?? ThreadPool(threads: 1)
                let factor = try gptq?.factor(for: choice.name)
                let outlierFraction = outliers?.fraction ?? 0
                if case .block(let format) = choice.to, let imp = importanceValues?[choice.name], outlierFraction > 0 || factor != nil || lsi != nil {
                    let floats = UnsafeMutablePointer<Float>.allocate(capacity: t.elementCount)
                    defer { floats.deallocate() }
                    t.copyFloats(into: floats)
                    if let lsi, let h = (gptq ?? lsiHessians)?.meanHessian(for: choice.name) {
                        let (before, after) = lsi.compensate(floats, rows: t.shape[0], columns: t.shape[1], format: format, hessian: h,
                                                             importance: imp, pool: workers)
                        report(String(format: "LSI %@: output error %.4f of plain (%.4g → %.4g)", choice.name, after / max(before, 1e-30), before, after))
                    }
                    var selection: (indices: [Int], rtn: TensorData, corrections: [Float])?
                    if let outliers, outlierFraction > 0 {
                        selection = outliers.select(floats, rows: t.shape[0], columns: t.shape[1], format: format, importance: imp,
                                                    gradient: outliers.gradients?[choice.name], pool: workers)
                    }
                    if let gptq, let factor {
                        let indices = selection?.indices ?? []
                        let (quantized, residuals) = gptq.quantize(t, floats: floats, format: format, factor: factor, outliers: indices, pool: workers)
                        converted = quantized
                        if !indices.isEmpty { kept = (indices, residuals) }
                    } else if let selection {
                        converted = selection.rtn
                        kept = (selection.indices, selection.corrections)
                    } else {
                        converted = TensorData.floatView(floats, rows: t.shape[0], columns: t.shape[1]).quantized(to: format, importance: imp, pool: workers)
                    }
                } else {
                    converted = convert(t, to: choice.to, importance: importanceValues?[choice.name], pool: pool)
                }
                buffers.append(converted.owner)
                tensors.append(.init(name: choice.name, ggmlType: choice.to.ggmlType, shape: t.shape,
                                     bytes: UnsafeRawBufferPointer(start: converted.data, count: converted.byteCount)))
                if !kept.indices.isEmpty {
                    let indexBytes = OwnedBytes(count: 4 * kept.indices.count), valueBytes = OwnedBytes(count: 2 * kept.indices.count)
                    for (i, flat) in kept.indices.enumerated() {
                        indexBytes.pointer.storeBytes(of: Float(flat), toByteOffset: 4 * i, as: Float.self)
                        valueBytes.pointer.storeBytes(of: Float16(kept.corrections[i]).bitPattern, toByteOffset: 2 * i, as: UInt16.self)
                    }
                    buffers.append(indexBytes); buffers.append(valueBytes)
                    tensors.append(.init(name: choice.name + SparseOutlierLinear.indexSuffix, ggmlType: 0, shape: [kept.indices.count],
                                         bytes: UnsafeRawBufferPointer(start: indexBytes.pointer, count: 4 * kept.indices.count)))
                    tensors.append(.init(name: choice.name + SparseOutlierLinear.valueSuffix, ggmlType: 1, shape: [kept.indices.count],
                                         bytes: UnsafeRawBufferPointer(start: valueBytes.pointer, count: 2 * kept.indices.count)))
                }
            }
            progress(index + 1, choices.count, choice.name)
        }
        let recomputed: Set<String> = ["general.file_type", "general.quantization_version", "pivot.sparse_outliers", "pivot.extension_types"]
        var metadata = gguf.metadataEntries.filter { entry in !recomputed.contains(entry.key) && !extra.contains { $0.key == entry.key } } + extra
        metadata.append(GGUFMetadataEntry("general.file_type", .uint(UInt64(fileType.llamaFileType)), type: 4))
        if fileType.base != nil { metadata.append(GGUFMetadataEntry("general.quantization_version", .uint(2), type: 4)) }
        if tensors.contains(where: { $0.name.hasSuffix(SparseOutlierLinear.indexSuffix) }) {
            // Marks a file only Pivot runs (llama.cpp refuses the extra tensors).
            metadata.append(GGUFMetadataEntry("pivot.sparse_outliers", .uint(1), type: 4))
        }
        let extensionTypes = Set(choices.compactMap { c -> String? in if case .block(let f) = c.to, f.isExtension { return f.name }; return nil })
        if !extensionTypes.isEmpty {
            // Marks a file whose tensor types only Pivot knows (other readers stop at the unknown type id).
            metadata.append(GGUFMetadataEntry("pivot.extension_types", .string(extensionTypes.sorted().joined(separator: ",")), type: 8))
        }
        try withExtendedLifetime(gguf) {
            try GGUFWriter.write(metadata: metadata, tensors: tensors, to: output)
        }
        withExtendedLifetime(buffers) {}
        return choices
    }

    /// `t` dequantized and re-encoded as `type` (F32, F16, BF16 or a block format).
    static func convert(_ t: TensorData, to type: TensorType, importance: [Float]?, pool: ThreadPool?) -> TensorData {
        if case .block(let format) = type { return t.quantized(to: format, importance: importance, pool: pool) }
        var floats = [Float](repeating: 0, count: t.elementCount)
        floats.withUnsafeMutableBufferPointer { t.copyFloats(into: $0.baseAddress!) }
        let encoded = type.littleEndianBytes(of: floats)
        let bytes = OwnedBytes(count: encoded.count)
        encoded.withUnsafeBytes { bytes.pointer.copyMemory(from: $0.baseAddress!, byteCount: encoded.count) }
        return TensorData(name: t.name, type: type, shape: t.shape, data: UnsafeRawPointer(bytes.pointer), byteCount: encoded.count, owner: bytes)
    }
}
