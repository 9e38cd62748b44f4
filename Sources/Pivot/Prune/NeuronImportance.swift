import Foundation

/// Wanda-style importance of each FFN intermediate channel j (Sun et al. 2023: |W|·‖x‖): the gate
/// and up rows j weighed by the norms of their input columns, Σₖ|W[j,k]|·‖xₖ‖, and ffn_down's column j
/// weighed by the channel's own activation norm, ‖aⱼ‖·Σᵣ|W_down[r,j]|. The three sums have different
/// scales, so each is divided by its mean over the layer's channels before they are added.
public enum NeuronImportance {
    /// `gate`/`up`: n × hidden; `down`: hidden × n; `inputSquares`: Σx² per hidden column; `activationSquares`: Σa² per channel.
    public static func scores(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, down: UnsafePointer<Float>, hidden: Int, channels n: Int,
                              inputSquares: [Double], activationSquares: [Double]) -> [Double] {
        let inputNorms = inputSquares.map { $0.squareRoot() }
        var g = [Double](repeating: 0, count: n), u = g, d = g
        for j in 0..<n {
            var sg = 0.0, su = 0.0
            for k in 0..<hidden {
                sg += Double(abs(gate[j * hidden + k])) * inputNorms[k]
                su += Double(abs(up[j * hidden + k])) * inputNorms[k]
            }
            g[j] = sg; u[j] = su
        }
        for r in 0..<hidden { for j in 0..<n { d[j] += Double(abs(down[r * n + j])) } }
        for j in 0..<n { d[j] *= activationSquares[j].squareRoot() }
        func normalized(_ v: [Double]) -> [Double] {
            let mean = v.reduce(0, +) / Double(max(v.count, 1))
            return mean > 0 ? v.map { $0 / mean } : v
        }
        let (ng, nu, nd) = (normalized(g), normalized(u), normalized(d))
        return (0..<n).map { ng[$0] + nu[$0] + nd[$0] }
    }

    /// Channels kept when a fraction `ratio` is removed: the highest scores, `count` rounded to a
    /// multiple of `multiple` (at least one multiple), in ascending index order.
    public static func kept(scores: [Double], ratio: Double, multiple: Int) -> [Int] {
        let count = keptCount(channels: scores.count, ratio: ratio, multiple: multiple)
        return Array(scores.indices.sorted { scores[$0] > scores[$1] }.prefix(count)).sorted()
    }

    public static func keptCount(channels: Int, ratio: Double, multiple: Int) -> Int {
        let target = Double(channels) * (1 - ratio) / Double(multiple)
        return min(channels, max(multiple, Int(target.rounded()) * multiple))
    }
}
