/// How many tokens to draft: the K that maximizes expected tokens per unit of time.
///
/// A pass over K+1 tokens yields 1 + a + a² + … + a^K tokens on average when each drafted token is
/// accepted with probability a, and costs c(K+1) single-token steps. On a CPU a batch is far from
/// free (with a 135M model, 8 tokens cost ~2.7 steps), so K follows both the acceptance seen lately
/// and the measured cost of each batch size; K = 0 (plain decoding) whenever drafting would not pay,
/// which keeps free generation at plain speed.
public struct DraftPolicy: Sendable {
    public let maxDraft: Int
    /// Always draft this many (tests, experiments); nil: choose by expected efficiency.
    public var fixedLength: Int?
    /// Per-token acceptance, an exponential moving average.
    public private(set) var acceptance: Double
    /// Seconds per pass of n tokens (index n), moving averages; index 0 unused.
    public private(set) var passSeconds: [Double]
    private var measured: [Bool]
    let smoothing = 0.15

    public init(maxDraft: Int, initialAcceptance: Double = 0.6) {
        self.maxDraft = maxDraft
        acceptance = initialAcceptance
        // Until measured: a batch of n costs 1 + 0.3·(n−1) steps, about what a small model shows.
        passSeconds = (0...(maxDraft + 1)).map { 1 + 0.3 * Double(max(0, $0 - 1)) }
        measured = Array(repeating: false, count: maxDraft + 2)
    }

    /// Relative cost of a pass of n tokens (a single-token step = 1).
    public func cost(_ n: Int) -> Double { passSeconds[n] / passSeconds[1] }

    /// Expected tokens per step-equivalent of time for drafting k tokens.
    public func efficiency(_ k: Int) -> Double {
        let a = min(acceptance, 0.999)
        let expected = 1 + a * (1 - pow(a, Double(k))) / (1 - a)
        return expected / cost(k + 1)
    }

    /// The best draft length now, at most `limit`.
    public func length(limit: Int) -> Int {
        if let fixedLength { return min(limit, fixedLength) }
        var best = 0, bestValue = 1.0
        for k in stride(from: 1, through: min(limit, maxDraft), by: 1) where efficiency(k) > bestValue * 1.02 {
            best = k; bestValue = efficiency(k)
        }
        return best
    }

    /// A pass of `tokens` took `seconds`. The first measurement of a size replaces the prior.
    public mutating func recordPass(tokens: Int, seconds: Double) {
        guard tokens < passSeconds.count, seconds > 0 else { return }
        if !measured[tokens] {
            // The first measurement of all puts the prior into seconds, keeping its ratios for sizes not yet seen.
            if !measured.contains(true) {
                let scale = seconds / passSeconds[tokens]
                for n in passSeconds.indices { passSeconds[n] *= scale }
            }
            passSeconds[tokens] = seconds
            measured[tokens] = true
        } else {
            passSeconds[tokens] += smoothing * (seconds - passSeconds[tokens])
        }
    }

    /// `accepted` of `proposed` drafted tokens were taken: the geometric estimate of a.
    public mutating func recordVerification(proposed: Int, accepted: Int) {
        guard proposed > 0 else { return }
        // Accepted tokens are successes; the first rejection (if any) is the one failure seen.
        for _ in 0..<accepted { acceptance += smoothing * (1 - acceptance) }
        if accepted < proposed { acceptance += smoothing * (0 - acceptance) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
