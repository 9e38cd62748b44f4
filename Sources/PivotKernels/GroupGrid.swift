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

/// Learned grids (EfficientQAT's end-to-end training of quantization parameters): a group's scale d
/// and minimum m move by gradient descent while its codes q stay put, so w = d·q + m gives
/// ∂L/∂d = Σ gᵢ·qᵢ and ∂L/∂m = Σ gᵢ.
extension BlockFormat {
    /// The gradient of each block's scale and minimum in a row: `gradient` is ∂L/∂w of the row's
    /// `count` weights, `snapped` the weights the forward pass read (on `grid`), whose codes are
    /// recovered by rounding. Writes (∂d, ∂m) pairs, one per block, to `out`.
    public func groupGridGradient(_ gradient: UnsafePointer<Float>, snapped: UnsafePointer<Float>, count: Int,
                                  grid: UnsafeRawPointer, into out: UnsafeMutablePointer<Float>) {
        precondition(groupBits != nil, "a group-wise format")
        let group = elementsPerBlock
        for b in 0..<(count / group) {
            let source = grid + b * bytesPerBlock
            let d = loadHalf(source, 0), m = loadHalf(source, 2)
            let inverse: Float = d != 0 ? 1 / d : 0
            var scale: Float = 0, minimum: Float = 0
            for c in 0..<group {
                let g = gradient[b * group + c]
                scale += g * Float(ScaleSearch.nearestInt((snapped[b * group + c] - m) * inverse))
                minimum += g
            }
            out[2 * b] = scale; out[2 * b + 1] = minimum
        }
    }

    /// A block's stored scale and minimum (as the forward pass reads them).
    public func groupGrid(_ grid: UnsafeRawPointer, block b: Int) -> (scale: Float, minimum: Float) {
        let source = grid + b * bytesPerBlock
        return (loadHalf(source, 0), loadHalf(source, 2))
    }

    /// Stores a block's scale and minimum (rounded to F16, as the file keeps them) and returns the stored values.
    @discardableResult
    public func setGroupGrid(_ grid: UnsafeMutableRawPointer, block b: Int, scale: Float, minimum: Float) -> (scale: Float, minimum: Float) {
        let target = grid + b * bytesPerBlock
        Self.storeHalf(scale, target, 0); Self.storeHalf(minimum, target, 2)
        return (loadHalf(UnsafeRawPointer(target), 0), loadHalf(UnsafeRawPointer(target), 2))
    }
}
