import PivotKernels

/// OTT's outlier tokens: when a key group is quantized per channel, a few tokens whose keys do not
/// follow the channels' pattern would stretch every channel's range (and so every code step). Up to
/// `perGroup` of them per group keep their F16 keys here instead, and the group is quantized without
/// them; attention takes their scores from these keys (values stay per-token codes, which other
/// tokens do not disturb).
///
/// The pool is bounded per layer and KV head: once full, later groups are quantized whole, so the
/// choice for a group depends only on the groups before it — batched and token-by-token runs pick the
/// same tokens, and a rollback drops the entries of groups it un-packs.
final class OutlierTokenPool {
    let perGroup: Int, capacity: Int, headDim: Int
    let criterion: KIVISettings.OutlierCriterion
    let positions: UnsafeMutablePointer<Int32>
    let keys: HalfBuffer
    private(set) var counts: [Int]
    private let scores: FloatBuffer
    private let excluded: UnsafeMutablePointer<Bool>

    init(heads: Int, settings spec: KIVISettings, headDim: Int) {
        perGroup = spec.outlierTokens; capacity = spec.outlierPool; self.headDim = headDim; criterion = spec.outlierCriterion
        positions = .allocate(capacity: max(1, heads * capacity))
        positions.initialize(repeating: 0, count: max(1, heads * capacity))
        keys = HalfBuffer(count: heads * capacity * headDim)
        counts = Array(repeating: 0, count: heads)
        scores = FloatBuffer(count: spec.group)
        excluded = .allocate(capacity: spec.group)
        excluded.initialize(repeating: false, count: spec.group)
    }

    deinit { positions.deallocate(); excluded.deallocate() }

    /// Picks the outliers of the key group at `firstPosition` (rows: `tokens` keys of `headDim` floats),
    /// stores their keys, and returns which tokens to leave out of the group's ranges (nil: none).
    func pick(head: Int, firstPosition: Int, rows: UnsafePointer<Float>, tokens: Int) -> UnsafePointer<Bool>? {
        let room = min(perGroup, capacity - counts[head])
        guard room > 0 else { return nil }
        let d = headDim
        switch criterion {
        case .norm:
            // Smallest magnitude first: score = −‖k‖².
            for t in 0..<tokens { scores.pointer[t] = -dotF32(rows + t * d, rows + t * d, count: d) }
        case .range:
            // How much of each channel's range a token alone spans beyond the others.
            for t in 0..<tokens { scores.pointer[t] = 0 }
            for c in 0..<d {
                var top = -Float.infinity, second = -Float.infinity, low = Float.infinity, secondLow = Float.infinity
                var topAt = 0, lowAt = 0
                for t in 0..<tokens {
                    let x = rows[t * d + c]
                    if x > top { second = top; top = x; topAt = t } else if x > second { second = x }
                    if x < low { secondLow = low; low = x; lowAt = t } else if x < secondLow { secondLow = x }
                }
                let range = max(top - low, .leastNormalMagnitude)
                scores.pointer[topAt] += (top - second) / range
                scores.pointer[lowAt] += (secondLow - low) / range
            }
        }
        excluded.update(repeating: false, count: tokens)
        for _ in 0..<room {
            var best = -1
            for t in 0..<tokens where !excluded[t] && (best < 0 || scores.pointer[t] > scores.pointer[best]) { best = t }
            excluded[best] = true
        }
        // Entries in position order, so a rollback pops from the end.
        for t in 0..<tokens where excluded[t] {
            let slot = head * capacity + counts[head]
            positions[slot] = Int32(firstPosition + t)
            storeHalf(rows + t * d, into: keys.pointer + slot * d, count: d)
            counts[head] += 1
        }
        return UnsafePointer(excluded)
    }

    /// Forgets the entries at or after `position` (their groups were rolled back).
    func drop(head: Int, from position: Int) {
        while counts[head] > 0 && Int(positions[head * capacity + counts[head] - 1]) >= position { counts[head] -= 1 }
    }

    /// The F16 key kept for `position`, if it is an outlier.
    func key(head: Int, position: Int) -> UnsafePointer<UInt16>? {
        for i in 0..<counts[head] where Int(positions[head * capacity + i]) == position {
            return UnsafePointer(keys.pointer + (head * capacity + i) * headDim)
        }
        return nil
    }
}
