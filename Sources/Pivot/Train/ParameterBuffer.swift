import Foundation
import PivotKernels

/// Where each trainable tensor lives in one flat float vector. One vector makes AdamW, gradient
/// clipping by global norm, accumulation and checkpoints single loops over contiguous memory.
public struct ParameterLayout: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        /// GGUF order: ne0 (the row width) first.
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        public var range: Range<Int> { offset..<(offset + count) }
    }
    public private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]
    public private(set) var count = 0

    public init() {}

    mutating func append(_ name: String, shape: [Int]) {
        index[name] = entries.count
        entries.append(Entry(name: name, shape: shape, offset: count))
        count += shape.reduce(1, *)
    }

    public subscript(name: String) -> Entry? { index[name].map { entries[$0] } }
    public func position(of name: String) -> Int? { index[name] }
    public func offset(_ name: String) -> Int { self[name]!.offset }

    /// The block tensors of a Llama model, in file order, plus the intact prefix's keys/values when asked.
    static func llama(_ c: ModelConfig, untiedHead: Bool, prefixLength: Int = 0) -> ParameterLayout {
        var layout = ParameterLayout()
        let hidden = c.hiddenSize, ffn = c.intermediateSize
        layout.append("token_embd.weight", shape: [hidden, c.vocabularySize])
        for l in 0..<c.layerCount {
            layout.append("blk.\(l).attn_norm.weight", shape: [hidden])
            layout.append(ProjectionRole.query.tensorName(layer: l), shape: [hidden, c.queryWidth])
            layout.append(ProjectionRole.key.tensorName(layer: l), shape: [hidden, c.kvWidth])
            layout.append(ProjectionRole.value.tensorName(layer: l), shape: [hidden, c.kvWidth])
            layout.append(ProjectionRole.attentionOutput.tensorName(layer: l), shape: [c.queryWidth, hidden])
            layout.append("blk.\(l).ffn_norm.weight", shape: [hidden])
            layout.append(ProjectionRole.gate.tensorName(layer: l), shape: [hidden, ffn])
            layout.append(ProjectionRole.up.tensorName(layer: l), shape: [hidden, ffn])
            layout.append(ProjectionRole.down.tensorName(layer: l), shape: [ffn, hidden])
        }
        layout.append("output_norm.weight", shape: [hidden])
        if untiedHead { layout.append("output.weight", shape: [hidden, c.vocabularySize]) }
        if prefixLength > 0 {
            for l in 0..<c.layerCount {
                layout.append(intactKeyName(layer: l), shape: [c.kvWidth, prefixLength])
                layout.append(intactValueName(layer: l), shape: [c.kvWidth, prefixLength])
            }
        }
        return layout
    }

    /// The trainable stand-ins for an intact prefix's keys (post-RoPE, as caches store them) and values.
    public static func intactKeyName(layer: Int) -> String { "intact.\(layer).key" }
    public static func intactValueName(layer: Int) -> String { "intact.\(layer).value" }
}

/// A flat, owned float vector laid out by a `ParameterLayout`: the weights, their gradients, or
/// a checkpoint's copy. A class over raw memory so that threads can write disjoint slices.
public final class ParameterBuffer: @unchecked Sendable {
    public let layout: ParameterLayout
    public let base: UnsafeMutablePointer<Float>
    public var count: Int { layout.count }

    public init(layout: ParameterLayout) {
        self.layout = layout
        base = .allocate(capacity: max(1, layout.count))
        base.initialize(repeating: 0, count: max(1, layout.count))
    }

    deinit { base.deallocate() }

    public func pointer(_ name: String) -> UnsafeMutablePointer<Float> { base + layout.offset(name) }
    public func values(_ name: String) -> [Float] {
        let e = layout[name]!
        return Array(UnsafeBufferPointer(start: base + e.offset, count: e.count))
    }
    public func zero() { base.update(repeating: 0, count: count) }
    public func copy(from other: ParameterBuffer) {
        precondition(other.layout == layout)
        base.update(from: other.base, count: count)
    }

    /// √Σg² in Double (the global norm clipping compares against).
    public func norm(in ranges: [Range<Int>]? = nil) -> Double {
        var total = 0.0
        for range in ranges ?? [0..<count] {
            var partial: Float = 0
            for i in range { partial += base[i] * base[i] }
            total += Double(partial)
        }
        return total.squareRoot()
    }

    public func scale(by factor: Float) { for i in 0..<count { base[i] *= factor } }

    /// Dequantized float copies of the file's tensors (any stored type), by layout name.
    public func load(from gguf: GGUFFile) throws {
        for entry in layout.entries where !entry.name.hasPrefix("intact.") {
            guard let t = gguf.tensors[entry.name] else {
                throw PivotError.unsupported(file: gguf.path, "missing tensor '\(entry.name)'")
            }
            guard t.elementCount == entry.count else {
                throw PivotError.unsupported(file: gguf.path, "tensor '\(entry.name)' has \(t.elementCount) values, expected \(entry.count)")
            }
            t.copyFloats(into: base + entry.offset)
        }
    }
}
