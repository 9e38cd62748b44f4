import Foundation
import PivotKernels

/// What `pivot prune` removes from a model's blocks and how it heals what is left.
public struct PruningPlan: Sendable, Equatable {
    public enum Healing: String, Sendable, CaseIterable { case none, lsq }
    /// Blocks removed (indices of the source model).
    public var droppedLayers: [Int]
    /// Fraction of each block's FFN intermediate channels removed (0: none).
    public var ffnRatio: Double
    public var healing: Healing

    public init(droppedLayers: [Int] = [], ffnRatio: Double = 0, healing: Healing = .none) {
        self.droppedLayers = droppedLayers.sorted(); self.ffnRatio = ffnRatio; self.healing = healing
    }
}

/// Writes a source GGUF with blocks dropped and FFN channels removed as a standard GGUF llama.cpp
/// loads: blocks renumbered, gate/up rows gathered byte for byte (rows are whole blocks), ffn_down's
/// kept columns (re-fit by least squares when healing) re-encoded in the source's own type with the
/// Gram diagonal as importance. Metadata `pivot.prune.*` records what went.
public enum StructuredPruning {
    public struct Result {
        /// Per kept block (new index), the source block it came from.
        public var sourceLayers: [Int]
        public var ffnWidth: Int
        public var lines: [String]
    }

