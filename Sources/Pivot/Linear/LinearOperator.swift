import PivotKernels

/// Scratch shared by every operator of one forward pass: the thread pool and the int8
/// activation buffer. One per model instance; never touched by two passes at once.
public final class ComputeContext {
    public let pool: ThreadPool
    public let activations: Q8Activations
    /// How quantized weights meet activations.
    public var precision: ActivationPrecision
    /// Reused dispatch object so quantized products do not allocate.
    public let matMulJob = QuantizedMatMulJob()

    public init(pool: ThreadPool, maxTokens: Int, maxColumns: Int, precision: ActivationPrecision = .int8) {
        self.pool = pool
        self.precision = precision
        activations = Q8Activations(capacityRows: maxTokens, maxColumns: maxColumns)
    }
}

/// `.int8` quantizes activations per block of 32 and uses integer dot products (the fast path,
/// as llama.cpp does); `.float` dequantizes weights on the fly against float activations,
/// matching a float reference implementation to ~1e-4 at a fraction of the speed.
public enum ActivationPrecision: String, Sendable, CaseIterable { case int8, float }

/// y = W·x for every row of x: the seam where weight formats and compression methods plug in.
public protocol LinearOperator: AnyObject {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Bytes the weights occupy (for `inspect`, memory reports and bits-per-weight).
    var weightBytes: Int { get }
    /// A short label such as "Q4_1" or "F32".
    var formatName: String { get }
    /// `x` is tokens × inFeatures, `y` tokens × outFeatures.
    func forward(_ x: Matrix, into y: Matrix, context: ComputeContext)
}

/// Builds the operator that runs a weight tensor in its stored format.
public func makeLinear(_ tensor: TensorData) -> LinearOperator {
    switch tensor.type {
    case .block(let format): return QuantizedLinear(tensor, format: format)
    case .f16: return HalfLinear(tensor, kind: .f16)
    case .bf16: return HalfLinear(tensor, kind: .bf16)
    case .f32: return DenseLinear(tensor)
    }
}

/// GGML block-quantized weights; activations go to int8. Every format has an interleaved layout
/// (`InterleavedLayout.supports`: the block-32 types, the K-quants, Q8_0, the group-wise types), and
/// a matrix with rows in multiples of 8 (and whole groups or super-blocks per row) is repacked once
/// at load into it (the file's pages are released), which roughly halves the instructions per weight
/// of a product; other shapes are used in place from the memory map with the one-row kernels.
public final class QuantizedLinear: LinearOperator, FusableProjection {
    public let inFeatures: Int
    public let outFeatures: Int
    public let format: BlockFormat
    let weights: UnsafeRawPointer
    let rowBytes: Int
    let owner: AnyObject
    let interleaved: InterleavedLayout?

    public init(_ tensor: TensorData, format: BlockFormat, interleave: Bool = true) {
        precondition(tensor.shape.count == 2)
        outFeatures = tensor.shape[0]
        inFeatures = tensor.shape[1]
        self.format = format
        rowBytes = format.rowBytes(inFeatures)
        if interleave, let layout = InterleavedLayout(format: format, rows: outFeatures, columns: inFeatures) {
            let rowBytes = rowBytes, rows = outFeatures
            (weights, owner) = tensor.repacked(byteCount: rows / InterleavedLayout.rowsPerGroup * layout.groupBytes) {
                layout.repack(tensor.data, rowBytes: rowBytes, rows: rows, into: $0)
            }
            interleaved = layout
        } else {
            weights = tensor.data
            owner = tensor.owner
            interleaved = nil
        }
    }

    public var weightBytes: Int { rowBytes * outFeatures }
    public var formatName: String { TensorType.block(format).description }

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        if context.precision == .float {
            let format = self.format, weights = self.weights, rowBytes = self.rowBytes, columns = inFeatures, layout = interleaved
            context.pool.parallelRanges(count: outFeatures, minChunk: 16) { range in
                if let layout {
                    interleavedMatMulFloat(layout, weights: weights, outputs: range, x: x.base, xStride: x.stride,
                                           tokens: x.rows, out: y.base, outStride: y.stride)
                } else {
                    quantizedMatMulFloat(format, weights: weights, rowBytes: rowBytes, outputs: range, x: x.base, xStride: x.stride,
                                         columns: columns, tokens: x.rows, out: y.base, outStride: y.stride)
                }
            }
            return
        }
        let act = context.activations
        act.quantize(x.base, rows: x.rows, columns: inFeatures, stride: x.stride, pool: context.pool)
        context.matMulJob.run(segment(into: y, input: x), act: act, pool: context.pool)
    }

    var fusedInFeatures: Int? { inFeatures }

    /// This operator's weights writing into `y`, for a fused dispatch.
    func segment(into y: Matrix, input x: Matrix) -> QuantizedMatMulJob.Segment {
        .init(format: format, weights: weights, rowBytes: rowBytes, rows: outFeatures, out: y.base, outStride: y.stride,
              interleaved: interleaved)
    }
}

