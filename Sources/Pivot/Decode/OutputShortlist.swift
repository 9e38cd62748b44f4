import Foundation
import PivotKernels

/// HW-TSC's output shortlist: the head computes logits only for a candidate set (a corpus's most
/// frequent tokens, the specials, every prompt's tokens); the rest read `notComputed`. Exact mode keeps greedy
/// output identical to the full head: the tokens outside the set are grouped into clusters (k-means
/// on their head rows), and a cluster's best logit is bounded by h·c + ‖h‖·r (centroid c, radius r);
/// every cluster whose bound reaches the best candidate logit is computed exactly, best bound first,
/// until none can win. Sampling at a temperature sees the candidates' distribution (lossy for
/// sampling by design); greedy decoding is exact. Lossy mode skips the check.
public final class OutputShortlist: LinearOperator {
    public struct Settings: Codable, Sendable, Equatable {
        public var size: Int
        /// The text whose token frequencies pick the candidates.
        public var corpus: String
        public var exact: Bool
        public init(size: Int, corpus: String, exact: Bool = true) { self.size = size; self.corpus = corpus; self.exact = exact }
    }

    /// The logit of a token outside the set: finite (the engine refuses non-finite logits as a broken
    /// model), and far below any real logit, so its probability is exactly 0.
    public static let notComputed: Float = -1e30

    struct Cluster {
        let members: [Int]
        let head: LinearOperator
    }

    let full: LinearOperator
    let weights: TensorData
    public let exact: Bool
    public private(set) var candidates: [Int]
    private var isCandidate: [Bool]
    private var head: LinearOperator
    let clusters: [Cluster]
    /// Per cluster, what the bound adds to h·c per unit of ‖h‖: the radius, plus 1% of ‖c‖ + r as room for
    /// the int8 activations the computed logits meet (the bound is on the float product).
    let boundSlack: [Float]
    /// The clusters' centroids as one operator: x·c for every cluster in one product.
    let centroids: LinearOperator
    private let scratch: FloatBuffer, bounds: FloatBuffer, clusterLogits: FloatBuffer
    let maxRows: Int
    /// Rows computed, rows where tokens outside the set could win, clusters opened in all, rows that ran the whole head.
    public private(set) var rowCount = 0, checkedRows = 0, openedClusters = 0, fullRows = 0

    public var inFeatures: Int { full.inFeatures }
    public var outFeatures: Int { full.outFeatures }
    public var weightBytes: Int { full.weightBytes }
    public var formatName: String { full.formatName + "+shortlist" }

    /// `weights`: the head's rows (the output tensor, or the tied embedding); `initial`: the candidate ids.
    public init(full: LinearOperator, weights: TensorData, initial: [Int], exact: Bool, clusterCount: Int = 256, maxRows: Int = 64,
                pool: ThreadPool) {
        self.full = full; self.weights = weights; self.exact = exact; self.maxRows = maxRows
        let vocabulary = weights.shape[0], width = weights.shape[1]
        let chosen = Array(Set(initial.filter { $0 >= 0 && $0 < vocabulary })).sorted()
        var member = [Bool](repeating: false, count: vocabulary)
        for c in chosen { member[c] = true }
        candidates = chosen
        isCandidate = member
        head = makeLinear(weights.gatheringRows(chosen))
        let outside = (0..<vocabulary).filter { !member[$0] }
        let (groups, centers, radii) = exact ? Self.kMeans(weights, members: outside, k: min(clusterCount, max(1, outside.count)), pool: pool)
                                             : ([], [Float](), [Float]())
        clusters = groups.map { Cluster(members: $0, head: makeLinear(weights.gatheringRows($0))) }
        boundSlack = radii.indices.map { c in
            let norm = (0..<width).reduce(Float(0)) { $0 + centers[c * width + $1] * centers[c * width + $1] }.squareRoot()
            return radii[c] * 1.01 + 0.01 * norm
        }
        let centerBytes = OwnedBytes(count: max(1, centers.count) * 4)
        centers.withUnsafeBytes { if let base = $0.baseAddress { centerBytes.pointer.copyMemory(from: base, byteCount: $0.count) } }
        centroids = makeLinear(TensorData(name: "shortlist.centroids", type: .f32, shape: [max(1, groups.count), width],
                                          data: UnsafeRawPointer(centerBytes.pointer), byteCount: max(1, groups.count) * width * 4, owner: centerBytes))
        scratch = FloatBuffer(count: maxRows * vocabulary)
        bounds = FloatBuffer(count: maxRows * max(1, groups.count))
        clusterLogits = FloatBuffer(count: vocabulary)
    }

    /// One line on how often the exact check had to compute tokens outside the set.
    public var summary: String {
        let share = rowCount > 0 ? 100 * Double(checkedRows) / Double(rowCount) : 0
        return String(format: "shortlist: %d candidates of %d; %@", candidates.count, isCandidate.count,
                      exact ? String(format: "exact check: outside tokens could win on %d of %d rows (%.1f%%); %d ran the whole head, %d clusters of %d opened on the rest",
                                     checkedRows, rowCount, share, fullRows, openedClusters, clusters.count)
                            + (bypassedRows > 0 ? "; \(bypassedRows) more rows went straight to the whole head (the check fired on >90%)" : "") : "lossy (no check)")
    }

    /// Adds `tokens` (a prompt's) to the candidates; the head is rebuilt only when some are new.
    /// Tokens moved in stay in their clusters too, which only loosens a bound.
    public func include(_ tokens: [Int]) {
        let fresh = Set(tokens.filter { $0 >= 0 && $0 < isCandidate.count && !isCandidate[$0] })
        guard !fresh.isEmpty else { return }
        for t in fresh { isCandidate[t] = true }
        candidates = (candidates + fresh).sorted()
        head = makeLinear(weights.gatheringRows(candidates))
    }

