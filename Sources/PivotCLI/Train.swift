import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a model on text (next-token cross-entropy): AdamW, warm-up + cosine, clipping, checkpoints.",
        discussion: """
        The model trains in float (its dequantized weights); a quantized model trains through the straight-through \
        estimator and is written in its own types by default (group-wise tensors keep their scales), or as --type. \
        Kill it at any time: --resume continues from the last checkpoint with the same flags.
        """)

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Training") var training: TrainingOptions

    func run() throws {
        let pool = model.makePool()
        let session = try TrainingSession(student: try model.resolvedPath(), options: training, pool: pool)
        try session.run(source: CrossEntropySource(), windows: session.windows(), extraMetadata: [])
    }
}

struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Knowledge distillation: a student (-m) learns a teacher's next-token distributions on text.",
        discussion: """
        Token level (default): forward KL from the teacher's top-k log-probabilities at --temperature (Hinton et al.), \
        or --reverse KL over the whole vocabulary (MiniLLM/GKD), mixed with cross-entropy by --ce-weight. Sequence level \
        (--sequence, Kim & Rush; HW-TSC's recipe): the teacher continues each window's first --prompt-tokens greedily and \
        the student learns those continuations. The teacher may be any model with the same vocabulary, e.g. the \
        unquantized model teaching a quantized student (quantization-aware healing: the student trains through the \
        straight-through estimator and keeps its own types unless --type says otherwise).
        """)

    @Option(help: "The teacher: a .gguf file, HF folder or model name.")
    var teacher: String

    @Option(help: "Activation precision of the teacher: int8 or float (default: float).")
    var teacherPrecision: ActivationPrecision = .float

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Teacher log-probabilities kept per token for the forward KL (default: 64).")
    var topK = 64

    @Option(parsing: .unconditional, help: "Softmax temperature of both sides; the loss is scaled by τ² (default: 1).")
    var temperature: Float = 1

    @Option(parsing: .unconditional, help: "Weight of the data's cross-entropy in the loss, 0-1 (default: 0).")
    var ceWeight: Float = 0

    @Flag(help: "Reverse KL(student ‖ teacher) over the full vocabulary instead of forward KL on the top-k.")
    var reverse = false

    @Flag(help: "Sequence-level distillation: learn the teacher's greedy continuations of prompts.")
    var sequence = false

    @Option(parsing: .unconditional, help: "With --sequence: prompt tokens taken from each window (default: 32).")
    var promptTokens = 32

    @OptionGroup(title: "Student") var model: ModelOptions
    @OptionGroup(title: "Training") var training: TrainingOptions

    func validate() throws {
        try checkRange("--top-k", topK, 1...4096)
        guard temperature > 0 else { throw ValidationError("--temperature must be positive (got \(temperature))") }
        guard (0...1).contains(ceWeight) else { throw ValidationError("--ce-weight is 0-1 (got \(ceWeight))") }
        if sequence { try checkRange("--prompt-tokens", promptTokens, 1...(training.length - 1)) }
        if sequence && (reverse || ceWeight > 0 || temperature != 1 || topK != 64) {
            throw ValidationError("--sequence learns the teacher's text by cross-entropy; --reverse, --ce-weight, --temperature and --top-k are token-level settings")
        }
    }

    func run() throws {
        let pool = model.makePool()
        let session = try TrainingSession(student: try model.resolvedPath(), options: training, pool: pool)
        guard let teacherPath = ModelLocator.resolve(teacher) else { throw ModelLocator.notFound(teacher) }
        let teacherModel = try LoadedModel.load(path: teacherPath)
        guard teacherModel.tokenizer.tokens == session.tokenizer.tokens else {
            throw ValidationError("--teacher \(teacherPath) has a different vocabulary from the student's; distillation needs the same tokens")
        }
        let execution = Execution(pool: pool, precision: teacherPrecision)
        var metadata = [GGUFMetadataEntry("pivot.distill.teacher", .string((teacherPath as NSString).lastPathComponent), type: 8)]
        if sequence {
            let prompts = try session.windows(), count = training.steps * training.batch * training.accumulation
            let bar = ProgressBar(total: min(count, prompts.windows.count), label: "teacher")
            let sequences = try SequenceDistillation.continuations(teacher: teacherModel, prompts: prompts, promptLength: promptTokens, count: count,
                                                                   cache: session.options.stem + ".sequences.json", execution: execution) { done, _ in
                bar.update(done)
            }
            bar.finish()
            metadata.append(GGUFMetadataEntry("pivot.distill.mode", .string("sequence"), type: 8))
            try session.run(source: PromptMaskedCrossEntropy(promptLength: promptTokens), windows: TrainingWindows(windows: sequences),
                            extraMetadata: metadata)
        } else {
            let settings = DistillationSettings(topK: topK, temperature: temperature, crossEntropyWeight: ceWeight, divergence: reverse ? .reverse : .forward)
            metadata.append(GGUFMetadataEntry("pivot.distill.mode", .string(reverse ? "reverse-kl" : "forward-kl top-\(topK)"), type: 8))
            try session.run(source: TeacherSource(teacher: teacherModel, settings: settings, length: training.length, execution: execution),
                            windows: session.windows(), extraMetadata: metadata)
        }
    }
}
