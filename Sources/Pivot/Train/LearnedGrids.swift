import Foundation
import PivotKernels

/// The scales and minimums of a group-wise student's blocks, trained beside its codes (EfficientQAT's
/// end-to-end training of quantization parameters, Chen et al. 2024): with w = d·q + m, the weights'
/// gradient gives each block ∂d = Σ g·q and ∂m = Σ g, so two parameters per block of 32-128 weights
/// recover what rounding lost without moving a single code. The stored grids (F16, as the file keeps
/// them) are what the forward pass reads; float masters and AdamW's moments live here.
final class LearnedGrids {
    /// (scale, minimum) per block, in the order of `StudentGrid`'s tensors, row by row.
    var values: [Float]
    var gradients: [Float]
    var optimizer: AdamW

    init(values: [Float]) {
        self.values = values
        gradients = [Float](repeating: 0, count: values.count)
        optimizer = AdamW(count: values.count)
    }

    /// Checkpoint form: the update count, the masters, then both moments.
    var state: [Float] { [Float(optimizer.step)] + values + optimizer.firstMoment + optimizer.secondMoment }

    func restore(_ state: [Float]) throws {
        let n = values.count
        guard state.count == 1 + 3 * n else {
            throw PivotError.invalidArgument("the checkpoint's learned grids have \(max(0, state.count - 1) / 3) values, this student \(n)")
        }
        values = Array(state[1...n])
        optimizer = AdamW(settings: optimizer.settings, step: Int(state[0]),
                          firstMoment: Array(state[(1 + n)...(2 * n)]), secondMoment: Array(state[(1 + 2 * n)...]))
    }
}

extension StudentGrid {
    /// One AdamW update of every block's scale and minimum from the weights' gradient, then the masters
    /// follow their blocks (x ← m′ + (x − m)·d′/d) so every code stays where it was.
    public func learn(gradients: ParameterBuffer, master: ParameterBuffer, weights: ParameterBuffer, rate: Float, pool: ThreadPool) {
        guard let learned, rate > 0 else { return }
        learned.gradients.withUnsafeMutableBufferPointer { out in
            let out = out.baseAddress!
            for q in tensors {
                guard let firstBlock = q.firstBlock else { continue }
                let rowBytes = q.tensor.byteCount / q.rows, blocksPerRow = q.columns / q.format.elementsPerBlock
                pool.parallelRanges(count: q.rows, minChunk: 8) { rows in
                    for r in rows {
                        let at = q.offset + r * q.columns
                        q.format.groupGridGradient(gradients.base + at, snapped: weights.base + at, count: q.columns,
                                                   grid: q.grid + r * rowBytes, into: out + 2 * (firstBlock + r * blocksPerRow))
                    }
                }
            }
        }
        learned.values.withUnsafeMutableBufferPointer { values in learned.gradients.withUnsafeBufferPointer { g in
            learned.optimizer.update(parameters: values.baseAddress!, gradients: g.baseAddress!, learningRate: rate)
        } }
        learned.values.withUnsafeBufferPointer { values in
            let values = values.baseAddress!
            for q in tensors {
                guard let firstBlock = q.firstBlock else { continue }
                let rowBytes = q.tensor.byteCount / q.rows, group = q.format.elementsPerBlock, blocksPerRow = q.columns / group
                let grid = UnsafeMutableRawPointer(mutating: q.grid)
                pool.parallelRanges(count: q.rows, minChunk: 8) { rows in
                    for r in rows {
                        for b in 0..<blocksPerRow {
                            let index = firstBlock + r * blocksPerRow + b, row = grid + r * rowBytes
                            let old = q.format.groupGrid(row, block: b)
                            let new = q.format.setGroupGrid(row, block: b, scale: values[2 * index], minimum: values[2 * index + 1])
                            guard old.scale != 0, old != new else { continue }
                            let x = master.base + q.offset + r * q.columns + b * group, ratio = new.scale / old.scale
                            for c in 0..<group { x[c] = new.minimum + (x[c] - old.minimum) * ratio }
                        }
                    }
                }
            }
        }
    }
}
