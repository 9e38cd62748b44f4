import ArgumentParser
import Foundation
import Pivot

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a model: zero-shot tasks scored as lm-evaluation-harness does, LAMBADA, wikitext perplexity, passkey retrieval; or a matrix of configurations into one report.",
        discussion: """
        Tasks: \(EvalTask.names.joined(separator: ", ")), or all. Multiple-choice tasks score each choice by the summed \
        log-probability of its continuation (acc) and by that sum divided by the choice's length in characters (acc_norm), \
        with lm-eval's prompts, target delimiter " ", no BOS unless the tokenizer adds one, and trailing context whitespace \
        moved into the continuation. The context shared by an item's choices runs once; each choice continues from the cache.

        Matrix: --matrix SPEC.json runs configurations × tasks into --out (default: SPEC.results/): one JSON file per finished \
        cell, written at once; a rerun skips finished cells. --shard i/N runs cells i, i+N, ... (i from 0), e.g. as a Slurm \
        array (`pivot eval --matrix m.json --out r/$SLURM_ARRAY_TASK_ID --shard $SLURM_ARRAY_TASK_ID/4` with --array=0-3) or a \
        Kubernetes indexed Job ($JOB_COMPLETION_INDEX); then `pivot eval --merge r/0 r/1 r/2 r/3 --out r` writes one report. \
        See EVAL.md for the spec format.
        """)

    @Argument(help: "Tasks to run (or 'all'); lm-evaluation-harness's names (arc_easy, lambada_openai) work too.")
    var tasks: [String] = []

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "KV cache compression") var kv: KVCacheOptions

    @Option(parsing: .unconditional, help: "Simulate N-bit per-token symmetric activation quantization at the input of every block projection (8, 6, 4; QLLM-Eval's A-bits). Applies on top of --precision.")
    var actBits: Int?

    @Option(parsing: .unconditional, help: "Score only the first N items of each task (file order).")
    var limit: Int?

    @Option(parsing: .unconditional, help: "MMLU: few-shot examples per question, the first K of the subject in mmlu_dev (0-5).")
    var shots: Int = 0

    @Option(help: "Folder of the task files (default: $PIVOT_DATA, ~/.cache/pivot/data/eval, shared/data/eval beside the checkout).")
    var data: String?

    @Option(parsing: .unconditional, help: "wikitext: number of windows to score.")
    var chunks: Int = 40

    @Option(name: .customLong("windows"), parsing: .unconditional, help: .hidden)
    var legacyWindows: Int?

    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional, help: "wikitext: window length in tokens.")
    var contextSize: Int = 512

    @Option(name: .customLong("ctx"), parsing: .unconditional, help: .hidden)
    var legacyContext: Int?

    var windows: Int { legacyWindows ?? chunks }
    var windowLength: Int { legacyContext ?? contextSize }

    @Option(help: "passkey: comma-separated context lengths (those beyond the model's context are skipped).")
    var passkeyContexts: String = "1024,2048,4096,8192"

    @Option(help: "passkey: comma-separated depths of the key in percent.")
    var passkeyDepths: String = "0,25,50,75,100"

    @Option(parsing: .unconditional, help: "passkey: keys per (context, depth) cell.")
    var trials: Int = 2

    @Option(help: "passkey: seed for the random keys.")
    var seed: UInt64 = 1234

    @Option(help: "Write every finished task's result as JSON to this file (rewritten after each task).")
    var json: String?

    @Option(help: "passkey: write the accuracy heat map (context × depth) as SVG to this file.")
    var svg: String?

    @OptionGroup(title: "Prefix (run before every window or request, not scored)") var prefix: PrefixOptions

    @Option(help: "Run the configurations × tasks of this JSON spec (see EVAL.md).")
    var matrix: String?

    @Option(help: "Matrix: shard 'i/N' runs every N-th cell starting at i (0-based).")
    var shard: String?

    @Option(parsing: .upToNextOption, help: "Join the cells of these matrix result folders (shards) into one report in --out.")
    var merge: [String] = []

    @Option(help: "Matrix or merge: the results folder.")
    var out: String?

    func validate() throws {
        let modes = [!tasks.isEmpty, matrix != nil, !merge.isEmpty].filter { $0 }.count
        guard modes == 1 else { throw ValidationError("give tasks, or --matrix SPEC.json, or --merge DIR...") }
        for task in tasks where EvalTask.canonicalName(task) == nil {
            if task.hasPrefix("-") { throw ValidationError("unknown option '\(task)'") }
            throw ValidationError("unknown task '\(task)'" + (Suggestion.closest(task, among: EvalTask.names).map { "; did you mean '\($0)'?" } ?? "")
                                  + " (known: \(EvalTask.names.joined(separator: ", ")), all)")
        }
        if let limit { try checkRange("--limit", limit, 1...Int.max) }
        if let actBits { try checkRange("--act-bits", actBits, 2...16) }
        try checkRange("--shots", shots, 0...5)
        try checkRange("--chunks", windows, 1...Int.max)
        try checkRange("--ctx-size", windowLength, 2...8192)
        try checkRange("--trials", trials, 1...Int.max)
        try OutputPath.check(json, flag: "--json")
        try OutputPath.check(svg, flag: "--svg")
        try OutputPath.check(out, flag: "--out", directory: true)
        if shard != nil && matrix == nil { throw ValidationError("--shard goes with --matrix") }
        if prefix.text != nil && tasks.isEmpty { throw ValidationError("a prefix flag goes with tasks; a matrix sets \"prefix\" per configuration") }
        _ = try parsedShard()
        _ = try passkeyLists()
        if !merge.isEmpty && out == nil { throw ValidationError("--merge needs --out DIR for the joined report") }
    }

    func parsedShard() throws -> (index: Int, count: Int) {
        guard let shard else { return (0, 1) }
        let parts = shard.split(separator: "/").compactMap { Int($0) }
        guard parts.count == 2, parts[1] >= 1, (0..<parts[1]).contains(parts[0]) else {
            throw ValidationError("--shard must be i/N with 0 <= i < N, e.g. 0/4")
        }
        return (parts[0], parts[1])
    }

    func passkeyLists() throws -> ([Int], [Double]) {
        let contexts = passkeyContexts.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        let depths = passkeyDepths.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !contexts.isEmpty, contexts.allSatisfy({ ($0 ?? 0) >= 64 }), !depths.isEmpty, depths.allSatisfy({ (0...100).contains($0 ?? -1) }) else {
            throw ValidationError("--passkey-contexts takes lengths >= 64 and --passkey-depths percentages 0-100, comma-separated")
        }
        return (contexts.map { $0! }, depths.map { $0! / 100 })
    }

    func run() throws {
        let pool = model.makePool()
        var bar: ProgressBar?
        var barLabel = ""
        let progress: (String, Int, Int) -> Void = { label, done, total in
            if bar == nil || barLabel != label { bar?.finish(); bar = ProgressBar(total: total, label: label); barLabel = label }
            bar?.update(done)
            if done == total { bar?.finish(); bar = nil }
        }
        let runner = CellRunner(pool: pool, dataDirectory: data)
        runner.log = { writeErr($0 + "\n") }
        if !merge.isEmpty { return try writeMerged(out!) }
        if let matrix {
            let spec = try MatrixSpec.load(matrix)
            let directory = out ?? (matrix as NSString).deletingPathExtension + ".results"
            let shard = try parsedShard()
            let computed = try MatrixRunner(spec: spec, directory: directory).run(runner: runner, shard: shard, log: { writeErr($0 + "\n") }, progress: progress)
            let cells = try MatrixRunner.collect([directory])
            try Report(spec: spec, cells: cells).write(to: directory)
            print("\(computed) cells computed, \(cells.count) of \(spec.cells.count) finished; report: \(directory)/report.md")
            return
        }
        let configuration = try model.configuration(kv: kv, actBits: actBits, prefix: prefix)
        let (contexts, depths) = try passkeyLists()
        let requested = tasks.compactMap(EvalTask.canonicalName)
        let names = requested.contains("all") ? EvalTask.names : requested
        var results: [CellResult] = []
        for name in names {
            var spec = TaskSpec(task: name, limit: limit, shots: name == "mmlu" && shots > 0 ? shots : nil)
            if name == "wikitext" { spec.windows = windows; spec.context = windowLength }
            if name == "passkey" { spec.contexts = contexts; spec.depths = depths; spec.trials = trials; spec.seed = seed }
            let result = try runner.run(configuration, spec, progress: progress)
            results.append(result)
            printResult(result)
            if let json { try OutputPath.write(try MatrixRunner.encoder.encode(results), to: json) }
            if let svg, let p = result.passkey { try OutputPath.write(Data(Report.passkeyHeatMap(p, name: configuration.name).utf8), to: svg) }
        }
        print("")
        print(Report(spec: nil, cells: results).table.joined(separator: "\n"))
    }

    func printResult(_ r: CellResult) {
        let metrics = r.metrics.keys.sorted().map { "\($0) \(Report.format($0, r.metrics[$0]))" }.joined(separator: ", ")
        print(String(format: "%@: %d items, %@ (%.1f s, %.0f tokens/s)", r.spec.id, r.items, metrics, r.seconds,
                     r.seconds > 0 ? Double(r.computedTokens) / r.seconds : 0))
        if let p = r.passkey {
            print("  context \\ depth " + p.depths.map { String(format: "%5.0f%%", $0 * 100) }.joined())
            for (i, c) in p.contexts.enumerated() {
                print(String(format: "  %15d ", c) + p.accuracy[i].map { String(format: "%5.0f%%", $0 * 100) }.joined())
            }
        }
    }

    func writeMerged(_ directory: String) throws {
        let cells = try MatrixRunner.collect(merge)
        let specURL = URL(fileURLWithPath: merge[0]).appendingPathComponent("spec.json")
        let spec = try? JSONDecoder().decode(MatrixSpec.self, from: Data(contentsOf: specURL))
        let cellsDirectory = URL(fileURLWithPath: directory).appendingPathComponent("cells")
        try FileManager.default.createDirectory(at: cellsDirectory, withIntermediateDirectories: true)
        for cell in cells {
            try MatrixRunner.encoder.encode(cell).write(to: cellsDirectory.appendingPathComponent(MatrixRunner.cellFileName(cell.configuration, cell.spec)), options: .atomic)
        }
        // Per-item outcomes travel with their cells.
        for dir in merge {
            let source = URL(fileURLWithPath: dir).appendingPathComponent("cells")
            for name in (try? FileManager.default.contentsOfDirectory(atPath: source.path)) ?? [] where name.hasSuffix(".items.jsonl") || name.hasSuffix(".items.jsonl.gz") {
                let target = cellsDirectory.appendingPathComponent(name)
                if !FileManager.default.fileExists(atPath: target.path) {
                    try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: target)
                }
            }
        }
        if let spec { try MatrixRunner.encoder.encode(spec).write(to: URL(fileURLWithPath: directory).appendingPathComponent("spec.json"), options: .atomic) }
        try Report(spec: spec, cells: cells).write(to: directory)
        print("\(cells.count) cells from \(merge.count) folders; report: \(directory)/report.md")
    }
}
