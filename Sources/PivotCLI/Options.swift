import ArgumentParser
import Foundation
import Pivot
import PivotKernels

/// `-m` and the machine options every verb shares.
struct ModelOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .customLong("model")],
            help: "A .gguf file or a HuggingFace folder (config.json + *.safetensors + tokenizer.json). A bare file name is also looked up in $PIVOT_MODELS, ~/.cache/pivot/models ($PIVOT_CACHE), ./models and shared/models beside the checkout. Default: SmolLM2-135M-Instruct.Q4_1.gguf.")
    var path: String?

    @Option(name: [.customShort("t"), .customLong("threads")], help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(help: "Quantize float (F32/F16/BF16) projection weights in memory as the model loads: Q8_0, Q6_K, Q5_K, Q5_1, Q5_0, Q4_K, Q4_1, Q4_0, Q3_K or Q2_K (ggml's quantizers; a K-quant on rows that are not a multiple of 256 falls back to a block-32 type, as llama.cpp does), or Pivot's group-wise Q2_G32 … Q4_G128 (see `pivot quantize --help`). Quantized tensors and the embedding lookup stay as stored.")
    var quantizeOnLoad: String?

    func quantizeFormat() throws -> BlockFormat? {
        guard let quantizeOnLoad else { return nil }
        guard let format = BlockFormat.allCases.first(where: { $0.name.lowercased() == quantizeOnLoad.lowercased() }) else {
            throw ValidationError("--quantize-on-load: unknown type '\(quantizeOnLoad)' (\(BlockFormat.allCases.map(\.name).joined(separator: ", ")))")
        }
        return format
    }

    func validate() throws {
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
        _ = try quantizeFormat()
    }

    func resolvedPath() throws -> String {
        guard let resolved = ModelLocator.resolve(path) else {
            let name = path ?? ModelLocator.defaultModelName
            throw PivotError.fileNotFound(name + (path == nil ? " (run scripts/fetch-model.sh to download the default model)" : ""))
        }
        return resolved
    }

    func load() throws -> LoadedModel {
        try LoadedModel.load(path: try resolvedPath(), quantizeOnLoad: try quantizeFormat())
    }

    func makePool() -> ThreadPool { ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount) }

}

/// `-c`, for the verbs that keep a conversation in the KV cache.
struct ContextOption: ParsableArguments {
    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "KV cache size in tokens (default: the model's context length, at most 4096).")
    var contextSize: Int?

    func validate() throws {
        if let contextSize, contextSize < 2 { throw ValidationError("--ctx-size must be at least 2") }
    }

    /// The cache size: the flag, else the model's context capped at 4096 to keep memory modest.
    func cacheSize(for model: LoadedModel) -> Int { contextSize ?? min(model.config.contextLength, 4096) }
}

/// Sampling flags; where one is not given, the checkpoint's generation_config.json value is used,
/// else temperature 0.8, top-k 40, top-p 0.95.
struct SamplingOptions: ParsableArguments {
    @Option(name: .customLong("temp"), help: "Sampling temperature; 0 is greedy (deterministic). Default: the model's generation_config.json, else 0.8.")
    var temperature: Float?

    @Option(name: .customLong("top-k"), help: "Sample among the K most likely tokens (0 = all). Default: the model's, else 40.")
    var topK: Int?

    @Option(name: .customLong("top-p"), help: "Nucleus sampling: smallest set of tokens with this total probability. Default: the model's, else 0.95.")
    var topP: Float?

    @Option(name: .customLong("seed"), help: "Random seed for sampling (default: from the clock).")
    var seed: UInt64?

    func check() throws {
        if let temperature, temperature < 0 { throw ValidationError("--temp must be >= 0") }
        if let topK, topK < 0 { throw ValidationError("--top-k must be >= 0") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
    }

    func makeSampler(defaults: GenerationDefaults) -> Sampler {
        defaults.sampler(temperature: temperature, topK: topK, topP: topP, seed: seed ?? UInt64(Date().timeIntervalSince1970 * 1e6))
    }
}

/// `--draft`, for the verbs that generate.
struct DraftOptions: ParsableArguments {
    enum Method: String, ExpressibleByArgument { case none, ngram }

    @Option(help: "Lossless faster decoding: 'ngram' drafts tokens from n-grams of the prompt and of what was generated (ANPD) and verifies them in one batched pass; the output is the same as without.")
    var draft: Method = .none

    @Option(help: "Most tokens drafted per step; below it the length follows recent acceptance and the measured cost of each batch size, down to none when drafting would not pay.")
    var draftMax: Int = 10

    @Option(help: "Longest n-gram the drafter matches (keys of n-1 tokens), 2 or more.")
    var ngramMax: Int = 4

    func check() throws {
        guard (1...32).contains(draftMax) else { throw ValidationError("--draft-max must be between 1 and 32") }
        guard (2...8).contains(ngramMax) else { throw ValidationError("--ngram-max must be between 2 and 8") }
    }

    func makeDrafter() -> Drafter? {
        draft == .ngram ? NGramDrafter(maxN: ngramMax) : nil
    }

