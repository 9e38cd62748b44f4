import Foundation
import PivotKernels

/// `configurations × tasks`, read from a JSON spec:
/// `{"configurations": [{"name": "int8"}, {"name": "float", "precision": "float"}],
///   "tasks": ["hellaswag", {"task": "arc-easy", "limit": 200}, {"task": "kld", "base": "float"}]}`
public struct MatrixSpec: Codable, Sendable {
    public var configurations: [RunConfiguration]
    public var tasks: [TaskSpec]

    public init(configurations: [RunConfiguration], tasks: [TaskSpec]) {
        self.configurations = configurations; self.tasks = tasks
    }

    enum CodingKeys: String, CodingKey { case configurations, tasks }

    /// A task may be a bare name or an object.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        configurations = try c.decode([RunConfiguration].self, forKey: .configurations)
        var list = try c.nestedUnkeyedContainer(forKey: .tasks)
        tasks = []
        while !list.isAtEnd {
            if let name = try? list.decode(String.self) { tasks.append(TaskSpec(task: name)) } else { tasks.append(try list.decode(TaskSpec.self)) }
        }
    }

    public static func load(_ path: String) throws -> MatrixSpec {
        guard FileManager.default.fileExists(atPath: path) else { throw PivotError.fileNotFound(path) }
        let spec: MatrixSpec
        do { spec = try JSONDecoder().decode(MatrixSpec.self, from: try Data(contentsOf: URL(fileURLWithPath: path))) }
        catch let error as PivotError { throw PivotError.malformed(file: path, "\(error)") }
        catch { throw PivotError.malformed(file: path, Self.describe(error)) }
        do { try spec.validate() } catch let error as PivotError { throw PivotError.malformed(file: path, "\(error)") }
        return spec
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context): return "missing '\(key.stringValue)'" + where_(context)
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "wrong type" + where_(context)
        case DecodingError.dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "invalid value" + where_(context) + ": " + context.debugDescription
        default: return "\(error)"
        }
    }

    private static func where_(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return path.isEmpty ? "" : " at \(path)"
    }

    /// Everything checkable before any computation: names, tasks, bases and model files.
    public func validate() throws {
        guard !configurations.isEmpty else { throw PivotError.invalidArgument("the matrix has no configurations") }
        guard !tasks.isEmpty else { throw PivotError.invalidArgument("the matrix has no tasks") }
        let names = configurations.map(\.name)
        if let duplicate = names.first(where: { n in names.filter { $0 == n }.count > 1 }) {
            throw PivotError.invalidArgument("configuration name '\(duplicate)' appears twice")
        }
        for configuration in configurations {
            try configuration.validate()
            guard ModelLocator.resolve(configuration.model) != nil else {
                throw PivotError.invalidArgument("configuration '\(configuration.name)': model '\(configuration.model ?? ModelLocator.defaultModelName)' not found")
            }
        }
        for task in tasks {
            try task.validate()
            if let base = task.base, !names.contains(base) { throw PivotError.invalidArgument("kld base '\(base)' is not a configuration of the matrix") }
        }
    }

    /// Cells in a fixed order (configuration-major), so shards agree on numbering.
    public var cells: [(configuration: RunConfiguration, task: TaskSpec)] {
        configurations.flatMap { c in tasks.map { (c, $0) } }
    }
}

/// Runs a matrix into a folder: `spec.json`, `cells/CONFIG__TASK.json` (one file per finished cell,
/// written the moment it finishes), `report.md`, `report.json` and `plots/*.svg`. A rerun skips
/// cells already on disk, so an interrupted run loses nothing it finished.
public final class MatrixRunner {
    public let spec: MatrixSpec
    public let directory: URL

    public init(spec: MatrixSpec, directory: String) {
        self.spec = spec
        self.directory = URL(fileURLWithPath: directory)
    }

    public static func cellFileName(_ configuration: RunConfiguration, _ task: TaskSpec) -> String {
        "\(configuration.name)__\(task.id).json"
    }

    var cellsDirectory: URL { directory.appendingPathComponent("cells") }

    /// Runs this shard's unfinished cells (shard `index` of `count` takes cells index, index+count, ...).
    /// `maxCells` stops after that many computed cells (for tests of resuming). Returns the cells computed.
    @discardableResult
    public func run(runner: CellRunner, shard: (index: Int, count: Int) = (0, 1), maxCells: Int? = nil,
                    log: (String) -> Void = { _ in }, progress: @escaping (String, Int, Int) -> Void = { _, _, _ in }) throws -> Int {
        try FileManager.default.createDirectory(at: cellsDirectory, withIntermediateDirectories: true)
        try Self.encoder.encode(spec).write(to: directory.appendingPathComponent("spec.json"), options: .atomic)
        var computed = 0
        for (index, cell) in spec.cells.enumerated() where index % shard.count == shard.index {
            let file = cellsDirectory.appendingPathComponent(Self.cellFileName(cell.configuration, cell.task))
            if FileManager.default.fileExists(atPath: file.path) {
                log("cell \(index + 1)/\(spec.cells.count) \(cell.configuration.name) × \(cell.task.id): done earlier, skipped")
                continue
            }
            if let maxCells, computed >= maxCells { break }
            let base = cell.task.base.flatMap { name in spec.configurations.first { $0.name == name } }
            let result = try runner.run(cell.configuration, cell.task, base: base, progress: progress)
            try Self.writeOutcomes(result.outcomes, beside: file)
            try Self.encoder.encode(result).write(to: file, options: .atomic)
            computed += 1
            log(String(format: "cell %d/%d %@ × %@: %@ = %.4f (%.1f s)", index + 1, spec.cells.count, cell.configuration.name,
                       cell.task.id, result.headline, result.metrics[result.headline]?.value ?? .nan, result.seconds))
        }
        return computed
    }

    /// `CELL.items.jsonl`: one line per item, written before the cell file so a cell on disk always has them.
    public static func writeOutcomes(_ outcomes: [ItemOutcome], beside cellFile: URL) throws {
        guard !outcomes.isEmpty else { return }
        let plain = JSONEncoder()
        plain.outputFormatting = .sortedKeys
        var text = ""
        for outcome in outcomes { text += String(decoding: try plain.encode(outcome), as: UTF8.self) + "\n" }
        let url = cellFile.deletingPathExtension().appendingPathExtension("items.jsonl")
        try text.write(to: url, atomically: true, encoding: .utf8)
    }

    /// Every finished cell in `directories` (shards of one matrix), first occurrence wins.
    public static func collect(_ directories: [String]) throws -> [CellResult] {
        var seen: Set<String> = [], results: [CellResult] = []
        for dir in directories {
            let cells = URL(fileURLWithPath: dir).appendingPathComponent("cells")
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: cells.path) else {
                throw PivotError.fileNotFound(cells.path + " (not a matrix results folder)")
            }
            for name in files.sorted() where name.hasSuffix(".json") && !seen.contains(name) {
                let path = cells.appendingPathComponent(name).path
                do { results.append(try decoder.decode(CellResult.self, from: Data(contentsOf: URL(fileURLWithPath: path)))) }
                catch { throw PivotError.malformed(file: path, MatrixSpec.describe(error)) }
                seen.insert(name)
            }
        }
        return results
    }

    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }()

    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }()
}