/// F16 or BF16 weights, widened inside the product: half the memory of F32 and half the bytes read
/// per token. On the AVX-512 path they are repacked once at load into panels of 16 rows
/// (`HalfPanels`; the file's pages are released) for the outer-product tiles; elsewhere they are
/// used in place from the memory map.
public final class HalfLinear: LinearOperator {
    public let inFeatures: Int
    public let outFeatures: Int
    public let kind: HalfKind
    let weights: UnsafeRawPointer
    let owner: AnyObject
    let panels: HalfPanels?

    public init(_ tensor: TensorData, kind: HalfKind) {
        precondition(tensor.shape.count == 2)
        outFeatures = tensor.shape[0]
        inFeatures = tensor.shape[1]
        self.kind = kind
        if KernelISA.active == .avx512, outFeatures > 0, inFeatures > 0 {
            let layout = HalfPanels(kind: kind, rows: outFeatures, columns: inFeatures)
            (weights, owner) = tensor.repacked(byteCount: layout.byteCount) { layout.pack(tensor.data, into: $0) }
            panels = layout
        } else {
            weights = tensor.data
            owner = tensor.owner
            panels = nil
        }
    }

    public var weightBytes: Int { outFeatures * inFeatures * 2 }
    public var formatName: String { kind == .f16 ? "F16" : "BF16" }

    /// The rows of panels `range` (of `panels`), for a dispatch shared with other projections.
    func forward(panels range: Range<Int>, _ x: Matrix, into y: Matrix) {
        guard let panels else { preconditionFailure("forward(panels:) on weights without panels") }
        halfPanelMatMul(panels, weights: weights, panels: range, x: x.base, xStride: x.stride, tokens: x.rows, out: y.base, outStride: y.stride)
    }

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        let w = weights, n = inFeatures, kind = self.kind
        if let panels {
            context.pool.parallelRanges(count: panels.panels, minChunk: 3) { self.forward(panels: $0, x, into: y) }
            return
        }
        context.pool.parallelRanges(count: outFeatures, minChunk: 16) { range in
            halfMatMul(kind, weights: w, inFeatures: n, outputs: range, x: x.base, xStride: x.stride,
                       tokens: x.rows, out: y.base, outStride: y.stride)
        }
    }
}

/// F32 weights: copied once to aligned rows.
public final class DenseLinear: LinearOperator {
    public let inFeatures: Int
    public let outFeatures: Int
    let weights: FloatBuffer
    public let sourceType: TensorType

    public init(_ tensor: TensorData) {
        precondition(tensor.shape.count == 2)
        outFeatures = tensor.shape[0]
        inFeatures = tensor.shape[1]
        sourceType = tensor.type
        weights = FloatBuffer(count: outFeatures * inFeatures)
        tensor.copyFloats(into: weights.pointer)
    }

    public init(weights values: [Float], outFeatures: Int, inFeatures: Int) {
        precondition(values.count == outFeatures * inFeatures)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        sourceType = .f32
        weights = FloatBuffer(count: values.count)
        values.withUnsafeBufferPointer { weights.pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    public var weightBytes: Int { outFeatures * inFeatures * 4 }
    public var formatName: String { "F32" }

    /// From this many tokens on, the packed GEMM wins; below it (decode) one pass of dot products
    /// reads the weights once, where `sgemm` would first copy them into packed panels.
    static let gemmMinimumTokens = 16

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        let w = weights.pointer, inFeatures = self.inFeatures
        if x.rows >= Self.gemmMinimumTokens {
            sgemm(transposeA: false, transposeB: true, m: x.rows, n: outFeatures, k: inFeatures,
                  a: x.base, lda: x.stride, b: w, ldb: inFeatures, c: y.base, ldc: y.stride, pool: context.pool)
            return
        }
        context.pool.parallelRanges(count: outFeatures, minChunk: 16) { range in
            denseMatMul(weights: w, inFeatures: inFeatures, outputs: range, x: x.base, xStride: x.stride,
                        tokens: x.rows, out: y.base, outStride: y.stride)
        }
    }
}

/// Adds a per-output bias after another operator (Qwen2's Q/K/V projections).
public final class BiasedLinear: LinearOperator {
    public let inner: LinearOperator
    let bias: [Float]

    public init(_ inner: LinearOperator, bias: [Float]) {
        precondition(bias.count == inner.outFeatures)
        self.inner = inner
        self.bias = bias
    }

    public var inFeatures: Int { inner.inFeatures }
    public var outFeatures: Int { inner.outFeatures }
    public var weightBytes: Int { inner.weightBytes + bias.count * 4 }
    public var formatName: String { inner.formatName + "+bias" }

    public func forward(_ x: Matrix, into y: Matrix, context: ComputeContext) {
        inner.forward(x, into: y, context: context)
        bias.withUnsafeBufferPointer { b in
            for t in 0..<y.rows { axpyF32(1, b.baseAddress!, y.row(t), count: b.count) }
        }
    }
}
