/// What `pivot prune` wrote into a file's metadata (`pivot.prune.*`), read back for `pivot inspect`.
public struct PruningRecord: Sendable, Equatable {
    public var droppedLayers: [Int] = []
    public var ffnOriginal: Int?
    public var healing: String?
    public var vocabularySourceSize: Int?
    public var removedTokens: [String] = []

    /// Nil when the file was never pruned.
    public init?(gguf: GGUFFile) {
        let m = gguf.metadata
        droppedLayers = m["pivot.prune.layers_dropped"]?.array?.compactMap(\.int) ?? []
        ffnOriginal = m["pivot.prune.ffn_original"]?.int
        healing = m["pivot.prune.healing"]?.string
        vocabularySourceSize = m["pivot.prune.vocab_source_size"]?.int
        removedTokens = m["pivot.prune.vocab_removed"]?.array?.compactMap(\.string) ?? []
        if droppedLayers.isEmpty && ffnOriginal == nil && healing == nil && vocabularySourceSize == nil { return nil }
    }

    /// One line per kind of removal, for a model of `config`'s shape.
    public func lines(config: ModelConfig) -> [String] {
        var out: [String] = []
        if !droppedLayers.isEmpty {
            out.append("blocks dropped: \(droppedLayers.map(String.init).joined(separator: ",")) (of \(config.layerCount + droppedLayers.count); later blocks renumbered)")
        }
        if let ffnOriginal { out.append("FFN channels:   \(ffnOriginal) → \(config.intermediateSize) per block") }
        if let healing { out.append("healing:        \(healing)") }
        if let vocabularySourceSize {
            let sample = removedTokens.prefix(8).map { $0.debugDescription }.joined(separator: " ")
            out.append("vocabulary:     \(vocabularySourceSize) → \(config.vocabularySize) tokens (\(removedTokens.count) removed, e.g. \(sample))")
        }
        return out
    }
}
