import PivotKernels

/// LLM-MQ-style mixed precision: each projection gets the type that minimizes the model's total
/// sensitivity under a byte budget, solved exactly as a multiple-choice knapsack (dynamic
/// programming over the budget in units of the greatest common divisor of every candidate's size,
/// so no byte is rounded away). Standard types first: Pivot's group-wise extension types join the
/// candidates only when no assignment of standard types fits the budget.
///
/// Sensitivity is LLM-MQ's first order, Σᵢⱼ |gᵢⱼ|·|Q(W) − W|ᵢⱼ with |g| the loss gradient's
/// magnitude summed over calibration windows (`GradientModel`); without gradients, the second-order
/// Σᵢⱼ E[xⱼ²]·(Q(W) − W)ᵢⱼ² (the expected squared output error under the calibration inputs, from
/// llama.cpp's importance matrix). Q(W) is the importance-weighted quantizer of each type.
public enum MixedPrecision {
    public struct Option: Sendable {
        public var format: BlockFormat, bytes: Int, cost: Double
        public init(format: BlockFormat, bytes: Int, cost: Double) { self.format = format; self.bytes = bytes; self.cost = cost }
    }
    public struct Item: Sendable {
        public var name: String
        public var options: [Option]
        public init(name: String, options: [Option]) { self.name = name; self.options = options }
    }

    /// One option per item minimizing Σ cost with Σ bytes ≤ `budget`; nil when even the smallest choices do not fit.
    public static func allocate(_ items: [Item], budget: Int) -> [Int]? {
        guard !items.isEmpty else { return [] }
        var unit = 0
        for item in items { for o in item.options { unit = gcd(unit, o.bytes) } }
        unit = max(unit, 1)
        let capacity = budget / unit
        guard capacity >= 0, capacity <= 50_000_000 else { return nil }
        // best[c] = least cost of the items so far using exactly c units (∞ if impossible).
        var best = [Double](repeating: .infinity, count: capacity + 1)
        best[0] = 0
        var choice = [[UInt8]](repeating: [], count: items.count)
        for (index, item) in items.enumerated() {
            var next = [Double](repeating: .infinity, count: capacity + 1)
            var picked = [UInt8](repeating: 255, count: capacity + 1)
            for (k, option) in item.options.enumerated() {
                let size = option.bytes / unit
                guard size <= capacity else { continue }
                for c in size...capacity where best[c - size] < .infinity {
                    let cost = best[c - size] + option.cost
                    if cost < next[c] { next[c] = cost; picked[c] = UInt8(k) }
                }
            }
            best = next
            choice[index] = picked
        }
        guard var c = (0...capacity).min(by: { best[$0] < best[$1] }), best[c] < .infinity else { return nil }
        var result = [Int](repeating: 0, count: items.count)
        for index in stride(from: items.count - 1, through: 0, by: -1) {
            let k = Int(choice[index][c])
            result[index] = k
            c -= items[index].options[k].bytes / unit
        }
        return result
    }

    static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    /// Types that can hold rows of `columns` weights, from the most to the fewest bits: the standard
    /// ones, then (with `extensions`) Pivot's group-wise ones.
    public static func candidates(columns: Int, extensions: Bool = false) -> [BlockFormat] {
        let standard: [BlockFormat] = [.q8_0, .q6_K, .q5_K, .q5_1, .q5_0, .q4_K, .q4_1, .q4_0, .q3_K, .q2_K]
        return (standard + (extensions ? BlockFormat.extensionFormats.reversed() : [])).filter { columns % $0.elementsPerBlock == 0 }
    }

