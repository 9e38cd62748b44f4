import ArgumentParser
import Foundation
import Pivot
import PivotKernels

/// `-m`, `-t`, `--quantize-on-load`, `--precision`: which model runs and how, the same on every verb.
struct ModelOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .customLong("model")],
            help: "A .gguf file or a HuggingFace folder (config.json + *.safetensors + tokenizer.json). A bare file name is also looked up in $PIVOT_MODELS, ~/.cache/pivot/models ($PIVOT_CACHE), ./models and shared/models beside the checkout. Default: SmolLM2-135M-Instruct.Q4_1.gguf.")
    var path: String?

    @Option(name: [.customShort("t"), .customLong("threads")], parsing: .unconditional, help: "Worker threads, 1-256 (default: all cores).")
    var threads: Int?

    @Option(help: "Quantize float (F32/F16/BF16) projection weights in memory as the model loads: Q8_0, Q6_K, Q5_K, Q5_1, Q5_0, Q4_K, Q4_1, Q4_0, Q3_K or Q2_K (ggml's quantizers; a K-quant on rows that are not a multiple of 256 falls back to a block-32 type, as llama.cpp does), or Pivot's group-wise Q2_G32 … Q4_G128 (see `pivot quantize --help`). Quantized tensors and the embedding lookup stay as stored.")
    var quantizeOnLoad: BlockFormat?

    @Option(help: "How quantized weights meet activations: int8 (fast, like llama.cpp) or float (exact: matches a float reference implementation, slower).")
    var precision: ActivationPrecision = .int8

    func validate() throws {
        if let threads { try checkRange("--threads", threads, 1...256) }
    }

    /// The run these flags describe, with the verb's other run settings.
    func configuration(name: String? = nil, kv: KVCacheOptions? = nil, actBits: Int? = nil, draft: DraftOptions? = nil,
                       prefix: PrefixOptions? = nil, shortlist: ShortlistOptions? = nil) throws -> RunConfiguration {
        let path = try resolvedPath()
        var configuration = RunConfiguration(name: name ?? ((path as NSString).lastPathComponent as NSString).deletingPathExtension, model: path,
                                quantizeOnLoad: quantizeOnLoad, precision: precision, actBits: actBits,
                                kvCache: try kv?.spec() ?? .f32, draft: draft?.settings, prefix: prefix?.text)
        configuration.shortlist = try shortlist?.settings
        return configuration
    }

    func resolvedPath() throws -> String {
        guard let resolved = ModelLocator.resolve(path) else { throw ModelLocator.notFound(path) }
        return resolved
    }

    /// The model, loaded once as `configuration` says (CSKV's calibration notes and progress on stderr).
    func load(_ configuration: RunConfiguration, pool: ThreadPool) throws -> LoadedModel {
        var bar: ProgressBar?
        return try configuration.load(pool: pool, log: { writeErr($0 + "\n") }) { done, total in
            if bar == nil { bar = ProgressBar(total: total, label: "CSKV calibration") }
            bar?.update(done)
            if done == total { bar?.finish() }
        }
    }

    /// For verbs without run settings (inspect, tokenize, imatrix): the model as stored or quantized on load.
    func load() throws -> LoadedModel { try LoadedModel.load(path: try resolvedPath(), quantizeOnLoad: quantizeOnLoad) }

    /// For the verbs that generate: one pool, one run configuration, the model loaded once, its generator.
    func startGenerating(context: ContextOption, kv: KVCacheOptions, drafting: DraftOptions, shortlist: ShortlistOptions) throws -> (LoadedModel, Generator) {
        let pool = makePool()
        let configuration = try configuration(kv: kv, draft: drafting, shortlist: shortlist)
        let loaded = try load(configuration, pool: pool)
        return (loaded, Generator(model: loaded, configuration: configuration, pool: pool, contextLength: context.cacheSize(for: loaded)))
    }

    /// The one worker pool of this process.
    func makePool() -> ThreadPool {
        if let warning = KernelISA.activeWithWarning.warning { writeErr("warning: \(warning)\n") }
        return ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
    }
}

/// `-c`: the context (KV cache size) of the verbs that keep a conversation; the window length of
/// the verbs that score text (there with `-f` and `--chunks`, see `TextWindowOptions`).
struct ContextOption: ParsableArguments {
    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional,
            help: "KV cache size in tokens (default: the model's context length, at most 4096).")
    var contextSize: Int?

    @Option(name: .customLong("ctx"), parsing: .unconditional, help: .hidden)
    var legacyContext: Int?

    func validate() throws {
        if let value = contextSize ?? legacyContext { try checkRange("--ctx-size", value, 2...1_048_576) }
    }

    /// The cache size: the flag, else the model's context capped at 4096 to keep memory modest.
    func cacheSize(for model: LoadedModel) -> Int { contextSize ?? legacyContext ?? min(model.config.contextLength, 4096) }
}