    public static func write(source: GGUFFile, plan: PruningPlan, statistics: PruningStatistics?, to output: String, pool: ThreadPool,
                             progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
        let config = try ModelConfig(gguf: source)
        try config.requireLlamaBlock(for: "structured pruning")
        try checkPrunable(source, config: config, plan: plan)
        let dropped = Set(plan.droppedLayers)
        let kept = (0..<config.layerCount).filter { !dropped.contains($0) }
        let newIndex = Dictionary(uniqueKeysWithValues: kept.enumerated().map { ($1, $0) })
        let prunesFFN = plan.ffnRatio > 0
        let absorbers = plan.healing == .lsq ? Set(PruningStatistics.droppedRuns(plan.droppedLayers, layerCount: config.layerCount).map(\.previous)) : []
        let multiple = try ffnMultiple(source, layers: kept)
        let width = prunesFFN ? NeuronImportance.keptCount(channels: config.intermediateSize, ratio: plan.ffnRatio, multiple: multiple) : config.intermediateSize
        if (prunesFFN || !absorbers.isEmpty) && statistics == nil { throw PivotError.invalidArgument("pruning FFN channels or healing needs calibration statistics") }

        var replaced: [String: TensorData] = [:]
        var lines: [String] = []
        var fitGains: [Double] = []
        for (done, layer) in kept.enumerated() {
            defer { progress(done + 1, kept.count) }
            let refits = plan.healing == .lsq && (prunesFFN || absorbers.contains(layer))
            guard prunesFFN || refits, let statistics else { continue }
            let names = (gate: ProjectionRole.gate.tensorName(layer: layer), up: ProjectionRole.up.tensorName(layer: layer),
                         down: ProjectionRole.down.tensorName(layer: layer))
            let gate = try floats(source, names.gate), up = try floats(source, names.up), down = try floats(source, names.down)
            let gram = statistics.downGram[layer]
            let activationSquares = (0..<gram.columns).map { Double(gram.sums.pointer[$0 * gram.columns + $0]) }
            let channels: [Int]
            if prunesFFN {
                let scores = NeuronImportance.scores(gate: gate, up: up, down: down, hidden: config.hiddenSize, channels: config.intermediateSize,
                                                     inputSquares: statistics.ffnInputSquares[layer], activationSquares: activationSquares)
                channels = NeuronImportance.kept(scores: scores, ratio: plan.ffnRatio, multiple: multiple)
                replaced[names.gate] = source.tensors[names.gate]!.gatheringRows(channels)
                replaced[names.up] = source.tensors[names.up]!.gatheringRows(channels)
            } else {
                channels = Array(0..<config.intermediateSize)
            }
            let newDown: [Float]
            if refits {
                let full = gram.matrix()
                newDown = try down.withUnsafeBufferPointer { try LeastSquaresRefit.refit(weights: $0.baseAddress!, rows: config.hiddenSize, columns: config.intermediateSize, gram: full,
                                                      cross: statistics.downCross[layer].map { UnsafePointer($0.pointer) }, kept: channels, pool: pool) }
                if statistics.downCross[layer] == nil {
                    // How much of the removed channels' output the re-fit recovers (with a dropped block to absorb
                    // the target moves, so no such ratio exists).
                    let gathered = gatherColumns(down, rows: config.hiddenSize, columns: config.intermediateSize, kept: channels)
                    let gramFloats = full.map(Float.init)
                    let before = outputError(gathered, full: down, columns: config.intermediateSize, kept: channels, gram: gramFloats, pool: pool)
                    let after = outputError(newDown, full: down, columns: config.intermediateSize, kept: channels, gram: gramFloats, pool: pool)
                    fitGains.append(before > 0 ? after / before : 1)
                }
            } else {
                newDown = gatherColumns(down, rows: config.hiddenSize, columns: config.intermediateSize, kept: channels)
            }
            let importance = channels.map { Float(activationSquares[$0] / Double(max(statistics.tokens, 1))) }
            let sourceDown = source.tensors[names.down]!
            replaced[names.down] = newDown.withUnsafeBufferPointer {
                QuantizePipeline.convert(TensorData.floatView($0.baseAddress!, rows: config.hiddenSize, columns: channels.count),
                                         to: sourceDown.type, importance: importance, pool: pool)
            }
        }
        if !fitGains.isEmpty {
            lines.append(String(format: "least squares: ffn_down output error %.3f of the unhealed (mean over %d blocks, calibration text)",
                                fitGains.reduce(0, +) / Double(fitGains.count), fitGains.count))
        }

        var tensors: [GGUFWriter.Tensor] = []
        for name in source.tensorOrder {
            let parsed = TensorName(name)
            var outName = name
            if let layer = parsed.layer {
                guard let index = newIndex[layer] else { continue }
                outName = "blk.\(index)." + name.split(separator: ".", maxSplits: 2)[2]
            }
            let t = replaced[name] ?? source.tensors[name]!
            tensors.append(.init(name: outName, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount)))
        }
        let arch = config.architecture
        var metadata = source.metadataEntries.map { entry -> GGUFMetadataEntry in
            var e = entry
            if e.key == "\(arch).block_count" { e.value = .uint(UInt64(kept.count)) }
            if e.key == "\(arch).feed_forward_length" { e.value = .uint(UInt64(width)) }
            return e
        }
        metadata.removeAll { $0.key.hasPrefix("pivot.prune.layers") || $0.key.hasPrefix("pivot.prune.ffn") || $0.key == "pivot.prune.healing" }
        if !plan.droppedLayers.isEmpty {
            metadata.append(GGUFMetadataEntry("pivot.prune.layers_dropped", .array(plan.droppedLayers.map { .int(Int64($0)) }), type: 9, itemType: 5))
        }
        if prunesFFN {
            metadata.append(GGUFMetadataEntry("pivot.prune.ffn_original", .uint(UInt64(config.intermediateSize)), type: 4))
        }
        metadata.append(GGUFMetadataEntry("pivot.prune.healing", .string(plan.healing.rawValue), type: 8))
        try withExtendedLifetime((source, replaced)) { try GGUFWriter.write(metadata: metadata, tensors: tensors, to: output) }
        lines.insert("blocks: \(config.layerCount) → \(kept.count)" + (plan.droppedLayers.isEmpty ? "" : " (dropped \(plan.droppedLayers.map(String.init).joined(separator: ",")))")
                     + "; FFN width: \(config.intermediateSize) → \(width)", at: 0)
        return Result(sourceLayers: kept, ffnWidth: width, lines: lines)
    }

    /// Refuses files whose extra per-block data would silently go stale.
    static func checkPrunable(_ source: GGUFFile, config: ModelConfig, plan: PruningPlan) throws {
        if try IntactPrefix.read(from: source) != nil {
            throw PivotError.unsupported(file: source.path, "an IntactKV prefix is stored per block; prune the model first, then run `pivot intact`")
        }
        if source.metadata[ValueScales.metadataKey] != nil {
            throw PivotError.unsupported(file: source.path, "AWQ/SmoothQuant value scales are stored per block; prune the unscaled model, then quantize")
        }
        for l in plan.droppedLayers where !(0..<config.layerCount).contains(l) {
            throw PivotError.invalidArgument("block \(l) does not exist (the model has \(config.layerCount))")
        }
        guard plan.droppedLayers.count < config.layerCount else { throw PivotError.invalidArgument("cannot drop every block") }
        guard (0..<1).contains(plan.ffnRatio) else { throw PivotError.invalidArgument("the FFN ratio must be in [0, 1) (got \(plan.ffnRatio))") }
        let plainFFN: Set<Substring> = ["ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
        if plan.ffnRatio > 0 {
            for name in source.tensorOrder {
                let parts = name.split(separator: ".")
                guard parts.count >= 3, parts[0] == "blk", parts[2].hasPrefix("ffn_") else { continue }
                if !plainFFN.contains(parts[2]) || parts.last != "weight" {
                    throw PivotError.unsupported(file: source.path, "tensor '\(name)' is not a plain FFN weight (sparse outliers or biases); prune before adding them")
                }
            }
        }
    }

    /// The FFN width must stay a whole number of every FFN tensor's blocks (32 for Q4_1/Q8_0, 256 for K-quants).
    static func ffnMultiple(_ source: GGUFFile, layers: [Int]) throws -> Int {
        var multiple = 32
        for layer in layers {
            for role in [ProjectionRole.gate, .up, .down] {
                guard let t = source.tensors[role.tensorName(layer: layer)] else { throw PivotError.malformed(file: source.path, "missing \(role.tensorName(layer: layer))") }
                multiple = max(multiple, t.type.elementsPerBlock)
            }
        }
        return multiple
    }

    static func floats(_ source: GGUFFile, _ name: String) throws -> [Float] {
        guard let t = source.tensors[name] else { throw PivotError.malformed(file: source.path, "missing tensor '\(name)'") }
        return t.toFloats()
    }

    static func gatherColumns(_ w: [Float], rows: Int, columns: Int, kept: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: rows * kept.count)
        for r in 0..<rows { for (j, c) in kept.enumerated() { out[r * kept.count + j] = w[r * columns + c] } }
        return out
    }

    /// Σ‖(W' − W)·a‖² over the calibration tokens (W' embedded into all n columns, zeros where removed),
    /// from the Gram matrix alone: Σᵣ eᵣ·G·eᵣᵀ.
    static func outputError(_ candidate: [Float], full w: [Float], columns n: Int, kept: [Int], gram: [Float], pool: ThreadPool) -> Double {
        let k = kept.count, rows = candidate.count / k
        var e = [Float](repeating: 0, count: rows * n), eg = e
        for r in 0..<rows {
            for i in 0..<n { e[r * n + i] = -w[r * n + i] }
            for (j, c) in kept.enumerated() { e[r * n + c] += candidate[r * k + j] }
        }
        sgemm(transposeA: false, transposeB: false, m: rows, n: n, k: n, a: e, lda: n, b: gram, ldb: n, c: &eg, ldc: n, pool: pool)
        var total = 0.0
        for i in 0..<(rows * n) { total += Double(e[i] * eg[i]) }
        return total
    }
}
