import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct AttentionMap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention-map",
        abstract: "How much attention each position of a text receives, per layer: find a model's pivot tokens (attention sinks).",
        discussion: """
        Runs the text once (exact F32 cache) and averages, per layer, the attention every position receives over all heads \
        and over the queries that can see it. Prints the positions that receive most, per layer and overall, and with --svg \
        writes a heat map (layers × first positions). Pivot tokens that take a large share are the ones to keep intact \
        (--pivot N, --intact-from) when the cache is compressed.
        """)

    @OptionGroup(title: "Model") var model: ModelOptions

    @Option(name: [.customShort("p"), .customLong("prompt")], help: "The text (at most 2048 tokens; plain loops recompute the attention).")
    var prompt: String

    @Option(parsing: .unconditional, help: "Positions listed per layer.")
    var top: Int = 3

    @Option(help: "Write the heat map here (SVG).")
    var svg: String?

    @Option(parsing: .unconditional, help: "Positions shown in the heat map.")
    var columns: Int = 32

    func validate() throws {
        try checkRange("--top", top, 1...Int.max)
        try checkRange("--columns", columns, 1...Int.max)
        try OutputPath.check(svg, flag: "--svg")
    }

    func run() throws {
        let loaded = try model.load()
        try loaded.config.requireAttention(for: "an attention map")
        let tokens = loaded.tokenizer.encode(prompt)
        guard !tokens.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
        guard tokens.count <= 2048 else { throw ValidationError("the prompt has \(tokens.count) tokens; at most 2048") }
        let recorder = AttentionRecorder(shape: AttentionShape(loaded.config), capacity: tokens.count)
        let state = ForwardState(config: loaded.config, maxTokens: tokens.count, allLogits: false, execution: Execution(pool: model.makePool(), precision: model.precision))
        loaded.transformer.forward(tokens, cache: recorder, state: state)
        let pieces = tokens.map { loaded.tokenizer.decode([$0]).replacingOccurrences(of: "\n", with: "\\n") }
        let layers = loaded.config.layerCount
        let shares = (0..<layers).map { recorder.share(layer: $0) }
        func label(_ j: Int) -> String { "\(j) \"\(pieces[j])\"" }
        print("| layer | " + (1...top).map { "top \($0)" }.joined(separator: " | ") + " |")
        print("| ---: |" + String(repeating: " --- |", count: top))
        for (layer, share) in shares.enumerated() {
            let best = share.indices.sorted { share[$0] > share[$1] }.prefix(top)
            print("| \(layer) | " + best.map { String(format: "%@ %.1f%%", label($0), share[$0] * 100) }.joined(separator: " | ") + " |")
        }
        let mean = (0..<tokens.count).map { j in shares.reduce(0) { $0 + $1[j] } / Double(layers) }
        let overall = mean.indices.sorted { mean[$0] > mean[$1] }.prefix(top)
        print("\nall layers: " + overall.map { String(format: "%@ %.1f%%", label($0), mean[$0] * 100) }.joined(separator: ", "))
        print(String(format: "a uniform share would be %.1f%% per position on average", 100 * mean.reduce(0, +) / Double(tokens.count)))
        if let svg {
            let shown = min(columns, tokens.count)
            let top = shares.flatMap { $0.prefix(shown) }.max() ?? 1
            let map = SVGPlot.heatMap(title: "Attention received per position (darkest: \(Int((top * 100).rounded()))%)",
                                      rowTitle: "layer", columnTitle: "position", rows: (0..<layers).map(String.init),
                                      columns: (0..<shown).map(String.init), values: shares.map { $0.prefix(shown).map { $0 / top } }, cell: 26)
            try OutputPath.write(Data(map.utf8), to: svg)
            writeErr("heat map: \(svg)\n")
        }
    }
}
