import PivotKernels

/// GPTQ for a whole model: the calibration Hessians of every projection input, factored once per
/// distinct input (Q/K/V share one) when the first tensor that reads it is quantized. Tensors
/// without a Hessian (the embedding / output head) fall back to the pipeline's other quantizer.
public final class GPTQPlan {
    let hessians: [String: InputHessian]
    public let actOrder: Bool
    public let dampening: Double
    private var factors: [ObjectIdentifier: HessianFactor] = [:]

    public init(hessians: [String: InputHessian], actOrder: Bool = true, dampening: Double = 0.01) {
        self.hessians = hessians; self.actOrder = actOrder; self.dampening = dampening
    }

    /// Per tensor name, the mean x² per input column (an importance matrix from the same pass).
    public var importance: ImportanceMatrix {
        var entries: [String: ImportanceMatrix.Entry] = [:]
        for (name, h) in hessians {
            let sums = (0..<h.columns).map { h.sums.pointer[$0 * h.columns + $0] }
            entries[name] = .init(sums: sums, count: h.tokens)
        }
        return ImportanceMatrix(entries: entries, chunkCount: 0, chunkSize: 0, datasets: [])
    }

    func factor(for name: String) throws -> HessianFactor? {
        guard let h = hessians[name] else { return nil }
        if let known = factors[ObjectIdentifier(h)] { return known }
        let factor = try HessianFactor(hessian: h.matrix(), columns: h.columns, tokens: h.tokens, dampening: dampening, actOrder: actOrder)
        factors[ObjectIdentifier(h)] = factor
        return factor
    }

    /// The input Hessian of `name` divided by its token count (E[x·xᵀ]), full, for LSI.
    func meanHessian(for name: String) -> [Float]? {
        guard let h = hessians[name], h.tokens > 0 else { return nil }
        let scale = 1 / Float(h.tokens)
        return h.matrix().map { Float($0) * scale }
    }

    /// `floats` (the tensor `t`'s weights, possibly compensated) through GPTQ; weights whose flat index is in
    /// `outliers` get their exact correction in the result.
    func quantize(_ t: TensorData, floats: UnsafePointer<Float>, format: BlockFormat, factor: HessianFactor, outliers: [Int] = [],
                  pool: ThreadPool) -> (TensorData, [Float]) {
        let rows = t.shape[0], columns = t.shape[1]
        var mask = [Bool](repeating: false, count: outliers.isEmpty ? 0 : rows * columns)
        for i in outliers { mask[i] = true }
        var residuals = [Float](repeating: 0, count: mask.count)
        let bytes = mask.withUnsafeBufferPointer { m in residuals.withUnsafeMutableBufferPointer { res in
            GPTQ.quantize(floats, rows: rows, columns: columns, format: format, factor: factor, staticGroups: actOrder, pool: pool,
                          outliers: outliers.isEmpty ? nil : m.baseAddress, residuals: res.baseAddress)
        } }
        let storage = OwnedBytes(count: bytes.count)
        bytes.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return (TensorData(name: t.name, type: .block(format), shape: t.shape, data: UnsafeRawPointer(storage.pointer),
                           byteCount: bytes.count, owner: storage), outliers.map { residuals[$0] })
    }
}
