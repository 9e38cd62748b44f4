/// What the VNNI kernels read, as plain pointers: this module is compiled for AVX-512 (its own
/// target flags) and PivotKernels, built for AVX2, calls it only when the CPU reports AVX-512
/// F/BW/VL and VNNI (PivotKernelsAVXVNNI, built for AVX-VNNI, shares these types). Nothing with
/// intrinsics may be inlined into code built for another ISA, so every kernel entry point is
/// `@inline(never)`; only these plain pointer types are inlinable, and their initializers must stay
/// `@inlinable`: the AVX-VNNI and AVX2 paths build them on CPUs without AVX-512, so their code has
/// to be compiled in the caller's module, not here.

/// One row of Q8 activations (PivotKernels' `Q8Row`).
public struct VNNIRow {
    public let quants: UnsafePointer<Int8>
    public let scales: UnsafePointer<Float>
    public let sums: UnsafePointer<Float>
    public let halfSums: UnsafePointer<Int32>

    @inlinable public init(quants: UnsafePointer<Int8>, scales: UnsafePointer<Float>, sums: UnsafePointer<Float>, halfSums: UnsafePointer<Int32>) {
        self.quants = quants; self.scales = scales; self.sums = sums; self.halfSums = halfSums
    }
}

/// A matrix of Q8 activations (PivotKernels' `Q8Activations`): `rows` rows of `blocks` blocks of 32.
public struct VNNIActivations {
    public let quants: UnsafePointer<Int8>
    public let scales: UnsafePointer<Float>
    public let sums: UnsafePointer<Float>
    public let halfSums: UnsafePointer<Int32>
    public let rows: Int
    public let blocks: Int

    @inlinable public init(quants: UnsafePointer<Int8>, scales: UnsafePointer<Float>, sums: UnsafePointer<Float>,
                           halfSums: UnsafePointer<Int32>, rows: Int, blocks: Int) {
        self.quants = quants; self.scales = scales; self.sums = sums; self.halfSums = halfSums
        self.rows = rows; self.blocks = blocks
    }

    @inlinable @inline(__always) public func row(_ t: Int) -> VNNIRow {
        VNNIRow(quants: quants + t * blocks * 32, scales: scales + t * blocks, sums: sums + t * blocks, halfSums: halfSums + t * 2 * blocks)
    }
}

/// An eight-row interleaved weight layout (PivotKernels' `InterleavedLayout`): which block-32
/// format family it is and its byte sizes.
public struct VNNIInterleavedFormat {
    /// `groupwise`: Pivot's group-wise types, `runs` blocks of 32 per group sharing one d and m.
    public enum Family { case q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K, q8_0, groupwise(bits: Int, runs: Int) }
    public let family: Family
    /// Bytes of one block of 32 columns (K-quants: of one super-block of 256; group-wise types: of
    /// one group) across a group of 8 rows.
    public let blockBytes: Int
    /// Bytes of one group of 8 rows.
    public let groupBytes: Int
    /// Blocks of 32 per row.
    public let blocks: Int

    @inlinable public init(family: Family, blockBytes: Int, groupBytes: Int, blocks: Int) {
        self.family = family; self.blockBytes = blockBytes; self.groupBytes = groupBytes; self.blocks = blocks
    }
}
