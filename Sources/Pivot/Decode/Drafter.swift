/// Proposes tokens the model is likely to produce next, for verification in one batched pass.
/// A drafter only speeds generation up; what is generated is decided by the model alone.
public protocol Drafter: AnyObject {
    /// Starts over with `context` (the prompt) as everything seen so far.
    func reset(context: [Int])
    /// Tokens generated since the last call (accepted drafts and the model's own tokens).
    func observe(_ tokens: [Int])
    /// Up to `limit` tokens to continue the sequence; empty when there is no good guess.
    /// How many to ask for is the generator's `DraftPolicy`'s choice.
    func draft(limit: Int) -> [Int]
}

/// ANPD's adaptive multi-level n-gram drafter (Ou et al., NAACL 2024 Industry): count tables for
/// n = 2...maxN built from the prompt and updated with every generated token; each drafted token
/// comes from the longest level whose key (the last n−1 tokens) was seen, the most frequent
/// follower winning (ties: the most recent). Single-token keys (n = 2) need `minBigramCount`
/// sightings, so free text without repetition drafts nothing. How many tokens to draft (ANPD's
/// adaptive K) is decided by `DraftPolicy` from recent acceptance and measured pass costs.
public final class NGramDrafter: Drafter {
    public let maxN: Int
    public let minBigramCount: Int
    private var tables: [[UInt64: Followers]]
    private var history: [Int] = []
    private var clock = 0

    /// Up to four followers per key, with counts and when each was last seen.
    struct Followers {
        var tokens: [(token: Int, count: Int, seen: Int)] = []

        mutating func add(_ token: Int, at time: Int) {
            if let i = tokens.firstIndex(where: { $0.token == token }) {
                tokens[i].count += 1; tokens[i].seen = time
            } else if tokens.count < 4 {
                tokens.append((token, 1, time))
            } else if let weakest = tokens.indices.min(by: { (tokens[$0].count, tokens[$0].seen) < (tokens[$1].count, tokens[$1].seen) }) {
                tokens[weakest] = (token, 1, time)
            }
        }

        var best: (token: Int, count: Int)? {
            tokens.max { ($0.count, $0.seen) < ($1.count, $1.seen) }.map { ($0.token, $0.count) }
        }
    }

    public init(maxN: Int = 4, minBigramCount: Int = 2) {
        precondition(maxN >= 2)
        self.maxN = maxN
        self.minBigramCount = minBigramCount
        tables = Array(repeating: [:], count: maxN - 1)
    }

    /// Key of the `length` tokens ending at `end` (exclusive) of `sequence`.
    @inline(__always)
    static func key<C: RandomAccessCollection>(_ sequence: C, end: C.Index, length: Int) -> UInt64 where C.Element == Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(length)
        var i = sequence.index(end, offsetBy: -length)
        while i != end { h = (h ^ UInt64(truncatingIfNeeded: sequence[i])) &* 0x0000_0100_0000_01b3; i = sequence.index(after: i) }
        return h
    }

    public func reset(context: [Int]) {
        tables = Array(repeating: [:], count: maxN - 1)
        history = []
        clock = 0
        observe(context)
    }

    public func observe(_ tokens: [Int]) {
        for token in tokens {
            clock += 1
            for n in 2...maxN where history.count >= n - 1 {
                tables[n - 2][Self.key(history, end: history.endIndex, length: n - 1), default: Followers()].add(token, at: clock)
            }
            history.append(token)
        }
    }

    /// The follower of the longest seen suffix of `sequence`, if its evidence is strong enough.
    func predict(_ sequence: ArraySlice<Int>) -> Int? {
        for n in stride(from: maxN, through: 2, by: -1) where sequence.count >= n - 1 {
            guard let best = tables[n - 2][Self.key(sequence, end: sequence.endIndex, length: n - 1)]?.best else { continue }
            if n == 2 && best.count < minBigramCount { return nil }
            return best.token
        }
        return nil
    }

    public func draft(limit length: Int) -> [Int] {
        guard length > 0 else { return [] }
        // Draft on a scratch extension of the history: the last maxN−1 tokens are all a key needs.
        var working = Array(history.suffix(maxN - 1))
        var proposed: [Int] = []
        while proposed.count < length, let next = predict(working[...]) {
            proposed.append(next)
            working.append(next)
        }
        return proposed
    }
}