/// `-f FILE -c WINDOW --chunks N`: the text a scoring verb reads, in windows, as llama-perplexity takes them.
struct TextWindowOptions: ParsableArguments {
    @Option(name: [.customShort("f"), .customLong("file")], help: "Text file to score (e.g. wikitext-2-raw test).")
    var file: String

    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional, help: "Window length in tokens, 2-8192.")
    var windowLength: Int = 512

    @Option(name: .customLong("ctx"), parsing: .unconditional, help: .hidden)
    var legacyWindow: Int?

    @Option(parsing: .unconditional, help: "Score at most this many windows (default: all).")
    var chunks: Int?

    var window: Int { legacyWindow ?? windowLength }

    func validate() throws {
        try checkRange("--ctx-size", window, 2...8192)
        if let chunks { try checkRange("--chunks", chunks, 1...Int.max) }
    }

    /// The file's text, or one clear error.
    func text() throws -> String { try readTextFile(file) }
}

/// `--prefix TEXT | --prefix-chat | --prefix-bos`: the tokens a scoring verb runs before every window or
/// request without scoring them, and the prefix `pivot intact` stores. A model file's intact prefix is
/// used whenever a sequence starts with its tokens.
struct PrefixOptions: ParsableArguments {
    @Option(help: "Prefix text, tokenized as prompts are (BOS first only where the tokenizer adds one), e.g. a system prompt.")
    var prefix: String?

    @Flag(help: "Prefix: the chat template's preamble before the first user turn (its default system prompt, SmolLM2's).")
    var prefixChat = false

    @Flag(help: "Prefix: the BOS token alone (the attention sink; SmolLM2's <|im_start|>, which begins every chat).")
    var prefixBos = false

    func validate() throws {
        guard [prefix != nil, prefixChat, prefixBos].filter({ $0 }).count <= 1 else {
            throw ValidationError("give one of --prefix TEXT, --prefix-chat, --prefix-bos")
        }
        if prefix?.isEmpty == true { throw ValidationError("--prefix needs a text (--prefix-bos: the start token alone)") }
    }

    /// The prefix given, nil when none.
    var text: PrefixText? {
        if let prefix { return .text(prefix) }
        return prefixChat ? .chatPreamble : prefixBos ? .start : nil
    }
}

/// Sampling flags; where one is not given, the checkpoint's generation_config.json value is used,
/// else temperature 0.8, top-k 40, top-p 0.95.
struct SamplingOptions: ParsableArguments {
    @Option(name: .customLong("temp"), parsing: .unconditional, help: "Sampling temperature, >= 0; 0 is greedy (deterministic). Default: the model's generation_config.json, else 0.8.")
    var temperature: Float?

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Sample among the K most likely tokens (0 = all). Default: the model's, else 40.")
    var topK: Int?

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Nucleus sampling: smallest set of tokens with this total probability, in (0, 1]. Default: the model's, else 0.95.")
    var topP: Float?

    @Option(name: .customLong("seed"), help: "Random seed for sampling (default: from the clock).")
    var seed: UInt64?

    func validate() throws {
        if let temperature, !(temperature >= 0 && temperature.isFinite) { throw ValidationError("--temp must be >= 0 (got \(temperature))") }
        if let topK, topK < 0 { throw ValidationError("--top-k must be >= 0 (got \(topK))") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1] (got \(topP))") }
    }

    func makeSampler(defaults: GenerationDefaults) -> Sampler {
        defaults.sampler(temperature: temperature, topK: topK, topP: topP, seed: seed ?? UInt64(Date().timeIntervalSince1970 * 1e6))
    }
}

/// `--draft`, for the verbs that generate.
struct DraftOptions: ParsableArguments {
    enum Method: String, ExpressibleByArgument, CaseIterable { case none, ngram }

    @Option(help: "Lossless faster decoding: 'ngram' drafts tokens from n-grams of the prompt and of what was generated (ANPD) and verifies them in one batched pass; the output is the same as without.")
    var draft: Method = .none

    @Option(parsing: .unconditional, help: "Most tokens drafted per step, 1-32; below it the length follows recent acceptance and the measured cost of each batch size, down to none when drafting would not pay.")
    var draftMax: Int = 10