    /// The sensitivity of `t` quantized (with the importance search) to each candidate: Σ|g|·|ΔW| when
    /// `gradient` (|g| per weight, row-major) is given, else Σ E[x²]·ΔW².
    /// A candidate equal to the tensor's stored type costs nothing (the pipeline copies those bytes
    /// unchanged, as llama-quantize does) and carries no outliers; the others add `outlierBytes`.
    public static func item(_ t: TensorData, importance: [Float], gradient: [Float]? = nil, outlierBytes: Int = 0, extensions: Bool = false,
                            pool: ThreadPool) -> Item {
        let rows = t.shape[0], columns = t.shape[1]
        let weights = UnsafeMutablePointer<Float>.allocate(capacity: rows * columns)
        let restored = UnsafeMutablePointer<Float>.allocate(capacity: rows * columns)
        defer { weights.deallocate(); restored.deallocate() }
        t.copyFloats(into: weights)
        var options: [Option] = []
        for format in candidates(columns: columns, extensions: extensions) {
            let rowBytes = format.rowBytes(columns)
            if t.type == .block(format) {
                options.append(Option(format: format, bytes: rows * rowBytes, cost: 0))
                continue
            }
            _ = format.roundTrip(weights, rows: rows, columns: columns, importance: importance, pool: pool, restored: restored)
            // Summed in strided chunks of rows (r = chunk, chunk + chunks, …), then over chunks.
            var partial = [Double](repeating: 0, count: pool.threads * 8)
            let chunks = partial.count
            for chunk in 0..<chunks {
                var total = 0.0
                for r in stride(from: chunk, to: rows, by: chunks) {
                    let row = weights + r * columns, back = restored + r * columns
                    if let gradient {
                        for j in 0..<columns { total += Double(gradient[r * columns + j]) * Double(abs(back[j] - row[j])) }
                    } else {
                        for j in 0..<columns { let e = Double(back[j] - row[j]); total += Double(importance[j]) * e * e }
                    }
                }
                partial[chunk] = total
            }
            options.append(Option(format: format, bytes: rows * rowBytes + outlierBytes, cost: partial.reduce(0, +)))
        }
        return Item(name: t.name, options: options)
    }
}

extension MixedPrecision {
    /// What `--bpw` counts: every tensor's data, or the allocated projections' alone (their outliers included).
    public enum BudgetScope: String, Sendable, CaseIterable { case file, projections }

