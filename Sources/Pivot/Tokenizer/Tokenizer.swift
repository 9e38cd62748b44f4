/// BPE tokenizer: byte-level (GPT-2, SmolLM, Qwen, Llama-3) or SentencePiece-style (Llama-2),
/// with special tokens matched verbatim in the text before BPE runs.
public final class Tokenizer: @unchecked Sendable {
    public enum Kind: Sendable, Equatable {
        case byteLevel(PreTokenizer)
        /// SentencePiece BPE: spaces become "▁", a prefix space is added, unknown bytes fall back to <0xXX>.
        case sentencePiece(addSpacePrefix: Bool)
    }

    public let kind: Kind
    public let tokens: [String]
    public let tokenIDs: [String: Int]
    /// Tokens matched verbatim in input text (control and user-defined tokens such as `<|im_start|>`).
    public let specialTokens: [String]
    let specialSet: Set<Int>
    /// Ids a GGUF marks UNUSED (type 5: the `[PAD i]` rows past a tokenizer's end): they decode to nothing, as in llama.cpp.
    public internal(set) var unusedIDs: Set<Int> = []
    /// (left id, right id) → (rank, merged id); lower rank merges first.
    let merges: [UInt64: (rank: Int32, merged: Int32)]
    let byteTokens: [Int]
    public let bos: Int?
    public let eos: Int?
    public let addBOS: Bool
    /// Extra ids that end a turn (e.g. `<|endoftext|>` next to `<|im_end|>`).
    public let stopTokens: Set<Int>
    public let chatTemplate: String?
    /// Pieces already encoded (wikitext has ~300k pieces but few distinct ones); guarded for concurrent callers.
    private var cache: [String: [Int]] = [:]
    private let cacheLock = NSLock()

    public var vocabularySize: Int { tokens.count }

