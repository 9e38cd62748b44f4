import Foundation
import PivotKernels

/// llama.cpp's `llama-perplexity --kl-divergence-base` file, read as the base of `pivot kld --base-file`:
/// the same engine-independent check llama.cpp makes of its own quantizations, with Pivot as the
/// compared side (how a new family's forward pass is checked against llama.cpp's).
///
/// Layout (little endian): "_logits_", Int32 n_ctx, n_vocab, n_chunk, the chunks' tokens (Int32,
/// n_chunk × n_ctx, as tokenized: llama.cpp runs each chunk with its first token replaced by BOS where
/// the vocabulary adds one, and so does this reader); then for every chunk the
/// positions n_ctx/2 ..< n_ctx−1 (llama.cpp scores each window's second half), each a record of
/// 2·⌈n_vocab/2⌉ + 4 UInt16: Float32 scale and Float32 minimum log-probability, then per token
/// q with log p = min + scale·q (q = 0: at or below the minimum, which llama.cpp clamps at max − 16).
/// Like llama.cpp's `--kl-divergence`, terms with log p ≤ −16 are left out of the sum, and the base's
/// NLL of a token below the floor reads as the floor (PPL(base) is then a lower bound).
public enum LlamaKLDBaseFile {
    static let magic = Array("_logits_".utf8)

    static func isLlamaFile(_ file: MappedFile) -> Bool {
        file.size >= 20 && (0..<8).allSatisfy { file.base.load(fromByteOffset: $0, as: UInt8.self) == magic[$0] }
    }

    /// Scores `test` on the file's own tokens, chunk by chunk, over the positions llama.cpp scored.
    public static func evaluate(path: String, test: ScoringSide, pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws -> KLDResult {
        let file = try MappedFile(path: path)
        guard isLlamaFile(file) else { throw PivotError.malformed(file: path, "not a llama.cpp KL-divergence base file") }
        func i32(_ offset: Int) -> Int { Int(Int32(littleEndian: file.base.loadUnaligned(fromByteOffset: offset, as: Int32.self))) }
        let window = i32(8), vocabulary = i32(12), chunks = i32(16)
        guard (4...(1 << 20)).contains(window), (1...(1 << 22)).contains(vocabulary), (1...(1 << 24)).contains(chunks) else {
            throw PivotError.malformed(file: path, "implausible header (n_ctx \(window), n_vocab \(vocabulary), \(chunks) chunks)")
        }
        let first = window / 2, perWindow = window - 1 - first, record = 2 * ((vocabulary + 1) / 2) + 4
        let tokensOffset = 20, recordsOffset = tokensOffset + 4 * chunks * window
        guard file.size == recordsOffset + chunks * perWindow * record * 2 else {
            throw PivotError.malformed(file: path, "size does not match its header (n_ctx \(window), n_vocab \(vocabulary), \(chunks) chunks)")
        }
        guard vocabulary == test.model.config.vocabularySize else {
            throw PivotError.invalidArgument("\(path) was written for a vocabulary of \(vocabulary), the model has \(test.model.config.vocabularySize)")
        }
        guard window <= test.state.maxTokens, window <= test.model.config.contextLength, test.prefix.isEmpty else {
            throw PivotError.invalidArgument("\(path) has windows of \(window) tokens and no prefix; the model's context is \(test.model.config.contextLength), and the run needs no prefix")
        }
        let tokenizer = test.model.tokenizer
        let bos = tokenizer.addBOS ? tokenizer.bos : nil
        let count = chunks * perWindow
        var scores = TokenScores(count: count)
        let start = Date()
        for c in 0..<chunks {
            var ids = (0..<window).map { i32(tokensOffset + 4 * (c * window + $0)) }
            if let bos { ids[0] = bos }
            guard ids.allSatisfy({ $0 >= 0 && $0 < vocabulary }) else { throw PivotError.malformed(file: path, "token id outside the vocabulary in chunk \(c)") }
            let q = test.logits(ids)
            scores.fill(first: c * perWindow, count: perWindow, pool: pool) { t in
                let position = first + t
                let slot = file.base + recordsOffset + 2 * (c * perWindow + t) * record
                let scale = Double(Float(bitPattern: UInt32(littleEndian: slot.loadUnaligned(as: UInt32.self))))
                let minimum = Double(Float(bitPattern: UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 4, as: UInt32.self))))
                func logP(_ j: Int) -> Double { minimum + scale * Double(UInt16(littleEndian: slot.loadUnaligned(fromByteOffset: 8 + 2 * j, as: UInt16.self))) }
                let row = q.row(position), lseQ = Double(logSumExp(row, count: vocabulary))
                var divergence = 0.0, best = 0, bestP = -Double.infinity
                for j in 0..<vocabulary {
                    let lp = logP(j)
                    if lp > bestP { bestP = lp; best = j }
                    // As llama.cpp's own KLD: log-probabilities at its floor (−16) are not terms.
                    if lp > -16 { divergence += exp(lp) * (lp - (Double(row[j]) - lseQ)) }
                }
                let next = ids[position + 1]
                return (max(0, divergence), -logP(next), lseQ - Double(row[next]), argmax(row, count: vocabulary) == best)
            }
            progress(c + 1, chunks)
        }
        return scores.summarize(seconds: Date().timeIntervalSince(start))
    }

    /// The window length of a llama.cpp base file, nil if `path` is not one.
    public static func window(of path: String) throws -> Int? {
        guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
        let file = try MappedFile(path: path)
        return withExtendedLifetime(file) { isLlamaFile(file) ? Int(Int32(littleEndian: file.base.loadUnaligned(fromByteOffset: 8, as: Int32.self))) : nil }
    }
}
