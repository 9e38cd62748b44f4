import Foundation

/// Turns finished cells into `report.md` (configurations as rows), `report.json` and SVG plots.
public struct Report {
    public var configurations: [RunConfiguration]
    public var tasks: [TaskSpec]
    public var cells: [CellResult]

    /// Rows and columns in spec order; configurations or tasks only seen in cells are appended.
    public init(spec: MatrixSpec?, cells: [CellResult]) {
        var configurations = spec?.configurations ?? []
        var tasks = spec?.tasks ?? []
        for cell in cells {
            if !configurations.contains(where: { $0.name == cell.configuration.name }) { configurations.append(cell.configuration) }
            if !tasks.contains(where: { $0.id == cell.spec.id }) { tasks.append(cell.spec) }
        }
        self.configurations = configurations
        self.tasks = tasks
        self.cells = cells
    }

    func cell(_ configuration: String, _ task: TaskSpec) -> CellResult? {
        cells.first { $0.configuration.name == configuration && $0.spec.id == task.id }
    }

    /// "45.21 ± 0.50" for accuracies (as %), plain numbers otherwise.
    public static func format(_ metric: String, _ value: MetricValue?) -> String {
        guard let value else { return "–" }
        if metric.hasPrefix("acc") || metric == "same_top1" {
            return String(format: "%.2f", value.value * 100) + (value.stderr.map { String(format: " ± %.2f", $0 * 100) } ?? "")
        }
        if metric.hasPrefix("kld") { return String(format: "%.5f", value.value) + (value.stderr.map { String(format: " ± %.5f", $0) } ?? "") }
        return String(format: "%.3f", value.value) + (value.stderr.map { String(format: " ± %.3f", $0) } ?? "")
    }

    /// The main table: one row per configuration, each task's headline metric, then efficiency.
    public var table: [String] {
        var lines: [String] = []
        let headlineOf: (TaskSpec) -> String = { $0.headline }
        var header = "| configuration |", rule = "| --- |"
        for task in tasks { header += " \(task.id) (\(headlineOf(task))) |"; rule += " ---: |" }
        header += " bits/weight | weights MiB | KV bytes/token | peak RSS MiB | prefill t/s | decode t/s |"
        rule += " ---: | ---: | ---: | ---: | ---: | ---: |"
        lines += [header, rule]
        for configuration in configurations {
            var row = "| \(configuration.name) |"
            for task in tasks {
                let c = cell(configuration.name, task)
                row += " \(Self.format(headlineOf(task), c?.metrics[headlineOf(task)])) |"
            }
            if let e = cells.first(where: { $0.configuration.name == configuration.name })?.efficiency {
                row += String(format: " %.2f | %.1f | %.0f | %.0f | %.0f | %.0f |", e.bitsPerWeight, Double(e.weightBytes) / 1_048_576,
                              e.kvBytesPerToken, e.peakRSSMiB, e.prefillTokensPerSecond, e.decodeTokensPerSecond)
            } else { row += " – | – | – | – | – | – |" }
            lines.append(row)
        }
        return lines
    }

    public var markdown: String {
        var lines = ["# Evaluation report", "",
                     "Accuracies in % (± standard error, lm-evaluation-harness conventions); perplexity on wikitext-2 windows; "
                     + "KLD = mean KL divergence against the named base; passkey = retrieval accuracy over all contexts and depths.", ""]
        lines += table
        lines += ["", "Efficiency columns: bits per weight over every parameter (embedding included); KV bytes per cached token "
                  + "over all layers; peak RSS of the process when the row's first cell finished (in a matrix it includes rows run "
                  + "before it); prefill and decode t/s from a 256-token prompt and 64 decode steps after that cell, at the run's "
                  + "thread count — comparable within one run."]
        lines += ["", "## Configurations", ""]
        for c in configurations {
            lines.append("- **\(c.name)**: model `\(c.model ?? ModelLocator.defaultModelName)`, precision \(c.precision.rawValue)"
                         + (c.actBits.map { ", activations \($0)-bit (simulated)" } ?? "") + (c.bits.map { ", plotted at \($0) bits" } ?? ""))
        }
        lines += ["", "## All metrics and time per cell", "", "| configuration | task | items | metrics | seconds | tokens/s |", "| --- | --- | ---: | --- | ---: | ---: |"]
        for configuration in configurations {
            for task in tasks {
                guard let c = cell(configuration.name, task) else { continue }
                let metrics = c.metrics.keys.sorted().map { "\($0) \(Self.format($0, c.metrics[$0]))" }.joined(separator: "; ")
                lines.append(String(format: "| %@ | %@ | %d | %@ | %.1f | %.0f |", configuration.name, task.id, c.items, metrics, c.seconds,
                                    c.seconds > 0 ? Double(c.computedTokens) / c.seconds : 0))
            }
        }
        let plots = plotFiles.keys.sorted()
        if !plots.isEmpty { lines += ["", "## Plots", ""] + plots.map { "![\($0)](plots/\($0))" } }
        return lines.joined(separator: "\n") + "\n"
    }