    /// The end-of-run line about drafting, or nil without it.
    func summary(_ stats: GenerationStats) -> String? {
        guard draft != .none else { return nil }
        return String(format: "draft: %d drafted, %d accepted (%.1f%%), %.2f tokens per step", stats.draftedTokens,
                      stats.acceptedTokens, stats.acceptanceRate * 100, stats.tokensPerStep)
    }
}

/// `--precision`, for every verb that runs the model.
struct PrecisionOption: ParsableArguments {
    @Option(help: "Activation precision for quantized weights: int8 (fast, like llama.cpp) or float (exact: matches a float reference implementation, slower).")
    var precision: ActivationPrecision = .int8
}

extension ActivationPrecision: ExpressibleByArgument {}

func writeOut(_ s: String) {
    if s.isEmpty { return }
    FileHandle.standardOutput.write(s.data(using: .utf8)!)
}

func writeErr(_ s: String) {
    FileHandle.standardError.write(s.data(using: .utf8)!)
}

/// The KV cache flags, the same on every verb that runs the model.
struct KVCacheOptions: ParsableArguments {
    @Option(name: .customLong("kv-type"), help: "KV cache: f32 (exact, default), f16 (the usual baseline), kivi (KIVI: keys quantized per channel over --kv-group tokens, values per token over --kv-group channels, the newest --kv-window tokens kept F16; attention reads the packed codes), cskv (CSKV: keys before RoPE and values stored as low-rank latent channels per head, --kv-rank of them, the newest --kv-window tokens exact). With a compressed cache, perplexity, kld and eval score every token against the cache as decoding would have held it: each query reads older positions from the compressed form and only its own window exactly, so a batched pass equals token-by-token decoding.")
    var kind: KVCacheSpec.Kind = .f32

    @Option(name: .customLong("kv-bits"), help: "KIVI code bits: 2, 3, 4 or 8.")
    var bits: Int = 2

    @Option(name: .customLong("kv-group"), help: "KIVI group: tokens per key scale, channels per value scale (a multiple of 8 dividing the head size).")
    var group: Int = 32

    @Option(name: .customLong("kv-window"), help: "Full-precision window. KIVI (default 128): at least this many newest tokens keep F16 keys and values (keys leave it a whole group at a time). CSKV (default 32): the newest tokens keep exact F32 keys and values.")
    var window: Int?

    @Option(name: .customLong("kv-rank"), help: "CSKV: latent channels as a fraction of all key/value channels (0.5 = half on average); each head's rank (a multiple of 8) is allocated from its calibration error under this total.")
    var rank: Double?

    @Option(name: .customLong("kv-latent-bits"), help: "CSKV latent storage: 16 (F16) or 4 (4-bit codes per token, F16 scale and minimum).")
    var latentBits: Int?

    @Option(name: .customLong("kv-factors"), help: "CSKV factor file (.safetensors). When missing it is calibrated (about a minute) and saved there; default: ~/.cache/pivot/cskv/<model file>-<size>.safetensors.")
    var factors: String?

    @Option(name: .customLong("kv-calib"), help: "CSKV: calibration text for new factors (default: calibration.txt of the shared data, the second half of wikitext-2 test, never evaluated on).")
    var calibration: String?

    @Option(name: .customLong("pivot"), help: "IntactKV pivot tokens: the first N positions keep exact F32 keys and values and are never quantized (needs --kv-type kivi).")
    var pivots: Int = 0

    @Option(name: .customLong("outlier-tokens"), help: "OTT: per key group, up to N outlier tokens keep F16 keys in a pool and the group is quantized without them (needs --kv-type kivi; 0 = off).")
    var outlierTokens: Int = 0

    @Option(name: .customLong("outlier-pool"), help: "OTT: pool size per layer and KV head; once full, later groups are quantized whole.")
    var outlierPool: Int = 64

    @Option(name: .customLong("outlier-criterion"), help: "OTT: how outliers are picked: norm (smallest key norm, the paper's observation; measured best on the default model) or range (the tokens that alone span most of the channels' ranges).")
    var outlierCriterion: KVCacheSpec.OutlierCriterion = .norm

    @Option(name: .customLong("pivot-prefix"), help: "Pivots given as text (e.g. the system prompt your prompts start with): --pivot becomes its token count.")
    var pivotPrefix: String?

    @Option(name: .customLong("intact-from"), help: "IntactKV: the --pivot tokens' keys/values come from this full-precision model (run with float activations), not from the compressed model; e.g. the unquantized model a quantized -m came from.")
    var intactFrom: String?

    var spec: KVCacheSpec {
        KVCacheSpec(kind: kind, bits: bits, group: group, window: window, pivots: pivots,
                    outlierTokens: outlierTokens, outlierPool: outlierPool, outlierCriterion: outlierCriterion, intactFrom: intactFrom, pivotPrefix: pivotPrefix,
                    rank: rank ?? 0.5, latentBits: latentBits ?? 16, factors: factors, calibration: calibration)
    }

    func validate() throws {
        if kind != .cskv && (rank != nil || latentBits != nil || factors != nil || calibration != nil) {
            throw ValidationError("--kv-rank, --kv-latent-bits, --kv-factors and --kv-calib are CSKV's: they need --kv-type cskv")
        }
        do { try spec.validate() } catch PivotError.invalidArgument(let message) { throw ValidationError(message) }
    }

    /// Sets the model's cache kind, checking what needs the model (the group must divide the head size).
    func apply(to model: LoadedModel, pool: ThreadPool? = nil) throws {
        do { try model.useKVCache(spec, pool: pool) } catch PivotError.invalidArgument(let message) { throw ValidationError(message) }
    }
}

extension KVCacheSpec.Kind: ExpressibleByArgument {}
extension MixedPrecision.BudgetScope: ExpressibleByArgument {}
extension KVCacheSpec.OutlierCriterion: ExpressibleByArgument {}