    /// `mergeList` pairs of token strings in priority order; for SentencePiece vocabularies
    /// given only scores, pass `scores` and merges are derived from them.
    public init(kind: Kind, tokens: [String], mergeList: [(String, String)], scores: [Float]? = nil,
                specialTokens: [String], bos: Int?, eos: Int?, addBOS: Bool, stopTokens: Set<Int> = [],
                chatTemplate: String?) {
        self.kind = kind
        self.tokens = tokens
        var ids: [String: Int] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = i }
        tokenIDs = ids
        self.specialTokens = specialTokens.sorted { $0.utf8.count > $1.utf8.count }
        specialSet = Set(specialTokens.compactMap { ids[$0] })
        var table: [UInt64: (Int32, Int32)] = [:]
        for (rank, pair) in mergeList.enumerated() {
            guard let a = ids[pair.0], let b = ids[pair.1], let m = ids[pair.0 + pair.1] else { continue }
            let key = UInt64(a) << 32 | UInt64(b)
            if table[key] == nil { table[key] = (Int32(rank), Int32(m)) }
        }
        if mergeList.isEmpty, let scores, case .sentencePiece = kind {
            // Every vocabulary entry that splits into two entries is a merge, ranked by score.
            // Equal scores share a rank, so the leftmost pair wins a tie (llama.cpp's SPM order).
            let order = tokens.indices.sorted { scores[$0] > scores[$1] }
            var rank: Int32 = 0
            var previousScore = scores[order.first ?? 0]
            for id in order {
                if scores[id] != previousScore { rank += 1; previousScore = scores[id] }
                let chars = Array(tokens[id])
                guard chars.count >= 2 else { continue }
                for cut in 1..<chars.count {
                    if let a = ids[String(chars[..<cut])], let b = ids[String(chars[cut...])] {
                        let key = UInt64(a) << 32 | UInt64(b)
                        if table[key] == nil { table[key] = (rank, Int32(id)) }
                    }
                }
            }
        }
        merges = table.mapValues { (rank: $0.0, merged: $0.1) }
        switch kind {
        case .byteLevel: byteTokens = (0..<256).map { ids[String(ByteLevel.byteToScalar[$0])] ?? -1 }
        case .sentencePiece: byteTokens = (0..<256).map { ids[Tokenizer.byteFallbackToken(UInt8($0))] ?? -1 }
        }
        self.bos = bos
        self.eos = eos
        self.addBOS = addBOS
        self.stopTokens = stopTokens.union(eos.map { [$0] } ?? [])
        self.chatTemplate = chatTemplate
    }

    public func isSpecial(_ id: Int) -> Bool { specialSet.contains(id) }

    // MARK: Encoding

    /// Token ids for `text`; special-token strings in the text become their ids.
    public func encode(_ text: String, addBOS: Bool? = nil) -> [Int] {
        var out: [Int] = []
        if addBOS ?? self.addBOS, let bos { out.append(bos) }
        var rest = Substring(text)
        while !rest.isEmpty {
            if let (range, id) = firstSpecial(in: rest) {
                encodeOrdinary(String(rest[..<range.lowerBound]), into: &out)
                out.append(id)
                rest = rest[range.upperBound...]
            } else {
                encodeOrdinary(String(rest), into: &out)
                break
            }
        }
        return out
    }

    private func firstSpecial(in text: Substring) -> (Range<Substring.Index>, Int)? {
        guard !specialTokens.isEmpty, text.utf8.contains(where: { $0 == UInt8(ascii: "<") || $0 == UInt8(ascii: "[") }) else { return nil }
        var best: (Range<Substring.Index>, Int)?
        for special in specialTokens {
            guard let id = tokenIDs[special], let range = text.range(of: special) else { continue }
            if best == nil || range.lowerBound < best!.0.lowerBound { best = (range, id) }
        }
        return best
    }

    private func encodeOrdinary(_ text: String, into out: inout [Int]) {
        if text.isEmpty { return }
        switch kind {
        case .byteLevel(let pre):
            pre.forEachPiece(of: text) { key in
                cacheLock.lock()
                let cached = cache[key]
                cacheLock.unlock()
                if let cached { out.append(contentsOf: cached); return }
                let ids = bpe(byteSymbols(key))
                cacheLock.lock()
                if cache.count < 1 << 20 { cache[key] = ids }
                cacheLock.unlock()
                out.append(contentsOf: ids)
            }
        case .sentencePiece(let addSpacePrefix):
            var normalized = text.replacingOccurrences(of: " ", with: "▁")
            if addSpacePrefix && (out.isEmpty || out == [bos ?? -1]) { normalized = "▁" + normalized }
            var symbols: [Int] = []
            for ch in normalized {
                if let id = tokenIDs[String(ch)] { symbols.append(id) } else {
                    for byte in String(ch).utf8 { symbols.append(byteTokens[Int(byte)]) }
                }
            }
            out.append(contentsOf: bpe(symbols))
        }
    }

    /// A byte-level piece as its byte tokens, before any merge.
    func byteSymbols(_ piece: String) -> [Int] { piece.utf8.map { byteTokens[Int($0)] } }

    /// Applies merges by rank until none applies; `report` (vocabulary pruning) sees each merge as (left, right, result).
    func bpe(_ initial: [Int], report: ((Int, Int, Int) -> Void)? = nil) -> [Int] {
        var symbols = initial
        while symbols.count > 1 {
            var bestRank = Int32.max, bestIndex = -1, bestMerged: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(truncatingIfNeeded: symbols[i])) << 32 | UInt64(UInt32(truncatingIfNeeded: symbols[i + 1]))
                if let m = merges[key], m.rank < bestRank { bestRank = m.rank; bestIndex = i; bestMerged = m.merged }
            }
            if bestIndex < 0 { break }
            report?(symbols[bestIndex], symbols[bestIndex + 1], Int(bestMerged))
            symbols[bestIndex] = Int(bestMerged)
            symbols.remove(at: bestIndex + 1)
        }
        return symbols
    }

    // MARK: Decoding

    /// The bytes a token stands for (special tokens render as their text).
    public func bytes(of id: Int) -> [UInt8] {
        guard id >= 0 && id < tokens.count, !unusedIDs.contains(id) else { return [] }
        let text = tokens[id]
        if specialSet.contains(id) { return Array(text.utf8) }
        switch kind {
        case .byteLevel:
            return text.unicodeScalars.map { ByteLevel.scalarToByte[$0.value] ?? UInt8(ascii: "?") }
        case .sentencePiece:
            if text.hasPrefix("<0x"), text.hasSuffix(">"), text.count == 6, let b = UInt8(text.dropFirst(3).dropLast(), radix: 16) { return [b] }
            return Array(text.replacingOccurrences(of: "▁", with: " ").utf8)
        }
    }

    public func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids where !(skipSpecial && specialSet.contains(id)) { bytes.append(contentsOf: self.bytes(of: id)) }
        var text = String(decoding: bytes, as: UTF8.self)
        if case .sentencePiece(true) = kind, text.hasPrefix(" ") { text.removeFirst() }
        return text
    }
}

/// Turns a stream of token ids into text pieces, holding back bytes of an unfinished UTF-8 character.
public struct StreamingDecoder {
    let tokenizer: Tokenizer
    var pending: [UInt8] = []
    var started = false

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    public mutating func push(_ id: Int) -> String {
        pending.append(contentsOf: tokenizer.bytes(of: id))
        if case .sentencePiece(true) = tokenizer.kind, !started, pending.first == UInt8(ascii: " ") { pending.removeFirst() }
        var cut = pending.count
        // Back off over an incomplete trailing sequence (at most 3 bytes).
        var back = 0
        while back < min(3, pending.count) {
            let b = pending[pending.count - 1 - back]
            if b & 0xC0 == 0x80 { back += 1; continue }
            if b & 0x80 != 0 {
                let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
                if back + 1 < need { cut = pending.count - 1 - back }
            }
            break
        }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        if !text.isEmpty { started = true }
        return text
    }

    public mutating func flush() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }
}

extension Tokenizer {
    /// "<0xAB>", the SentencePiece byte-fallback token for a byte (0...255).
    /// A static function, not a `String.init`, so `map(String.init)` cannot pick it up.
    public static func byteFallbackToken(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return "<0x" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 15)]) + ">"
    }
}

import Foundation

extension Tokenizer.Kind: CustomStringConvertible {
    public var description: String {
        switch self {
        case .byteLevel(let pre): return "byte-level BPE, \(pre)"
        case .sentencePiece: return "SentencePiece BPE"
        }
    }
}
