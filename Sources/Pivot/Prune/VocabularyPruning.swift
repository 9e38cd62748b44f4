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
    /// GGUF token types (1 normal; any other type is kept), `extraIDs` ids the metadata names (BOS, EOS, pad …).
    public static func select(tokenizer: Tokenizer, corpus: String, types: [Int], extraIDs: [Int]) throws -> VocabularySelection {
        guard case .byteLevel(let pre) = tokenizer.kind else {
            throw PivotError.invalidArgument("vocabulary pruning supports byte-level BPE tokenizers (this one is \(tokenizer.kind))")
        }
        var keep = Set<Int>(tokenizer.byteTokens.filter { $0 >= 0 })
        for (id, type) in types.enumerated() where type != 1 { keep.insert(id) }
        keep.formUnion(tokenizer.specialSet)
        keep.formUnion(extraIDs.filter { $0 >= 0 && $0 < tokenizer.vocabularySize })
        var seen = Set<String>()
        let scalars = Array(corpus.unicodeScalars)
        for piece in pre.split(scalars) {
            var word = String.UnicodeScalarView()
            word.append(contentsOf: scalars[piece])
            let key = String(word)
            guard seen.insert(key).inserted else { continue }
            tokenizer.tracedBPE(Array(key.utf8).map { tokenizer.byteTokens[Int($0)] }) { a, b, merged in
                keep.insert(a); keep.insert(b); keep.insert(merged)
            }
        }
        return VocabularySelection(kept: keep.sorted(), sourceSize: tokenizer.vocabularySize)
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

        var owned: [OwnedBytes] = []
        var list: [GGUFWriter.Tensor] = []
        for name in source.tensorOrder {
            let t = source.tensors[name]!
            if (name == "token_embd.weight" || name == "output.weight") && t.shape.first == sourceSize {
                let rowBytes = t.byteCount / sourceSize, bytes = OwnedBytes(count: kept.count * rowBytes)
                for (i, r) in kept.enumerated() { (bytes.pointer + i * rowBytes).copyMemory(from: t.data + r * rowBytes, byteCount: rowBytes) }
                owned.append(bytes)
                list.append(.init(name: name, ggmlType: t.type.ggmlType, shape: [kept.count] + t.shape.dropFirst(),
                                  bytes: UnsafeRawBufferPointer(start: UnsafeRawPointer(bytes.pointer), count: kept.count * rowBytes)))
            } else {
                list.append(.init(name: name, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount)))
            }
        }
        try withExtendedLifetime((source, owned)) { try GGUFWriter.write(metadata: metadata, tensors: list, to: output) }
    }
}

extension Tokenizer {
    /// `bpe` that reports each merge it applies as (left, right, result).
    func tracedBPE(_ initial: [Int], merged report: (Int, Int, Int) -> Void) {
        var symbols = initial
        while symbols.count > 1 {
            var bestRank = Int32.max, bestIndex = -1, bestMerged: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(truncatingIfNeeded: symbols[i])) << 32 | UInt64(UInt32(truncatingIfNeeded: symbols[i + 1]))
                if let m = merges[key], m.rank < bestRank { bestRank = m.rank; bestIndex = i; bestMerged = m.merged }
            }
            if bestIndex < 0 { break }
            report(symbols[bestIndex], symbols[bestIndex + 1], Int(bestMerged))
            symbols[bestIndex] = Int(bestMerged)
            symbols.remove(at: bestIndex + 1)
        }
    }
}
