import Foundation
import PivotKernels

/// The expensive calibration products of `pivot quantize` — GPTQ's input Hessians (minutes of
/// forward passes) and LLM-MQ's gradient magnitudes (float backward passes) — kept in a GGUF file
/// so that runs with other types, budgets or flags on the same model and text reuse them.
///
/// Tensors: `hessian.<tensor>` (F32, the upper-triangle sums as collected, for the tensor that
/// records each shared input: attn_q, attn_output, ffn_gate, ffn_down) and `gradient.<tensor>`
/// (F32, |g| per weight), and per recorded input `absmean.<tensor>` / `absmax.<tensor>` (F32, mean and
/// max |x| per column: AWQ's and SmoothQuant's statistics; caches without them count as a miss for
/// those methods). Metadata `pivot.calibration.key` must equal the requesting run's key
/// (model and text by path and size, chunking), else the file is ignored and rewritten.
public enum CalibrationCache {
    public struct Contents {
        public var hessians: [String: InputHessian]
        public var gradients: [String: [Float]]?
        public var loss: Double?
        public init(hessians: [String: InputHessian], gradients: [String: [Float]]?, loss: Double?) {
            self.hessians = hessians; self.gradients = gradients; self.loss = loss
        }
    }

    /// Identifies what the cached numbers were computed from.
    public static func key(model: String, calibration: String, chunks: Int, chunkLength: Int) -> String {
        func describe(_ path: String) -> String {
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
            return "\((path as NSString).lastPathComponent):\(size)"
        }
        return "model=\(describe(model)) calib=\(describe(calibration)) chunks=\(chunks)x\(chunkLength)"
    }

    /// The input each projection's Hessian is recorded for (Q/K/V share Q's, gate/up share gate's).
    static func recordingTensor(_ name: String) -> String {
        let parsed = TensorName(name)
        guard let layer = parsed.layer, let role = parsed.role else { return name }
        return role.sharedInput.tensorName(layer: layer)
    }

    /// The cached contents for `key`, or nil when the file is missing or was made from something else.
    /// Gradients are returned only when the cache has them for `gradientChunks` windows.
    public static func load(path: String, key: String, gradientChunks: Int?) throws -> Contents? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let file = try GGUFFile(path: path)
        guard file.metadata["pivot.calibration.key"]?.string == key else { return nil }
        let tokens = file.metadata["pivot.calibration.hessian_tokens"]?.int ?? 0
        var recorded: [String: InputHessian] = [:]
        var hessians: [String: InputHessian] = [:]
        var gradients: [String: [Float]] = [:]
        var statistics: [String: [Float]] = [:]
        for name in file.tensorOrder {
            let t = file.tensors[name]!
            guard t.type == .f32 else { throw PivotError.malformed(file: path, "calibration tensor '\(name)' is not F32") }
            let floats = UnsafeBufferPointer(start: t.data.assumingMemoryBound(to: Float.self), count: t.elementCount)
            if name.hasPrefix("hessian.") {
                let columns = Int(Double(t.elementCount).squareRoot())
                guard columns * columns == t.elementCount else { throw PivotError.malformed(file: path, "'\(name)' is not square") }
                recorded[String(name.dropFirst("hessian.".count))] = InputHessian(columns: columns, sums: floats, tokens: tokens)
            } else if name.hasPrefix("gradient.") {
                gradients[String(name.dropFirst("gradient.".count))] = Array(floats)
            } else if name.hasPrefix("absmean.") || name.hasPrefix("absmax.") {
                statistics[name] = Array(floats)
            }
        }
        for (name, h) in recorded {
            guard let means = statistics["absmean." + name], let maxima = statistics["absmax." + name],
                  means.count == h.columns, maxima.count == h.columns else { continue }
            h.absoluteSums = means.map { Double($0) * Double(h.tokens) }
            h.absoluteMaxima = maxima
        }
        for projection in ProjectionRole.allCases {
            var layer = 0
            while let h = recorded[recordingTensor(projection.tensorName(layer: layer))] {
                hessians[projection.tensorName(layer: layer)] = h
                layer += 1
            }
        }
        let cachedChunks = file.metadata["pivot.calibration.gradient_chunks"]?.int
        let haveGradients = gradientChunks != nil && cachedChunks == gradientChunks && !gradients.isEmpty
        return Contents(hessians: hessians, gradients: haveGradients ? gradients : nil,
                        loss: haveGradients ? file.metadata["pivot.calibration.loss"]?.double : nil)
    }

    /// Writes `contents` under `key` (through a temporary name, then renamed).
    public static func save(path: String, key: String, contents: Contents, gradientChunks: Int?) throws {
        var tensors: [GGUFWriter.Tensor] = []
        var buffers: [FloatBuffer] = []
        var tokens = 0
        for (name, h) in contents.hessians.sorted(by: { $0.key < $1.key }) where recordingTensor(name) == name {
            tensors.append(.init(name: "hessian." + name, ggmlType: 0, shape: [h.columns * h.columns],
                                 bytes: UnsafeRawBufferPointer(start: h.sums.pointer, count: 4 * h.columns * h.columns)))
            tokens = h.tokens
            if h.hasActivationStatistics {
                for (prefix, values) in [("absmean.", h.meanAbsolute), ("absmax.", h.absoluteMaxima)] {
                    let buffer = FloatBuffer(count: h.columns)
                    values.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: h.columns) }
                    buffers.append(buffer)
                    tensors.append(.init(name: prefix + name, ggmlType: 0, shape: [h.columns],
                                         bytes: UnsafeRawBufferPointer(start: buffer.pointer, count: 4 * h.columns)))
                }
            }
        }
        for (name, g) in (contents.gradients ?? [:]).sorted(by: { $0.key < $1.key }) {
            let buffer = FloatBuffer(count: g.count)
            g.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: g.count) }
            buffers.append(buffer)
            tensors.append(.init(name: "gradient." + name, ggmlType: 0, shape: [g.count], bytes: UnsafeRawBufferPointer(start: buffer.pointer, count: 4 * g.count)))
        }
        var metadata = [GGUFMetadataEntry("general.architecture", .string("pivot-calibration"), type: 8),
                        GGUFMetadataEntry("pivot.calibration.key", .string(key), type: 8),
                        GGUFMetadataEntry("pivot.calibration.hessian_tokens", .uint(UInt64(tokens)), type: 4)]
        if let gradientChunks, contents.gradients != nil {
            metadata.append(GGUFMetadataEntry("pivot.calibration.gradient_chunks", .uint(UInt64(gradientChunks)), type: 4))
            metadata.append(GGUFMetadataEntry("pivot.calibration.loss", .float(contents.loss ?? 0), type: 6))
        }
        let temporary = path + ".tmp"
        try GGUFWriter.write(metadata: metadata, tensors: tensors, to: temporary)
        withExtendedLifetime(buffers) {}
        withExtendedLifetime(contents) {}
        _ = try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: temporary, toPath: path)
    }
}
