/// Splits text into the pieces BPE runs on, with hand-written scanners equivalent to the
/// regular expressions of each tokenizer family (no regex engine, no backtracking).
public enum PreTokenizer: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    /// `individualDigits` first isolates every digit (SmolLM, StarCoder).
    case gpt2(individualDigits: Bool)
    /// Llama-3 (`maxDigits` 3) and Qwen2 (`maxDigits` 1): case-insensitive contractions,
    /// `[^\r\n\p{L}\p{N}]?\p{L}+`, `\p{N}{1,n}`, ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
    case llama3(maxDigits: Int)

    enum CharClass: UInt8 { case letter, number, space, other }

    static func classify(_ s: Unicode.Scalar) -> CharClass {
        if s.value < 128 {
            let v = s.value
            if (v >= 65 && v <= 90) || (v >= 97 && v <= 122) { return .letter }
            if v >= 48 && v <= 57 { return .number }
            if v == 32 || (v >= 9 && v <= 13) { return .space }
            return .other
        }
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Ranges of `scalars` forming the pieces, in order, covering all of it.
    /// Each piece of `text` as a string, in order: what byte-level BPE encodes one at a time.
    func forEachPiece(of text: String, _ body: (String) -> Void) {
        let scalars = Array(text.unicodeScalars)
        for piece in split(scalars) {
            var word = String.UnicodeScalarView()
            word.append(contentsOf: scalars[piece])
            body(String(word))
        }
    }

    public func split(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
        let classes = scalars.map(Self.classify)
        var pieces: [Range<Int>] = []
        switch self {
        case .gpt2(let individualDigits):
            if individualDigits {
                var start = 0
                for i in 0..<scalars.count where classes[i] == .number {
                    if start < i { Self.gpt2(scalars, classes, start..<i, &pieces) }
                    pieces.append(i..<i + 1)
                    start = i + 1
                }
                if start < scalars.count { Self.gpt2(scalars, classes, start..<scalars.count, &pieces) }
            } else {
                Self.gpt2(scalars, classes, 0..<scalars.count, &pieces)
            }
        case .llama3(let maxDigits):
            Self.llama3(scalars, classes, maxDigits: maxDigits, &pieces)
        }
        return pieces
    }

    private static func contractionLength(_ s: [Unicode.Scalar], at i: Int, end: Int, caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < end else { return 0 }
        func lower(_ x: Unicode.Scalar) -> Unicode.Scalar {
            caseInsensitive && x.value >= 65 && x.value <= 90 ? Unicode.Scalar(x.value + 32)! : x
        }
        let a = lower(s[i + 1])
        if a == "s" || a == "t" || a == "m" || a == "d" { return 2 }
        if i + 2 < end {
            let b = lower(s[i + 2])
            if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { return 3 }
        }
        return 0
    }

    /// End of the whitespace-run alternatives `\s+(?!\S)|\s+` starting at i.
    private static func whitespaceEnd(_ c: [CharClass], _ i: Int, end: Int) -> Int {
        var k = i
        while k < end && c[k] == .space { k += 1 }
        if k == end || k - i == 1 { return k }
        return k - 1
    }

    private static func gpt2(_ s: [Unicode.Scalar], _ c: [CharClass], _ range: Range<Int>, _ out: inout [Range<Int>]) {
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            let contraction = contractionLength(s, at: i, end: end, caseInsensitive: false)
            if contraction > 0 { out.append(i..<i + contraction); i += contraction; continue }
            var j = i
            if s[i] == " " && i + 1 < end && c[i + 1] != .space { j = i + 1 }
            let cls = c[j]
            if cls != .space {
                var k = j + 1
                while k < end && c[k] == cls { k += 1 }
                out.append(i..<k); i = k; continue
            }
            let k = whitespaceEnd(c, i, end: end)
            out.append(i..<k); i = k
        }
    }

    private static func llama3(_ s: [Unicode.Scalar], _ c: [CharClass], maxDigits: Int, _ out: inout [Range<Int>]) {
        var i = 0
        let end = s.count
        func isNewline(_ k: Int) -> Bool { s[k] == "\r" || s[k] == "\n" }
        while i < end {
            let contraction = contractionLength(s, at: i, end: end, caseInsensitive: true)
            if contraction > 0 { out.append(i..<i + contraction); i += contraction; continue }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            var j = i
            if c[i] != .letter && c[i] != .number && !isNewline(i) && i + 1 < end && c[i + 1] == .letter { j = i + 1 }
            if c[j] == .letter {
                var k = j + 1
                while k < end && c[k] == .letter { k += 1 }
                out.append(i..<k); i = k; continue
            }
            if c[i] == .number {
                var k = i + 1
                while k < end && k - i < maxDigits && c[k] == .number { k += 1 }
                out.append(i..<k); i = k; continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            j = (s[i] == " " && i + 1 < end && c[i + 1] == .other) ? i + 1 : i
            if c[j] == .other {
                var k = j + 1
                while k < end && c[k] == .other { k += 1 }
                while k < end && isNewline(k) { k += 1 }
                out.append(i..<k); i = k; continue
            }
            // \s*[\r\n]+ : through the last newline of this whitespace run
            var runEnd = i
            var lastNewline = -1
            while runEnd < end && c[runEnd] == .space { if isNewline(runEnd) { lastNewline = runEnd }; runEnd += 1 }
            if lastNewline >= 0 { out.append(i..<lastNewline + 1); i = lastNewline + 1; continue }
            let k = whitespaceEnd(c, i, end: end)
            out.append(i..<k); i = k
        }
    }
}

/// GPT-2's reversible map from bytes to printable characters, so byte-level tokens are strings.
public enum ByteLevel {
    public static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var extra: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable { table[b] = Unicode.Scalar(UInt32(b))! } else { table[b] = Unicode.Scalar(256 + extra)!; extra += 1 }
        }
        return table
    }()

    public static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
        return map
    }()
}

extension PreTokenizer: CustomStringConvertible {
    public var description: String {
        switch self {
        case .gpt2(let digits): return digits ? "GPT-2 regex, single digits (SmolLM)" : "GPT-2 regex"
        case .llama3(let n): return n == 3 ? "Llama-3 regex" : "Qwen2 regex"
        }
    }
}