    func xValue(_ c: CellResult) -> Double { c.configuration.bits ?? c.efficiency.bitsPerWeight }

    /// File name → SVG text.
    public var plotFiles: [String: String] {
        var files: [String: String] = [:]
        let xLabel = configurations.contains { $0.bits != nil } ? "bits" : "bits per weight"
        let accuracySeries = tasks.compactMap { task -> SVGPlot.Series? in
            let points = cells.filter { $0.spec.id == task.id && $0.headline.hasPrefix("acc") }.compactMap { c in
                c.metrics[c.headline].map { SVGPlot.Point(x: xValue(c), y: $0.value * 100, label: c.configuration.name) }
            }
            return points.isEmpty ? nil : SVGPlot.Series(name: task.id, points: points)
        }
        // Bit widths from 4 to 32 read best on a log2 axis; bits per weight (2.5–8.5) on a linear one.
        let xs = cells.map(xValue).filter { $0 > 0 }
        let logX = (xs.max() ?? 1) / (xs.min() ?? 1) > 3.9
        if !accuracySeries.isEmpty {
            files["accuracy-vs-bits.svg"] = SVGPlot.lines(title: "Accuracy vs \(xLabel)", xLabel: xLabel + (logX ? " (log scale)" : ""),
                                                          yLabel: "accuracy (%)", series: accuracySeries, logX: logX)
        }
        // The base against itself (KLD 0) is left out; KL divergences span decades, so y is logarithmic.
        let kldSeries = tasks.filter { $0.task == "kld" }.compactMap { task -> SVGPlot.Series? in
            let points = cells.filter { $0.spec.id == task.id && $0.configuration.name != task.base }.compactMap { c in
                c.metrics["kld_mean"].flatMap { $0.value > 0 ? SVGPlot.Point(x: xValue(c), y: $0.value, label: c.configuration.name) : nil }
            }
            return points.isEmpty ? nil : SVGPlot.Series(name: task.id, points: points)
        }
        if !kldSeries.isEmpty {
            files["kld-vs-bits.svg"] = SVGPlot.lines(title: "Mean KL divergence vs \(xLabel)", xLabel: xLabel + (logX ? " (log scale)" : ""),
                                                     yLabel: "mean KLD (nats, log scale)", series: kldSeries, logX: logX, logY: true)
        }
        for c in cells { if let p = c.passkey { files["passkey-\(c.configuration.name).svg"] = Self.passkeyHeatMap(p, name: c.configuration.name) } }
        return files
    }

    public static func passkeyHeatMap(_ p: PasskeyResult, name: String) -> String {
        SVGPlot.heatMap(title: "Passkey retrieval: \(name)", rowTitle: "context (tokens)", columnTitle: "depth of the key",
                        rows: p.contexts.map(String.init), columns: p.depths.map { "\(Int(($0 * 100).rounded()))%" }, values: p.accuracy)
    }

    /// Writes report.md, report.json and plots/ into `directory`.
    public func write(to directory: String) throws {
        let url = URL(fileURLWithPath: directory)
        try FileManager.default.createDirectory(at: url.appendingPathComponent("plots"), withIntermediateDirectories: true)
        for (name, svg) in plotFiles { try svg.write(to: url.appendingPathComponent("plots/\(name)"), atomically: true, encoding: .utf8) }
        try markdown.write(to: url.appendingPathComponent("report.md"), atomically: true, encoding: .utf8)
        try MatrixRunner.encoder.encode(cells).write(to: url.appendingPathComponent("report.json"), options: .atomic)
    }
}
