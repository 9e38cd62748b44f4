import Foundation
import PivotKernels

/// OpenBA-V2's vocabulary pruning for byte-level BPE: keep the tokens a corpus uses and rebuild the
/// merges consistently. Encoding the corpus records every merge that fires; the kept set is their
/// results and parts, every special/control/byte token (so any text still encodes: the 256 byte
/// tokens cover every byte), and nothing else. A merge survives only if its two parts and its result
/// survive. Text of the corpus then encodes to the same pieces as before (every merge BPE chose is
/// still there, and removing unchosen merges cannot change a choice), so only the ids change.
public struct VocabularySelection: Sendable {
    /// Source ids kept, ascending: new id i is source id `kept[i]`.
    public let kept: [Int]
    public let sourceSize: Int

    public var removedCount: Int { sourceSize - kept.count }

    /// Encodes `corpus` with `tokenizer` (byte-level BPE) and selects the kept ids; `types` are the
    /// GGUF token types (1 normal and 5 unused, llama.cpp's `[PAD i]` rows, may go; any other type is kept),
    /// `extraIDs` ids the metadata names (BOS, EOS, pad …).
    public static func select(tokenizer: Tokenizer, corpus: String, types: [Int], extraIDs: [Int]) throws -> VocabularySelection {
        guard case .byteLevel(let pre) = tokenizer.kind else {
            throw PivotError.invalidArgument("vocabulary pruning supports byte-level BPE tokenizers (this one is \(tokenizer.kind))")
        }
        var keep = Set<Int>(tokenizer.byteTokens.filter { $0 >= 0 })
        for (id, type) in types.enumerated() where type != 1 && type != 5 { keep.insert(id) }
        keep.formUnion(tokenizer.specialSet)
        keep.formUnion(extraIDs.filter { $0 >= 0 && $0 < tokenizer.vocabularySize })
        var seen = Set<String>()
        pre.forEachPiece(of: corpus) { piece in
            guard seen.insert(piece).inserted else { return }
            _ = tokenizer.bpe(tokenizer.byteSymbols(piece)) { a, b, merged in keep.insert(a); keep.insert(b); keep.insert(merged) }
        }
        return VocabularySelection(kept: keep.sorted(), sourceSize: tokenizer.vocabularySize)
    }

    /// `select` with the tokenizer, token types and metadata token ids of a GGUF file.
    public static func select(source: GGUFFile, corpus: String) throws -> VocabularySelection {
        let types = source.metadata["tokenizer.ggml.token_type"]?.array?.map { $0.int ?? 1 } ?? []
        let ids = source.metadata.filter { $0.key.hasPrefix("tokenizer.ggml.") && $0.key.hasSuffix("_token_id") }.compactMap { $0.value.int }
        return try select(tokenizer: try Tokenizer(gguf: source), corpus: corpus, types: types, extraIDs: ids)
    }

    /// The source GGUF with its vocabulary cut to `kept`: token arrays and merges rebuilt, token ids in
    /// metadata renumbered, embedding (and untied output) rows gathered byte for byte.
    public func write(source: GGUFFile, to output: String) throws {
        let m = source.metadata
        guard let tokens = m["tokenizer.ggml.tokens"]?.array?.map({ $0.string ?? "" }), tokens.count == sourceSize else {
            throw PivotError.malformed(file: source.path, "tokenizer.ggml.tokens does not match the tokenizer")
        }
        let newID = Dictionary(uniqueKeysWithValues: kept.enumerated().map { ($1, $0) })
        let keptStrings = Set(kept.map { tokens[$0] })
        var metadata: [GGUFMetadataEntry] = []
        for var entry in source.metadataEntries {
            switch entry.key {
            case "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores":
                guard let values = entry.value.array, values.count == sourceSize else { break }
                entry.value = .array(kept.map { values[$0] })
            case "tokenizer.ggml.merges":
                let merges = (entry.value.array ?? []).compactMap(\.string).filter { merge in
                    guard let space = merge.firstIndex(of: " ") else { return false }
                    let a = String(merge[..<space]), b = String(merge[merge.index(after: space)...])
                    return keptStrings.contains(a) && keptStrings.contains(b) && keptStrings.contains(a + b)
                }
                entry.value = .array(merges.map { .string($0) })
            case let key where key.hasPrefix("tokenizer.ggml.") && key.hasSuffix("_token_id"):
                guard let old = entry.value.int else { break }
                guard let id = newID[old] else { throw PivotError.invalidArgument("\(key) \(old) was removed from the vocabulary") }
                entry.value = .uint(UInt64(id))
            case let key where key.hasSuffix(".vocab_size"):
                entry.value = .uint(UInt64(kept.count))
            default: break
            }
            metadata.append(entry)
        }
        metadata.removeAll { $0.key.hasPrefix("pivot.prune.vocab") }
        let removed = (0..<sourceSize).filter { newID[$0] == nil }
        metadata.append(GGUFMetadataEntry("pivot.prune.vocab_source_size", .uint(UInt64(sourceSize)), type: 4))
        metadata.append(GGUFMetadataEntry("pivot.prune.vocab_kept_ids", .array(kept.map { .int(Int64($0)) }), type: 9, itemType: 5))
        metadata.append(GGUFMetadataEntry("pivot.prune.vocab_removed", .array(removed.map { .string(tokens[$0]) }), type: 9, itemType: 8))

        var gathered: [TensorData] = []
        var list: [GGUFWriter.Tensor] = []
        for name in source.tensorOrder {
            var t = source.tensors[name]!
            if (name == "token_embd.weight" || name == "output.weight") && t.shape.first == sourceSize {
                t = t.gatheringRows(kept)
                gathered.append(t)
            }
            list.append(.init(name: name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount)))
        }
        try withExtendedLifetime((source, gathered)) { try GGUFWriter.write(metadata: metadata, tensors: list, to: output) }
    }
}
