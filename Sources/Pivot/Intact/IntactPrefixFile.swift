import Foundation

/// How an intact prefix lives in a GGUF model file: metadata keys beside the model's, and per layer one
/// F32 tensor of keys and one of values, shape [tokens, kvHeads, headDim] (outermost first).
///
/// llama.cpp refuses a file with tensors its architecture does not claim ("wrong number of tensors"), so
/// such a file runs only in Pivot: `pivot.only` says so and why.
extension IntactPrefix {
    public enum Key {
        public static let tokens = "pivot.intact.tokens"
        public static let prefix = "pivot.intact.prefix"
        public static let source = "pivot.intact.source"
        public static let calibrated = "pivot.intact.calibrated"
        /// Marks a file other GGUF runtimes cannot load, with the reason (a string).
        public static let pivotOnly = "pivot.only"
    }

    static let tensorPrefix = "pivot.intact.blk."

    /// "pivot.intact.blk.3.key" / "pivot.intact.blk.3.value".
    public static func tensorName(layer: Int, value: Bool) -> String { tensorPrefix + "\(layer)." + (value ? "value" : "key") }

    /// The prefix a file carries, nil when it has none; a prefix of the wrong shape is one clear error.
    public static func read(from gguf: GGUFFile) throws -> IntactPrefix? {
        guard let stored = gguf.metadata[Key.tokens] else { return nil }
        func bad(_ why: String) -> PivotError { .malformed(file: gguf.path, "intact prefix: " + why) }
        guard let items = stored.array else { throw bad("\(Key.tokens) is not an array") }
        let tokens = try items.map { item -> Int in
            guard let id = item.int else { throw bad("\(Key.tokens) holds a value that is not a token id") }
            return id
        }
        var keys: [[Float]] = [], values: [[Float]] = []
        var kvHeads = 0, headDim = 0
        while let k = gguf.tensors[tensorName(layer: keys.count, value: false)] {
            let layer = keys.count
            guard let v = gguf.tensors[tensorName(layer: layer, value: true)] else { throw bad("layer \(layer) has keys but no values") }
            for t in [k, v] {
                guard t.type == .f32 else { throw bad("'\(t.name)' is \(t.type), not F32") }
                guard t.shape.count == 3, t.shape[0] == tokens.count, t.shape == k.shape, t.shape[1] > 0, t.shape[2] > 0 else {
                    throw bad("'\(t.name)' has shape \(t.shape), expected [\(tokens.count) tokens, KV heads, head size] like layer 0's keys")
                }
            }
            if layer == 0 { kvHeads = k.shape[1]; headDim = k.shape[2] }
            guard k.shape[1] == kvHeads, k.shape[2] == headDim else { throw bad("layer \(layer)'s shape \(k.shape) differs from layer 0's") }
            keys.append(k.toFloats()); values.append(v.toFloats())
        }
        guard !keys.isEmpty else { throw bad("\(Key.tokens) is set but there is no tensor '\(tensorName(layer: 0, value: false))'") }
        let stray = gguf.tensorOrder.filter { $0.hasPrefix(tensorPrefix) }.count - 2 * keys.count
        guard stray == 0 else { throw bad("\(stray) tensor(s) beyond its \(keys.count) layers") }
        do {
            return try IntactPrefix(tokens: tokens, text: gguf.metadata[Key.prefix]?.string ?? "", source: gguf.metadata[Key.source]?.string ?? "",
                                    calibrated: gguf.metadata[Key.calibrated]?.bool ?? false, kvHeads: kvHeads, headDim: headDim,
                                    keys: keys, values: values)
        } catch PivotError.invalidArgument(let why) { throw bad(why) }
    }

    /// Writes `model`'s tensors and metadata unchanged (an intact prefix it had is replaced) plus this prefix.
    public func write(model: GGUFFile, to path: String) throws {
        try validate()
        try check(for: try ModelConfig(gguf: model), file: model.path)
        let ours: Set<String> = [Key.tokens, Key.prefix, Key.source, Key.calibrated, Key.pivotOnly]
        var metadata = model.metadataEntries.filter { !ours.contains($0.key) }
        metadata.append(GGUFMetadataEntry(Key.tokens, .array(tokens.map { .int(Int64($0)) }), type: 9, itemType: 5))
        metadata.append(GGUFMetadataEntry(Key.prefix, .string(text), type: 8))
        metadata.append(GGUFMetadataEntry(Key.source, .string(source), type: 8))
        metadata.append(GGUFMetadataEntry(Key.calibrated, .bool(calibrated), type: 7))
        metadata.append(GGUFMetadataEntry(Key.pivotOnly, .string("intact prefix tensors (pivot.intact.blk.*): llama.cpp refuses tensors it does not know"), type: 8))
        let shape = [tokens.count, kvHeads, headDim]
        try withExtendedLifetime(model) {
            try withArrays(keys + values) { buffers in
                var tensors = model.tensorOrder.filter { !$0.hasPrefix(Self.tensorPrefix) }.map { name -> GGUFWriter.Tensor in
                    let t = model.tensors[name]!
                    return GGUFWriter.Tensor(name: name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
                }
                for layer in 0..<layers {
                    tensors.append(.init(name: Self.tensorName(layer: layer, value: false), ggmlType: 0, shape: shape, bytes: buffers[layer]))
                    tensors.append(.init(name: Self.tensorName(layer: layer, value: true), ggmlType: 0, shape: shape, bytes: buffers[layers + layer]))
                }
                try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
            }
        }
    }
}

/// Runs `body` with the bytes of every array, kept alive and in place for its duration.
private func withArrays<R>(_ arrays: [[Float]], _ body: ([UnsafeRawBufferPointer]) throws -> R) throws -> R {
    var pointers: [UnsafeRawBufferPointer] = []
    func nest(_ i: Int) throws -> R {
        guard i < arrays.count else { return try body(pointers) }
        return try arrays[i].withUnsafeBytes { bytes in
            pointers.append(bytes)
            return try nest(i + 1)
        }
    }
    return try nest(0)
}
