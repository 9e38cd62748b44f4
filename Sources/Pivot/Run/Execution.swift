import PivotKernels

/// Where and how forward passes run: the persistent worker pool and how quantized weights meet
/// activations. One value travels to every entry point that runs the model, instead of a loose
/// `pool:` + `precision:` pair.
public struct Execution {
    public let pool: ThreadPool
    public var precision: ActivationPrecision

    public init(pool: ThreadPool, precision: ActivationPrecision = .int8) {
        self.pool = pool
        self.precision = precision
    }
}