    @Option(parsing: .unconditional, help: "Longest n-gram the drafter matches (keys of n-1 tokens), 2-8.")
    var ngramMax: Int = 4

    var settings: DraftSettings? { draft == .ngram ? DraftSettings(method: .ngram, maxDraft: draftMax, ngramMax: ngramMax) : nil }

    func validate() throws {
        try checkRange("--draft-max", draftMax, 1...32)
        try checkRange("--ngram-max", ngramMax, 2...8)
    }

    /// The end-of-run line about drafting, or nil without it.
    func summary(_ stats: GenerationStats) -> String? {
        guard draft != .none else { return nil }
        return String(format: "draft: %d drafted, %d accepted (%.1f%%), %.2f tokens per step", stats.draftedTokens,
                      stats.acceptedTokens, stats.acceptanceRate * 100, stats.tokensPerStep)
    }
}

/// The KV cache flags, the same on every verb that runs the model. Each is nil unless given, so a flag
/// of another method than `--kv-type`'s is refused by name (`KVCacheParameters.spec`).
struct KVCacheOptions: ParsableArguments {
    @Option(name: .customLong("kv-type"), help: "f32 (exact; the default, but f16 for serve) | f16 (the usual baseline) | kivi (KIVI: 2-8-bit codes, keys per channel, values per token) | cskv (CSKV: low-rank latent channels per head). With a compressed cache, perplexity, kld and eval score every token as decoding would have held the cache.")
    var chosenKind: KVCacheSpec.Kind?

    /// `--kv-type`, else F32 (exact), or what the verb sets with `defaulting(to:)`.
    var kind: KVCacheSpec.Kind { chosenKind ?? .f32 }

    /// These options with `kind` as the cache when `--kv-type` is not given (serve: F16, as llama-server).
    func defaulting(to kind: KVCacheSpec.Kind) -> KVCacheOptions {
        var options = self
        if options.chosenKind == nil { options.chosenKind = kind }
        return options
    }

    @Option(name: .customLong("kv-bits"), parsing: .unconditional, help: "KIVI: code bits, 2, 3, 4 or 8 (default 2).")
    var bits: Int?

    @Option(name: .customLong("kv-group"), parsing: .unconditional, help: "KIVI: tokens per key scale and channels per value scale, a multiple of 8 dividing the head size (default 32).")
    var group: Int?

    @Option(name: .customLong("kv-window"), parsing: .unconditional, help: "Newest tokens kept exact: KIVI in F16 (default 128; keys leave it a group at a time), CSKV in F32 (default 32).")
    var window: Int?

    @Option(name: .customLong("pivot"), parsing: .unconditional, help: "KIVI + IntactKV: the first N positions (the attention sinks) keep exact F32 keys and values.")
    var pivots: Int?

    @Option(name: .customLong("pivot-prefix"), help: "KIVI + IntactKV: pivots given as text (e.g. the system prompt your prompts start with); --pivot becomes its token count.")
    var pivotPrefix: String?

    @Option(name: .customLong("intact-from"), help: "KIVI + IntactKV: the pivots' keys/values come from this full-precision model (run with float activations), e.g. the unquantized model -m came from.")
    var intactFrom: String?

    @Option(name: .customLong("outlier-tokens"), parsing: .unconditional, help: "KIVI + OTT: per key group, up to N outlier tokens keep F16 keys in a pool and the group is quantized without them (0 = off).")
    var outlierTokens: Int?

    @Option(name: .customLong("outlier-pool"), parsing: .unconditional, help: "KIVI + OTT: pool size per layer and KV head (default 64); once full, later groups are quantized whole.")
    var outlierPool: Int?

    @Option(name: .customLong("outlier-criterion"), help: "KIVI + OTT: norm (smallest key norm, the paper's observation; best here) or range (the tokens that alone span most of the channels' ranges).")
    var outlierCriterion: KIVISettings.OutlierCriterion?

    @Option(name: .customLong("kv-rank"), parsing: .unconditional, help: "CSKV: latent channels as a fraction of all key/value channels, in (0, 1] (default 0.5); each head's rank is allocated from its calibration error.")
    var rank: Double?

    @Option(name: .customLong("kv-latent-bits"), parsing: .unconditional, help: "CSKV: latent storage, 16 (F16, default) or 4 (codes per token with an F16 scale and minimum).")
    var latentBits: Int?