    /// The per-projection types of a `bitsPerWeight` file: the other tensors keep `fileType`'s recipe
    /// and count in the budget (scope `.file`); every block projection with an importance entry is allocated.
    /// Extension types are candidates only when `extensions` is true and standard types cannot meet the budget.
    /// Returns the types and the achieved bits per weight in the budget's scope.
    public static func plan(_ gguf: GGUFFile, fileType: QuantizeFileType, bitsPerWeight: Double, importance: [String: [Float]],
                            gradients: [String: [Float]]? = nil, outliers: OutlierPlan? = nil, scope: BudgetScope = .file, extensions: Bool = false,
                            pool: ThreadPool, progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> (types: [String: BlockFormat], bitsPerWeight: Double) {
        let base = try QuantizePipeline.plan(gguf, fileType: fileType, hasImportance: true)
        var items: [Item] = []
        // Tensors no candidate type fits (Mamba's Δ projection of rank 4) keep their recipe type, as fixed bytes.
        let allocated = base.filter { importance[$0.name] != nil && hasCandidates(gguf.tensors[$0.name]!, extensions: extensions) }
        let elements = (scope == .file ? base : allocated).reduce(0) { $0 + gguf.tensors[$1.name]!.elementCount }
        for (i, choice) in allocated.enumerated() {
            let t = gguf.tensors[choice.name]!
            items.append(item(t, importance: importance[choice.name]!, gradient: gradients?[choice.name],
                              outlierBytes: OutlierPlan.bytesPerOutlier * (outliers?.count(elements: t.elementCount) ?? 0), extensions: extensions, pool: pool))
            progress(i + 1, allocated.count, choice.name)
        }
        let fixed = scope == .file ? fixedBytes(gguf, base, allocated: Set(allocated.map(\.name))) : 0
        let budget = Int((bitsPerWeight * Double(elements) / 8).rounded(.down)) - fixed
        guard let (usedItems, picks) = allocateStandardFirst(items, budget: budget, extensions: extensions) else {
            let smallest = items.reduce(fixed) { $0 + ($1.options.map(\.bytes).min() ?? 0) }
            throw unreachable(bitsPerWeight, smallest: smallest, elements: elements, scope: scope, extensions: extensions)
        }
        var types: [String: BlockFormat] = [:]
        var total = fixed
        for (item, k) in zip(usedItems, picks) { types[item.name] = item.options[k].format; total += item.options[k].bytes }
        return (types, Double(total * 8) / Double(elements))
    }

    /// `allocate` over the items' standard options alone when that fits the budget; otherwise, with
    /// `extensions`, over every option. Returns the items the picks index into.
    public static func allocateStandardFirst(_ items: [Item], budget: Int, extensions: Bool) -> (items: [Item], picks: [Int])? {
        let standard = items.map { Item(name: $0.name, options: $0.options.filter { !$0.format.isExtension }) }
        if let picks = allocate(standard, budget: budget) { return (standard, picks) }
        guard extensions, let picks = allocate(items, budget: budget) else { return nil }
        return (items, picks)
    }

    /// Fails before any calibration pass when no allocation reaches `bitsPerWeight`: every block projection
    /// at its smallest candidate (sizes need no sensitivities) still exceeds the budget.
    public static func checkReachable(_ gguf: GGUFFile, fileType: QuantizeFileType, bitsPerWeight: Double, outliers: OutlierPlan? = nil,
                                      scope: BudgetScope = .file, extensions: Bool = false) throws {
        let base = try QuantizePipeline.plan(gguf, fileType: fileType, hasImportance: true)
        // The projections the recipe quantizes (not Mamba's convolution) and some type fits (not a Δ projection of rank 4).
        let allocated = base.filter {
            guard $0.name.hasPrefix("blk."), case .block = $0.to else { return false }
            return hasCandidates(gguf.tensors[$0.name]!, extensions: extensions)
        }
        let elements = (scope == .file ? base : allocated).reduce(0) { $0 + gguf.tensors[$1.name]!.elementCount }
        let fixed = scope == .file ? fixedBytes(gguf, base, allocated: Set(allocated.map(\.name))) : 0
        let smallest = allocated.reduce(fixed) { total, choice in
            let t = gguf.tensors[choice.name]!
            let outlierBytes = OutlierPlan.bytesPerOutlier * (outliers?.count(elements: t.elementCount) ?? 0)
            return total + (candidates(columns: t.shape[1], extensions: extensions).map { t.shape[0] * $0.rowBytes(t.shape[1]) }.min() ?? 0) + outlierBytes
        }
        if Double(smallest * 8) > bitsPerWeight * Double(elements) {
            throw unreachable(bitsPerWeight, smallest: smallest, elements: elements, scope: scope, extensions: extensions)
        }
    }

    /// Whether `t` is a matrix some candidate type fits.
    static func hasCandidates(_ t: TensorData, extensions: Bool) -> Bool {
        t.shape.count == 2 && !candidates(columns: t.shape[1], extensions: extensions).isEmpty
    }

    /// Bytes of the tensors the allocation does not choose (their recipe types).
    static func fixedBytes(_ gguf: GGUFFile, _ base: [QuantizePipeline.Choice], allocated: Set<String>) -> Int {
        var fixed = 0
        for choice in base where !allocated.contains(choice.name) {
            let t = gguf.tensors[choice.name]!
            switch choice.to {
            case .block(let f): fixed += f.rowBytes(t.shape.last!) * (t.elementCount / t.shape.last!)
            case .f16, .bf16: fixed += 2 * t.elementCount
            case .f32: fixed += 4 * t.elementCount
            }
        }
        return fixed
    }

    static func unreachable(_ bitsPerWeight: Double, smallest: Int, elements: Int, scope: BudgetScope, extensions: Bool) -> PivotError {
        .invalidArgument(String(format: "--bpw %.3f is below the smallest %@ these types allow (%.3f bits per weight)%@",
                                bitsPerWeight, scope == .file ? "file" : "projections", Double(smallest * 8) / Double(elements),
                                extensions ? "" : "; without --standard-only, Pivot's group-wise types go lower"))
    }
}