    /// Exact mode on a head where the check almost always fires: the shortlist is only overhead, so after
    /// 64 rows with more than 90% fired, rows go straight to the whole head, one row in 64 still probing.
    private var bypassing: Bool {
        exact && rowCount >= 64 && checkedRows * 10 > rowCount * 9
    }
    public private(set) var bypassedRows = 0
    private var sinceProbe = 0

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        guard x.rows <= maxRows else { return full.forward(x, into: y, context: context) }
        if bypassing {
            sinceProbe += 1
            if sinceProbe < 64 {
                bypassedRows += x.rows
                return full.forward(x, into: y, context: context)
            }
            sinceProbe = 0
        }
        let n = candidates.count
        let part = scratch.matrix(rows: x.rows, columns: n)
        head.forward(x, into: part, context: context)
        for t in 0..<x.rows {
            let out = y.row(t), row = part.row(t)
            for j in 0..<y.columns { out[j] = Self.notComputed }
            for (j, id) in candidates.enumerated() { out[id] = row[j] }
        }
        rowCount += x.rows
        guard exact, !clusters.isEmpty else { return }
        let k = clusters.count
        let b = bounds.matrix(rows: x.rows, columns: k)
        centroids.forward(x, into: b, context: context)
        for t in 0..<x.rows {
            let out = y.row(t), h = x.row(t)
            var best = -Float.infinity
            for j in 0..<n { best = max(best, part.row(t)[j]) }
            var norm: Float = 0
            for i in 0..<x.columns { norm += h[i] * h[i] }
            norm = norm.squareRoot()
            let row = b.row(t)
            var reaching = 0
            for c in 0..<k {
                row[c] += norm * boundSlack[c] + 1e-3
                if row[c] >= best { reaching += 1 }
            }
            if reaching == 0 { continue }
            checkedRows += 1
            // Opening most clusters one by one costs more than the whole head: past a quarter, run the head.
            if reaching * 4 > k {
                fullRows += 1
                full.forward(x.rows(t, 1), into: y.rows(t, 1), context: context)
                continue
            }
            let order = (0..<k).filter { row[$0] >= best }.sorted { row[$0] > row[$1] }
            for c in order where row[c] >= best {
                let cluster = clusters[c]
                let logits = clusterLogits.matrix(rows: 1, columns: cluster.members.count)
                cluster.head.forward(x.rows(t, 1), into: logits, context: context)
                for (j, id) in cluster.members.enumerated() {
                    let v = logits.row(0)[j]
                    out[id] = v
                    best = max(best, v)
                }
                openedClusters += 1
            }
        }
    }

    /// Lloyd's k-means on the members' rows (dequantized): the groups, their centroids (k × width) and
    /// each group's radius, the largest distance of a member's row from its centroid.
    static func kMeans(_ t: TensorData, members: [Int], k: Int, iterations: Int = 6, pool: ThreadPool) -> ([[Int]], [Float], [Float]) {
        let width = t.shape[1], rowBytes = t.byteCount / t.shape[0], m = members.count
        guard m > 0 else { return ([], [], []) }
        var data = [Float](repeating: 0, count: m * width)
        data.withUnsafeMutableBufferPointer { d in
            for (i, r) in members.enumerated() { t.type.convert(t.data + r * rowBytes, count: width, into: d.baseAddress! + i * width) }
        }
        var centers = [Float](repeating: 0, count: k * width)
        for c in 0..<k { let src = (c * m / k) * width; for i in 0..<width { centers[c * width + i] = data[src + i] } }
        var assignment = [Int](repeating: 0, count: m)
        var dots = [Float](repeating: 0, count: m * k)
        for iteration in 0...iterations {
            let centerNorms = (0..<k).map { c in (0..<width).reduce(Float(0)) { $0 + centers[c * width + $1] * centers[c * width + $1] } }
            sgemm(transposeA: false, transposeB: true, m: m, n: k, k: width, a: data, lda: width, b: centers, ldb: width, c: &dots, ldc: k, pool: pool)
            for i in 0..<m {
                var best = 0, bestDistance = Float.infinity
                for c in 0..<k { let d = centerNorms[c] - 2 * dots[i * k + c]; if d < bestDistance { bestDistance = d; best = c } }
                assignment[i] = best
            }
            if iteration == iterations { break }
            var sums = [Float](repeating: 0, count: k * width), counts = [Int](repeating: 0, count: k)
            for i in 0..<m { counts[assignment[i]] += 1; for j in 0..<width { sums[assignment[i] * width + j] += data[i * width + j] } }
            for c in 0..<k where counts[c] > 0 { for j in 0..<width { centers[c * width + j] = sums[c * width + j] / Float(counts[c]) } }
        }
        var groups = [[Int]](repeating: [], count: k), radii = [Float](repeating: 0, count: k)
        for i in 0..<m {
            let c = assignment[i]
            groups[c].append(members[i])
            var d: Float = 0
            for j in 0..<width { let e = data[i * width + j] - centers[c * width + j]; d += e * e }
            radii[c] = max(radii[c], d.squareRoot())
        }
        let used = (0..<k).filter { !groups[$0].isEmpty }
        return (used.map { groups[$0] }, used.flatMap { c in (0..<width).map { centers[c * width + $0] } }, used.map { radii[$0] })
    }
}
