import Foundation
import PivotKernels

/// KL divergence against a stored base, for models too large to hold twice (as llama.cpp's
/// `--kl-divergence-base`). The file keeps, for every scored token, the base's negative
/// log-likelihood of the actual next token and its top-K log-probabilities; KL is then computed over
/// those K tokens plus one bucket for the rest of the vocabulary:
/// Σ_top p·(log p − log q) + p_rest·(log p_rest − log q_rest). Grouping the tail can only lower KL
/// (log-sum inequality), a lower bound: for int8 against float on the default model (a small, spread-out divergence) K = 64 keeps 77% of the exact mean, 256 keeps 88%, 1024 keeps 95%.
///
/// Layout (little endian): "PVKLDv2\0", UInt32 vocabulary, window, windows, K, prefix length; the
/// prefix tokens run before every window (Int32, not scored; IntactKV's pivots); the window tokens
/// (Int32, windows × window, to check the compared run reads the same text); then per scored token
/// Float32 NLL, K × UInt32 ids, K × Float32 log-probabilities. Version 1 files (no prefix field)
/// still read.
public enum KLDBaseFile {
    static let magic = Array("PVKLDv2\0".utf8)
    static let magicV1 = Array("PVKLDv1\0".utf8)

    /// Runs the base over the windows and writes the file.
    public static func write(base: ScoringSide, tokens: [Int], window: Int, windows limit: Int?, topK: Int, to path: String,
                             pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws {
        let vocabulary = base.model.config.vocabularySize
        let windows = min(limit ?? tokens.count / window, tokens.count / window)
        guard windows > 0 else { throw PivotError.invalidArgument("the text has \(tokens.count) tokens, fewer than one window of \(window)") }
        guard (1...1024).contains(topK), topK < vocabulary else { throw PivotError.invalidArgument("top-K must be between 1 and 1024") }
        var data = Data(magic)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { data.append(contentsOf: $0) } }
        u32(vocabulary); u32(window); u32(windows); u32(topK); u32(base.prefix.count)
        for t in base.prefix { withUnsafeBytes(of: Int32(t).littleEndian) { data.append(contentsOf: $0) } }
        for t in tokens.prefix(windows * window) { withUnsafeBytes(of: Int32(t).littleEndian) { data.append(contentsOf: $0) } }
        let perToken = 4 + 8 * topK, perWindow = window - 1
        var record = [UInt8](repeating: 0, count: perWindow * perToken)
        for w in 0..<windows {
            let ids = Array(tokens[(w * window)..<((w + 1) * window)])
            let logits = base.logits(ids)
            record.withUnsafeMutableBytes { out in
                let out = out.baseAddress!
                pool.parallelRanges(count: perWindow) { range in
                    for t in range {
                        let row = logits.row(t), lse = logSumExp(row, count: vocabulary)
                        let slot = out + t * perToken
                        slot.storeBytes(of: (lse - row[ids[t + 1]]).bitPattern.littleEndian, as: UInt32.self)
                        let top = topIndices(row, count: vocabulary, k: topK)
                        for (j, id) in top.enumerated() {
                            slot.storeBytes(of: UInt32(id).littleEndian, toByteOffset: 4 + 4 * j, as: UInt32.self)
                            slot.storeBytes(of: (row[id] - lse).bitPattern.littleEndian, toByteOffset: 4 + 4 * topK + 4 * j, as: UInt32.self)
                        }
                    }
                }
            }
            data.append(contentsOf: record)
            progress(w + 1, windows)
        }
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// The `k` largest entries of `row`, largest first (ties: lower index first).
    static func topIndices(_ row: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        var best: [(value: Float, index: Int)] = []
        best.reserveCapacity(k + 1)
        for i in 0..<count {
            let v = row[i]
            if best.count == k, v <= best[k - 1].value { continue }
            var j = best.count
            best.append((v, i))
            while j > 0 && best[j - 1].value < v { best[j] = best[j - 1]; j -= 1 }
            best[j] = (v, i)
            if best.count > k { best.removeLast() }
        }
        return best.map(\.index)
    }

    /// The file mapped, once its magic and minimal header size are checked, with its prefix and where
    /// the window tokens start.
    static func open(_ path: String) throws -> (file: MappedFile, prefix: [Int], tokensOffset: Int) {
        guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
        let file = try MappedFile(path: path)
        func starts(with m: [UInt8]) -> Bool { file.size >= 24 && (0..<8).allSatisfy { file.base.load(fromByteOffset: $0, as: UInt8.self) == m[$0] } }
        if starts(with: magicV1) { return (file, [], 24) }
        guard starts(with: magic), file.size >= 28 else { throw PivotError.malformed(file: path, "not a Pivot KLD base file") }
        let count = Int(UInt32(littleEndian: file.base.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
        guard file.size >= 28 + 4 * count else { throw PivotError.malformed(file: path, "truncated prefix") }
        let prefix = (0..<count).map { Int(Int32(littleEndian: file.base.loadUnaligned(fromByteOffset: 28 + 4 * $0, as: Int32.self))) }
        return (file, prefix, 28 + 4 * count)
    }

    /// The prefix a base file was written with (empty: none), so the compared side can run the same.
    public static func prefix(of path: String) throws -> [Int] { try open(path).prefix }

    /// The window length a base file was written with (its header), so the compared side can match it.
    public static func window(of path: String) throws -> Int {
        let file = try open(path).file
        // The mapping must outlive the read: a temporary could be released (unmapped) before it.
        return withExtendedLifetime(file) { Int(UInt32(littleEndian: file.base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))) }
    }

    /// Scores `test` against the stored base over the same windows of the file.
    public static func evaluate(path: String, test: ScoringSide, tokens: [Int], pool: ThreadPool,
                                progress: (Int, Int) -> Void = { _, _ in }) throws -> KLDResult {
        let (file, prefix, tokensOffset) = try open(path)
        guard prefix == test.prefix else {
            throw PivotError.invalidArgument("\(path) was written with a prefix of \(prefix.count) token(s) before every window, the compared side runs \(test.prefix.count) "
                + (prefix.count == test.prefix.count ? "different ones" : "") + ": give the same --prefix option on both runs")
        }
        func u32(_ offset: Int) -> Int { Int(UInt32(littleEndian: file.base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))) }
        let vocabulary = u32(8), window = u32(12), windows = u32(16), topK = u32(20)
        let perToken = 4 + 8 * topK, perWindow = window - 1
        let recordsOffset = tokensOffset + 4 * windows * window
        guard window >= 2, topK >= 1, file.size == recordsOffset + windows * perWindow * perToken else {
            throw PivotError.malformed(file: path, "size does not match its header (truncated?)")
        }
        guard window <= test.state.maxTokens else {
            throw PivotError.invalidArgument("\(path) has windows of \(window) tokens; the compared side holds \(test.state.maxTokens)")
        }
        guard vocabulary == test.model.config.vocabularySize else {
            throw PivotError.invalidArgument("\(path) was written for a vocabulary of \(vocabulary), the model has \(test.model.config.vocabularySize)")
        }
        let stored = (0..<(windows * window)).map { Int(Int32(littleEndian: file.base.loadUnaligned(fromByteOffset: tokensOffset + 4 * $0, as: Int32.self))) }
        guard stored == Array(tokens.prefix(windows * window)) else {
            throw PivotError.invalidArgument("the text does not tokenize to the tokens \(path) was written for (another file or tokenizer)")
        }
        let count = windows * perWindow
        var scores = TokenScores(count: count)
        let start = Date()
        for w in 0..<windows {
            let ids = Array(stored[(w * window)..<((w + 1) * window)])
            let q = test.logits(ids)
            scores.fill(first: w * perWindow, count: perWindow, pool: pool) { t in
                let slot = file.base + recordsOffset + (w * perWindow + t) * perToken
                func f32(_ offset: Int) -> Float { Float(bitPattern: UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: offset, as: UInt32.self))) }
                let row = q.row(t), lseQ = logSumExp(row, count: vocabulary)
                var divergence = 0.0, massP = 0.0, massQ = 0.0
                for j in 0..<topK {
                    let id = Int(UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 4 + 4 * j, as: UInt32.self)))
                    let lp = Double(f32(4 + 4 * topK + 4 * j)), lq = Double(row[id] - lseQ)
                    divergence += exp(lp) * (lp - lq)
                    massP += exp(lp); massQ += exp(lq)
                }
                let restP = max(0, 1 - massP), restQ = max(1e-30, 1 - massQ)
                if restP > 0 { divergence += restP * (log(restP) - log(restQ)) }
                let topID = Int(UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
                return (max(0, divergence), Double(f32(0)), Double(lseQ - row[ids[t + 1]]), argmax(row, count: vocabulary) == topID)
            }
            progress(w + 1, windows)
        }
        return scores.summarize(seconds: Date().timeIntervalSince(start))
    }
}
