import Foundation
import PivotKernels

/// One task with its options, as a matrix spec or the command line names it.
public struct TaskSpec: Codable, Sendable, Equatable {
    public var task: String
    /// The first N items (file order); nil: all.
    public var limit: Int?
    /// MMLU few-shot examples from mmlu_dev.
    public var shots: Int?
    /// kld: the configuration whose distributions are the reference.
    public var base: String?
    /// wikitext / kld: windows of `context` tokens (default 40 × 512, the reference figure's).
    public var windows: Int?
    public var context: Int?
    /// passkey: context lengths, depths (0...1), keys per cell, seed.
    public var contexts: [Int]?
    public var depths: [Double]?
    public var trials: Int?
    public var seed: UInt64?

    public init(task: String, limit: Int? = nil, shots: Int? = nil, base: String? = nil) {
        self.task = task; self.limit = limit; self.shots = shots; self.base = base
    }

    public static let kinds = EvalTask.names + ["kld"]

    /// The metric a report shows for this task.
    public var headline: String {
        switch task {
        case "wikitext": return "perplexity"
        case "kld": return "kld_mean"
        case "passkey": return "acc"
        default: return EvalTask.named(task)?.headline ?? "acc"
        }
    }

    /// A file-name-safe identity: the task plus the options that change its numbers.
    public var id: String {
        var s = task
        if let limit { s += "@\(limit)" }
        if let shots, shots > 0 { s += "-\(shots)shot" }
        if let base { s += "-vs-\(base)" }
        if let windows { s += "-w\(windows)" }
        if let context { s += "-c\(context)" }
        return s
    }

    public func validate() throws {
        guard Self.kinds.contains(task) else {
            throw PivotError.invalidArgument("unknown task '\(task)' (known: \(Self.kinds.joined(separator: ", ")))")
        }
        if let limit, limit < 1 { throw PivotError.invalidArgument("\(task): limit must be at least 1") }
        if let shots, shots < 0 || shots > 5 { throw PivotError.invalidArgument("\(task): shots must be between 0 and 5 (mmlu_dev has 5 per subject)") }
        if task == "kld" && base == nil { throw PivotError.invalidArgument("kld needs \"base\": the configuration to compare against") }
        if let windows, windows < 1 { throw PivotError.invalidArgument("\(task): windows must be at least 1") }
        if let context, context < 2 { throw PivotError.invalidArgument("\(task): context must be at least 2") }
    }
}

/// A finished (configuration, task) pair: everything a report needs, saved as one JSON file.
public struct CellResult: Codable, Sendable {
    public var configuration: RunConfiguration
    public var spec: TaskSpec
    public var items: Int
    public var metrics: [String: MetricValue]
    public var headline: String
    public var seconds: Double
    public var computedTokens: Int
    public var efficiency: Efficiency
    public var passkey: PasskeyResult?
    public var finished: Date
    /// Per-item outcomes of log-likelihood tasks; saved beside the cell as JSON lines, not inside it.
    public var outcomes: [ItemOutcome] = []

    enum CodingKeys: String, CodingKey {
        case configuration, spec, items, metrics, headline, seconds, computedTokens, efficiency, passkey, finished
    }
}

/// Runs cells, loading each configuration's model once and measuring its efficiency once.
public final class CellRunner {
    public let pool: ThreadPool
    public let dataDirectory: String?
    private var models: [String: LoadedModel] = [:]
    private var efficiencies: [String: Efficiency] = [:]
    /// Where one-line notes of loading go (CSKV calibrating its factors).
    public var log: (String) -> Void = { _ in }

    public init(pool: ThreadPool, dataDirectory: String? = nil) {
        self.pool = pool
        self.dataDirectory = dataDirectory
    }

    func model(_ configuration: RunConfiguration) throws -> LoadedModel {
        if let m = models[configuration.name] { return m }
        let m = try configuration.load(pool: pool, log: log)
        models[configuration.name] = m
        return m
    }

    /// Keeps only the models the next cell needs, so memory does not grow with the matrix.
    func keepOnly(_ names: Set<String>) { models = models.filter { names.contains($0.key) } }

