/// Training a group-wise quantized student keeps each block's stored scale and minimum (GPTQ's or
/// the search's choice) and moves only its codes: the straight-through estimator's forward weights
/// are the float masters snapped to those grids, and the trained file is the same blocks with new codes.
extension BlockFormat {
    /// Snaps `x` (a whole row, `count` weights) to the grids of `grid`'s blocks (same format, same row):
    /// code = clamp(round((x − m)/d)), as the encoder rounds. The snapped values go to `snapped`, the
    /// codes into `codes` (a row of blocks whose scales/minimums are rewritten from `grid`), when given.
    public func snapToGroupGrid(_ x: UnsafePointer<Float>, count: Int, grid: UnsafeRawPointer,
                                snapped: UnsafeMutablePointer<Float>?, codes: UnsafeMutableRawPointer?) {
        precondition(groupBits != nil, "a group-wise format")
        let group = elementsPerBlock, top = (1 << groupBits!) - 1
        for b in 0..<(count / group) {
            let source = grid + b * bytesPerBlock
            let d = loadHalf(source, 0), m = loadHalf(source, 2)
            let inverse: Float = d != 0 ? 1 / d : 0
            let block = codes.map { $0 + b * bytesPerBlock }
            if let block, UnsafeRawPointer(block) != source { block.copyMemory(from: source, byteCount: 4) }
            for c in 0..<group {
                let q = max(0, min(top, ScaleSearch.nearestInt((x[b * group + c] - m) * inverse)))
                snapped?[b * group + c] = d * Float(q) + m
                if let block { setGroupLevel(block, c, q) }
            }
        }
    }
}
