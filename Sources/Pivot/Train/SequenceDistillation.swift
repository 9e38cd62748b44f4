import Foundation
import PivotKernels

/// Cross-entropy on each sequence's continuation only: its first `promptLength` tokens are context.
public struct PromptMaskedCrossEntropy: ObjectiveSource {
    public let promptLength: Int
    public init(promptLength: Int) { self.promptLength = promptLength }
    public func objective(for batch: [[Int]], pool: ThreadPool) -> NextTokenCrossEntropy {
        NextTokenCrossEntropy(batch: batch, scoredFrom: promptLength - 1)
    }
}

/// Sequence-level knowledge distillation (Kim & Rush 2016): the student learns the teacher's own
/// outputs, here its greedy continuations of prompts cut from the training windows.
public enum SequenceDistillation {
    /// `count` sequences (prompts from `prompts` in order, cycling): each window's first `promptLength`
    /// tokens and the teacher's greedy continuation to the window's length. Kept in `cache` (JSON) so a
    /// resumed or repeated run does not generate them again.
    public static func continuations(teacher: LoadedModel, prompts: TrainingWindows, promptLength: Int, count: Int, cache: String?,
                                     execution: Execution, progress: (Int, Int) -> Void = { _, _ in }) throws -> [[Int]] {
        let unique = min(count, prompts.windows.count), length = prompts.windows[0].count
        struct Stored: Codable { let teacher: String; let promptLength: Int; let length: Int; let sequences: [[Int]] }
        let name = (teacher.path as NSString).lastPathComponent
        if let cache, let data = FileManager.default.contents(atPath: cache),
           let stored = try? JSONDecoder().decode(Stored.self, from: data),
           stored.teacher == name, stored.promptLength == promptLength, stored.length == length, stored.sequences.count >= unique {
            return Array(stored.sequences.prefix(unique))
        }
        let state = ForwardState(config: teacher.config, maxTokens: length, allLogits: false, execution: execution)
        let kvCache = teacher.makeCache(capacity: length, maxBatch: length)
        var sequences: [[Int]] = []
        for i in 0..<unique {
            var tokens = Array(prompts.windows[i].prefix(promptLength))
            kvCache.truncate(to: 0)
            var logits = teacher.transformer.forward(tokens, cache: kvCache, state: state, logits: .last)
            while tokens.count < length {
                let best = argmax(logits.row(0), count: teacher.config.vocabularySize)
                tokens.append(best)
                if tokens.count < length { logits = teacher.transformer.forward(token: best, cache: kvCache, state: state) }
            }
            sequences.append(tokens)
            progress(i + 1, unique)
        }
        if let cache {
            try? JSONEncoder().encode(Stored(teacher: name, promptLength: promptLength, length: length, sequences: sequences))
                .write(to: URL(fileURLWithPath: cache), options: .atomic)
        }
        return sequences
    }
}