    @Option(name: .customLong("kv-factors"), help: "CSKV: factor file (.safetensors); when missing it is calibrated (about a minute) and saved there (default: ~/.cache/pivot/cskv/<model>-<size>.safetensors).")
    var factors: String?

    @Option(name: .customLong("kv-calib"), help: "CSKV: calibration text for new factors (default: the shared calibration.txt, never evaluated on).")
    var calibration: String?

    @Option(name: .customLong("kv-train-steps"), parsing: .unconditional, help: "CSKV: fine-tune the factors, this many AdamW steps per layer (0: the closed form, default), on the attention-output error against the exact cache over 8 calibration chunks of 512 tokens; cached beside the factor file.")
    var trainSteps: Int?

    @Option(name: .customLong("kv-train-lr"), parsing: .unconditional, help: "CSKV: peak learning rate of that training, relative to each factor matrix's RMS (default 0.01; warm-up then cosine decay).")
    var trainLearningRate: Double?

    var parameters: KVCacheParameters {
        KVCacheParameters(kind: kind, bits: bits, group: group, window: window, pivots: pivots, pivotPrefix: pivotPrefix, intactFrom: intactFrom,
                          outlierTokens: outlierTokens, outlierPool: outlierPool, outlierCriterion: outlierCriterion, rank: rank,
                          latentBits: latentBits, factors: factors, calibration: calibration, trainSteps: trainSteps,
                          trainLearningRate: trainLearningRate)
    }

    func spec() throws -> KVCacheSpec {
        do { return try parameters.spec() } catch PivotError.invalidArgument(let message) { throw ValidationError(message) }
    }

    func validate() throws { _ = try spec() }
}

extension KVCacheSpec.Kind: ExpressibleByArgument {}
extension KIVISettings.OutlierCriterion: ExpressibleByArgument {}
extension MixedPrecision.BudgetScope: ExpressibleByArgument {}
extension ActivationPrecision: ExpressibleByArgument {}

extension BlockFormat: ExpressibleByArgument {
    public init?(argument: String) {
        guard let format = BlockFormat.named(argument) else { return nil }
        self = format
    }
    public static var allValueStrings: [String] { allCases.map(\.name) }
}

/// "--flag must be between A and B (got V)": one wording for every range.
func checkRange<T: Comparable>(_ flag: String, _ value: T, _ range: ClosedRange<T>) throws {
    guard range.contains(value) else {
        if range.upperBound == (Int.max as? T) { throw ValidationError("\(flag) must be at least \(range.lowerBound) (got \(value))") }
        throw ValidationError("\(flag) must be between \(range.lowerBound) and \(range.upperBound) (got \(value))")
    }
}

func writeOut(_ s: String) {
    if s.isEmpty { return }
    FileHandle.standardOutput.write(s.data(using: .utf8)!)
}

func writeErr(_ s: String) {
    FileHandle.standardError.write(s.data(using: .utf8)!)
}

/// `--shortlist N`: the output head computes logits for a candidate set only (see `OutputShortlist`).
struct ShortlistOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Output shortlist: logits only for the N most frequent tokens of --shortlist-corpus, the special tokens and each prompt's tokens. Greedy output stays identical: tokens outside the set that could win are computed (the exact check; `generate` prints how often it did).")
    var shortlist: Int?

    @Option(help: "Text whose token frequencies pick the shortlist (default: calibration.txt of the shared data, when found).")
    var shortlistCorpus: String?

    @Flag(help: "Shortlist without the exact check: faster, and greedy output may differ when a token outside the set would have won.")
    var shortlistLossy = false

    func validate() throws {
        if let shortlist { try checkRange("--shortlist", shortlist, 1...1 << 22) }
        if shortlistLossy && shortlist == nil { throw ValidationError("--shortlist-lossy needs --shortlist N") }
        if let shortlistCorpus, !FileManager.default.fileExists(atPath: shortlistCorpus) { throw ValidationError("--shortlist-corpus \(shortlistCorpus): no such file") }
    }

    var settings: OutputShortlist.Settings? {
        get throws {
            guard let shortlist else { return nil }
            return OutputShortlist.Settings(size: shortlist, corpus: try Self.corpus(shortlistCorpus), exact: !shortlistLossy)
        }
    }

    /// The given corpus, or the shared calibration text beside the checkout.
    static func corpus(_ given: String?) throws -> String {
        guard let corpus = given ?? ModelLocator.sharedDataFile("calibration.txt") else {
            throw ValidationError("--shortlist: give --shortlist-corpus (no calibration.txt found beside the checkout)")
        }
        return corpus
    }
}