    /// The folder holding `file`: the explicit one, else the first standard data folder that has it.
    func dataPath(_ file: String) throws -> String {
        let directory = dataDirectory ?? ModelLocator.dataDirectory(containing: file)
        let path = ((directory ?? "../shared/data/eval") as NSString).appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: path) else {
            throw PivotError.fileNotFound(path + " (set --data or $PIVOT_DATA to the folder of the task files)")
        }
        return path
    }

    public func run(_ configuration: RunConfiguration, _ spec: TaskSpec, base: RunConfiguration? = nil,
                    progress: @escaping (String, Int, Int) -> Void = { _, _, _ in }) throws -> CellResult {
        try spec.validate()
        keepOnly([configuration.name, base?.name].compactMap { $0 }.reduce(into: Set<String>()) { $0.insert($1) })
        let loaded = try model(configuration)
        let label = "\(configuration.name) \(spec.task)"
        var metrics: [String: MetricValue] = [:]
        var items = 0, tokens = 0
        let headline = spec.headline
        var passkey: PasskeyResult?
        var outcomes: [ItemOutcome] = []
        let start = Date()
        switch spec.task {
        case "wikitext", "kld":
            let window = spec.context ?? 512, windows = spec.windows ?? 40
            let text = try String(contentsOfFile: try dataPath("../wikitext-2-raw-test.txt"), encoding: .utf8)
            let ids = loaded.tokenizer.encode(text, addBOS: false), prefix = try configuration.prefixTokens(for: loaded)
            if spec.task == "wikitext" {
                let evaluator = PerplexityEvaluator(model: loaded, contextLength: window, execution: configuration.execution(pool: pool), prefix: prefix)
                let result = try evaluator.evaluate(tokens: ids, windows: windows) { done, total, _ in progress(label, done, total) }
                metrics["perplexity"] = MetricValue(result.perplexity, stderr: result.perplexityError)
                items = result.windows; tokens = result.windows * window
            } else {
                guard let base else { throw PivotError.invalidArgument("kld: base configuration '\(spec.base ?? "")' not found") }
                let baseModel = try self.model(base)
                let result = try KLDivergence.evaluate(
                    base: ScoringSide(model: baseModel, execution: base.execution(pool: pool), window: window, prefix: prefix),
                    test: ScoringSide(model: loaded, execution: configuration.execution(pool: pool), window: window, prefix: prefix),
                    tokens: ids, window: window, windows: windows, pool: pool) { done, total in progress(label, done, total) }
                metrics = result.metrics
                items = result.tokens / (window - 1); tokens = 2 * items * window
            }
        case "passkey":
            let result = try Passkey.run(model: loaded, execution: configuration.execution(pool: pool),
                                         contexts: spec.contexts ?? [1024, 2048, 4096, 8192], depths: spec.depths ?? [0, 0.25, 0.5, 0.75, 1],
                                         trials: spec.trials ?? 2, seed: spec.seed ?? 1234) { done, total in progress(label, done, total) }
            metrics = result.metrics
            items = result.contexts.count * result.depths.count * result.trials
            passkey = result
        default:
            guard let task = EvalTask.named(spec.task) else { throw PivotError.invalidArgument("unknown task '\(spec.task)'") }
            var shots = ShotProvider()
            if let k = spec.shots, k > 0 { shots = try ShotProvider(mmluDev: try readJSONLines(try dataPath("mmlu_dev.jsonl")), count: k) }
            let list = try task.loadItems(directory: (try dataPath(task.file) as NSString).deletingLastPathComponent, limit: spec.limit, shots: shots)
            let scorer = LoglikelihoodScorer(model: loaded, execution: configuration.execution(pool: pool), prefix: try configuration.prefixTokens(for: loaded))
            let result = TaskRunner.run(task, items: list, scorer: scorer) { done, total in progress(label, done, total) }
            metrics = result.metrics; items = result.items; tokens = result.computedTokens
            outcomes = result.outcomes
        }
        let seconds = Date().timeIntervalSince(start)
        if efficiencies[configuration.name] == nil {
            efficiencies[configuration.name] = Efficiency.measure(model: loaded, execution: configuration.execution(pool: pool))
        }
        var efficiency = efficiencies[configuration.name]!
        efficiency.peakRSSMiB = peakResidentMiB()
        return CellResult(configuration: configuration, spec: spec, items: items, metrics: metrics, headline: headline,
                          seconds: seconds, computedTokens: tokens, efficiency: efficiency, passkey: passkey, finished: Date(),
                          outcomes: outcomes)
    }
}
