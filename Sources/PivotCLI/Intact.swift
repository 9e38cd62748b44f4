import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Intact: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store IntactKV's pivots in a model file: a prefix's keys and values from the full-precision model.",
        discussion: """
        IntactKV (Liu et al. 2024): the keys and values of the pivot tokens (the start token, or a chat preamble with its \
        system prompt) come from the full-precision model, kept lossless, while the quantized model computes the rest. \
        --from runs over the prefix with float activations and an exact F32 cache; -o gets -m's tensors and metadata \
        unchanged plus one F32 tensor of keys (after RoPE) and one of values per layer (pivot.intact.blk.N.key/value) \
        and the keys pivot.intact.tokens, .prefix, .source, .calibrated. Every verb that runs -o then uses them, in any \
        KV cache (--kv-type f32, f16, kivi, cskv), for a sequence that starts with the prefix's tokens: chat and the \
        server automatically, perplexity/kld/eval with the same prefix flag. llama.cpp refuses files with tensors it \
        does not know, so the output runs in Pivot only (pivot.only says so).
        Prefix: --prefix-bos (default: the start token alone), --prefix-chat (the chat template's preamble with its \
        default system prompt), or --prefix TEXT.
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "The quantized model whose file is copied (a .gguf file or a name looked up like every verb's -m; default: the default model).")
    var input: String?

    @Option(help: "The full-precision model that computes the prefix's keys and values (same layers, KV heads and vocabulary).")
    var from: String

    @Option(name: [.customShort("o"), .customLong("output")], help: "Output .gguf file (written under a temporary name, then renamed).")
    var output: String

    @OptionGroup(title: "Prefix (default: --prefix-bos)") var prefix: PrefixOptions

    @Option(name: [.customShort("t"), .customLong("threads")], parsing: .unconditional, help: "Worker threads, 1-256 (default: all cores).")
    var threads: Int?

    @Flag(help: "Calibrated IntactKV: train the prefix's keys/values (the only parameters) so that -m's next-token distributions after the prefix match --from's (forward KL on its top-64) on --data.")
    var calibrate = false

    @Option(help: "With --calibrate: calibration text (never the evaluation text), cut into windows of --ctx-size tokens.")
    var data: String?

    @Option(parsing: .unconditional, help: "With --calibrate: AdamW updates (default: 100).")
    var steps = 100

    @Option(parsing: .unconditional, help: "With --calibrate: windows per update (default: 4).")
    var batch = 4

    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional, help: "With --calibrate: tokens per window after the prefix (default: 256).")
    var length = 256

    @Option(parsing: .unconditional, help: "With --calibrate: peak learning rate (default: 1e-3; cosine to a tenth after a 5% warm-up).")
    var lr: Float = 1e-3

    func validate() throws {
        if let threads { try checkRange("--threads", threads, 1...256) }
        try OutputPath.check(output, flag: "--output")
        if calibrate {
            guard data != nil else { throw ValidationError("--calibrate needs --data TEXT (calibration text)") }
            try checkRange("--steps", steps, 1...1_000_000)
            try checkRange("--batch", batch, 1...4096)
            try checkRange("--ctx-size", length, 2...131_072)
            guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive (got \(lr))") }
        } else if data != nil {
            throw ValidationError("--data is calibration text for --calibrate")
        }
    }

    func run() throws {
        guard let quantizedPath = ModelLocator.resolve(input) else { throw ModelLocator.notFound(input) }
        guard quantizedPath.hasSuffix(".gguf") else { throw ValidationError("-m \(quantizedPath): pivot intact writes GGUF files; convert a folder first (pivot convert)") }
        guard let fullPath = ModelLocator.resolve(from) else { throw ModelLocator.notFound(from, context: "--from") }
        guard (quantizedPath as NSString).standardizingPath != (output as NSString).standardizingPath else {
            throw ValidationError("-o must differ from -m (the input is read while the output is written)")
        }
        let quantized = try LoadedModel.load(path: quantizedPath), full = try LoadedModel.load(path: fullPath)
        try quantized.config.requireAttention(for: "IntactKV")
        let a = full.config, b = quantized.config
        guard a.layerCount == b.layerCount, a.kvHeadCount == b.kvHeadCount, a.headDim == b.headDim, a.ropeTheta == b.ropeTheta else {
            throw ValidationError("--from \(fullPath): \(a.layerCount) layers × \(a.kvHeadCount) KV heads × \(a.headDim) (RoPE θ \(a.ropeTheta)) "
                + "does not match -m's \(b.layerCount) × \(b.kvHeadCount) × \(b.headDim) (θ \(b.ropeTheta))")
        }
        guard full.tokenizer.tokens == quantized.tokenizer.tokens else {
            throw ValidationError("--from \(fullPath): a different vocabulary from -m's; the prefix's tokens must mean the same in both")
        }
        let (text, tokens) = try (prefix.text ?? .start).tokens(for: quantized)
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        var computed = try IntactPrefix.compute(full: full, tokens: tokens, text: text, pool: pool)
        // An AWQ / SmoothQuant file holds V / s: the full model's values are brought into its space.
        computed.convertValues(from: ValueScales.read(path: fullPath), to: ValueScales.read(path: quantizedPath))
        if calibrate, let data {
            let gguf = try GGUFFile(path: quantizedPath)
            let windows = TrainingWindows(tokens: quantized.tokenizer.encode(try readTextFile(data), addBOS: false), length: length)
            guard windows.windows.count >= batch else { throw ValidationError("\(data): too short for --batch \(batch) windows of --ctx-size \(length)") }
            let settings = TrainingSettings(steps: steps, batch: batch, length: length, learningRate: lr)
            let bar = ProgressBar(total: steps, label: "calibrate")
            let records = try IntactCalibration.calibrate(prefix: &computed, quantized: gguf, full: full, windows: windows, settings: settings, pool: pool) { event in
                if case .step(let r, _) = event { bar.update(r.step, suffix: String(format: "KL %.4f lr %.2e", r.loss, r.learningRate)) }
            }
            bar.finish()
            let last = records.suffix(10).map(\.loss)
            print(String(format: "calibrated: KL %.4f → %.4f (mean of the last %d updates)", records.first?.loss ?? .nan, last.reduce(0, +) / Double(max(1, last.count)), last.count))
        }
        try computed.write(model: try GGUFFile(path: quantizedPath), to: output)
        print("\(output): \(quantizedPath) with an intact prefix of \(tokens.count) token(s) \(text.debugDescription) from \((fullPath as NSString).lastPathComponent)")
        print(String(format: "  %d × 2 F32 tensors, %.1f KiB; used by every KV cache type for sequences starting with these tokens",
                     computed.layers, Double(computed.layers * 2 * computed.layerCount * 4) / 1024))
        print("  Pivot only: llama.cpp refuses GGUF files with tensors it does not know (\"wrong number of tensors\")")
    }
}

/// "prefix: 34 tokens before every window, not scored; keys/values of the first 34 from the file's intact prefix".
func prefixNote(_ tokens: [Int], model: LoadedModel) -> String {
    var note = "prefix: \(tokens.count) token(s) before every window, not scored"
    guard let stored = model.intactPrefix else { return note + "; keys/values the model's own (the file has no intact prefix)" }
    let agreed = zip(tokens, stored.tokens).prefix { $0 == $1 }.count
    note += agreed == 0 ? "; the file's intact prefix does not apply (its tokens differ from the first)"
        : "; keys/values of the first \(agreed) from the file's intact prefix" + (stored.calibrated ? " (calibrated)" : "")
    return note
}
