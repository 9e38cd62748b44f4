import Foundation

/// One scored question: log-likelihood requests (context, continuation), the gold request index,
/// and each choice's text length in Unicode scalars (Python's `len`, lm-eval's acc_norm divisor).
public struct EvalItem: Sendable, Equatable {
    public struct Request: Sendable, Equatable {
        public var context: String
        public var continuation: String
        public init(_ context: String, _ continuation: String) { self.context = context; self.continuation = continuation }
    }
    public var requests: [Request]
    public var gold: Int
    public var choiceLengths: [Int]

    public init(requests: [Request], gold: Int, choiceLengths: [Int]) {
        self.requests = requests; self.gold = gold; self.choiceLengths = choiceLengths
    }

    /// lm-eval's multiple choice: one context, each choice as `" " + choice` (the target delimiter).
    static func multipleChoice(_ context: String, choices: [String], gold: Int) -> EvalItem {
        EvalItem(requests: choices.map { Request(context, " " + $0) }, gold: gold,
                 choiceLengths: choices.map { $0.unicodeScalars.count })
    }
}

/// How a task is scored.
public enum TaskKind: Sendable { case multipleChoice, lastWord }

/// A zero-shot task as lm-evaluation-harness declares it: a data file and how one JSON line
/// becomes an item. Adding a task touches no scoring code.
public struct EvalTask: Sendable {
    public let name: String
    public let file: String
    public let kind: TaskKind
    /// The metric a report shows first (lm-eval's customary headline for the task).
    public let headline: String
    let makeItem: @Sendable (_ line: [String: Any], _ shots: ShotProvider) throws -> EvalItem

    public static let all: [EvalTask] = [hellaswag, arcEasy, arcChallenge, piqa, winogrande, boolq, openbookqa, mmlu, lambada]
    /// Names accepted by `pivot eval`, with the non-log-likelihood ones handled by the CLI.
    public static let names = all.map(\.name) + ["wikitext", "passkey"]

    public static func named(_ name: String) -> EvalTask? { all.first { $0.name == name } }

    /// Pivot's name for a task named as Pivot or lm-evaluation-harness names it ("arc_easy", "lambada_openai").
    public static func canonicalName(_ name: String) -> String? {
        let aliases = ["lambada_openai": "lambada", "winogrande_xl": "winogrande", "wikitext2": "wikitext", "wikitext-2": "wikitext"]
        let key = aliases[name.lowercased()] ?? name.lowercased().replacingOccurrences(of: "_", with: "-")
        return (names + ["all"]).contains(key) ? key : nil
    }

    /// The item one JSON line of the task file becomes.
    public func item(from line: [String: Any], shots: ShotProvider = ShotProvider()) throws -> EvalItem { try makeItem(line, shots) }
}

/// Few-shot examples (MMLU's dev split, first N of the same subject).
public struct ShotProvider: Sendable {
    public var count = 0
    var bySubject: [String: [String]] = [:]

    public init() {}

    public init(mmluDev lines: [[String: Any]], count: Int) throws {
        self.count = count
        for line in lines {
            let subject = try field(line, "subject", as: String.self)
            let (prompt, answer) = try EvalTask.mmluQuestion(line)
            bySubject[subject, default: []].append(prompt + " " + ["A", "B", "C", "D"][answer] + "\n\n")
        }
    }

    func examples(subject: String) -> String { (bySubject[subject] ?? []).prefix(count).joined() }
}

/// A field of one JSON line; the task loader adds the file and line number to the error.
func field<T>(_ line: [String: Any], _ key: String, as: T.Type) throws -> T {
    guard let value = line[key] as? T else {
        let expected = T.self == String.self ? "a string" : T.self == Int.self ? "an integer" : T.self == Bool.self ? "true or false" : "a list"
        throw PivotError.invalidArgument("field '\(key)' missing or not \(expected)")
    }
    return value
}

extension EvalTask {
    /// HellaSwag's WikiHow clean-up: strip, " [title]" → ". ", drop [bracketed] spans, "  " → " ".
    public static func hellaswagPreprocess(_ text: String) -> String {
        var s = text.trimmingCharacters(in: .whitespacesAndNewlines)
        s = s.replacingOccurrences(of: " [title]", with: ". ")
        s = s.replacingOccurrences(of: "\\[.*?\\]", with: "", options: .regularExpression)
        return s.replacingOccurrences(of: "  ", with: " ")
    }

    /// Python's `str.capitalize()`: first character upper case, the rest lower case.
    public static func pythonCapitalize(_ s: String) -> String {
        guard let first = s.first else { return s }
        return String(first).uppercased() + s.dropFirst().lowercased()
    }

    static let hellaswag = EvalTask(name: "hellaswag", file: "hellaswag_validation.jsonl", kind: .multipleChoice, headline: "acc_norm") { line, _ in
        let ctx = try field(line, "ctx_a", as: String.self) + " " + pythonCapitalize(try field(line, "ctx_b", as: String.self))
        let query = hellaswagPreprocess(try field(line, "activity_label", as: String.self) + ": " + ctx)
        let endings = try field(line, "endings", as: [String].self).map(hellaswagPreprocess)
        guard let gold = Int(try field(line, "label", as: String.self)) else { throw PivotError.invalidArgument("label is not a number") }
        return .multipleChoice(query, choices: endings, gold: gold)
    }

    /// ARC as stored by llm-foundry: `query` already reads "Question: ..."; lm-eval appends "\nAnswer:".
    static func arc(_ name: String, _ file: String) -> EvalTask {
        EvalTask(name: name, file: file, kind: .multipleChoice, headline: "acc_norm") { line, _ in
            .multipleChoice(try field(line, "query", as: String.self) + "\nAnswer:",
                            choices: try field(line, "choices", as: [String].self), gold: try field(line, "gold", as: Int.self))
        }
    }
    static let arcEasy = arc("arc-easy", "arc_easy_test.jsonl")
    static let arcChallenge = arc("arc-challenge", "arc_challenge_test.jsonl")

    static let piqa = EvalTask(name: "piqa", file: "piqa_validation.jsonl", kind: .multipleChoice, headline: "acc_norm") { line, _ in
        .multipleChoice("Question: " + (try field(line, "goal", as: String.self)) + "\nAnswer:",
                        choices: [try field(line, "sol1", as: String.self), try field(line, "sol2", as: String.self)],
                        gold: try field(line, "label", as: Int.self))
    }

    /// Partial scoring: each option fills the blank in the context; the shared rest of the
    /// sentence after the blank is the continuation whose likelihood decides.
    static let winogrande = EvalTask(name: "winogrande", file: "winogrande_xl_validation.jsonl", kind: .multipleChoice, headline: "acc") { line, _ in
        let sentence = try field(line, "sentence", as: String.self)
        guard let blank = sentence.firstIndex(of: "_") else { throw PivotError.invalidArgument("sentence has no '_' blank") }
        let rest = String(sentence[sentence.index(after: blank)...]).trimmingCharacters(in: .whitespacesAndNewlines)
        let options = [try field(line, "option1", as: String.self), try field(line, "option2", as: String.self)]
        let answer = try field(line, "answer", as: String.self)
        guard let gold = ["1": 0, "2": 1][answer] else { throw PivotError.invalidArgument("answer '\(answer)' is not 1 or 2") }
        let contexts = options.map { String(sentence[..<blank]) + $0 }
        return EvalItem(requests: contexts.map { .init($0, " " + rest) }, gold: gold,
                        choiceLengths: contexts.map { $0.unicodeScalars.count })
    }

    static let boolq = EvalTask(name: "boolq", file: "boolq_validation.jsonl", kind: .multipleChoice, headline: "acc") { line, _ in
        let context = try field(line, "passage", as: String.self) + "\nQuestion: " + (try field(line, "question", as: String.self)) + "?\nAnswer:"
        return .multipleChoice(context, choices: ["no", "yes"], gold: try field(line, "answer", as: Bool.self) ? 1 : 0)
    }

    static let openbookqa = EvalTask(name: "openbookqa", file: "openbookqa_validation.jsonl", kind: .multipleChoice, headline: "acc_norm") { line, _ in
        guard let choices = line["choices"] as? [String: Any], let texts = choices["text"] as? [String], let labels = choices["label"] as? [String] else {
            throw PivotError.invalidArgument("field 'choices' must hold 'text' and 'label' lists")
        }
        let key = try field(line, "answerKey", as: String.self).trimmingCharacters(in: .whitespaces)
        guard let gold = labels.firstIndex(of: key) else { throw PivotError.invalidArgument("answerKey '\(key)' is not among the labels") }
        return .multipleChoice(try field(line, "question_stem", as: String.self), choices: texts, gold: gold)
    }

    static func mmluQuestion(_ line: [String: Any]) throws -> (String, Int) {
        let choices = try field(line, "choices", as: [String].self)
        guard choices.count == 4 else { throw PivotError.invalidArgument("MMLU needs 4 choices, found \(choices.count)") }
        let question = try field(line, "question", as: String.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let text = question + "\nA. \(choices[0])\nB. \(choices[1])\nC. \(choices[2])\nD. \(choices[3])\nAnswer:"
        return (text, try field(line, "answer", as: Int.self))
    }

    /// 0-shot by default: the subject header, the question with lettered choices, " A".." D" scored.
    static let mmlu = EvalTask(name: "mmlu", file: "mmlu_test.jsonl", kind: .multipleChoice, headline: "acc") { line, shots in
        let subject = try field(line, "subject", as: String.self)
        let (question, answer) = try mmluQuestion(line)
        let header = "The following are multiple choice questions (with answers) about \(subject.replacingOccurrences(of: "_", with: " ")).\n\n"
        return .multipleChoice(header + shots.examples(subject: subject) + question, choices: ["A", "B", "C", "D"], gold: answer)
    }

    /// LAMBADA (OpenAI): the last word, with its leading space, after the rest of the passage.
    static let lambada = EvalTask(name: "lambada", file: "lambada_openai_test.jsonl", kind: .lastWord, headline: "acc") { line, _ in
        let word = try field(line, "continuation", as: String.self)
        return EvalItem(requests: [.init(try field(line, "context", as: String.self), " " + word)], gold: 0,
                        choiceLengths: [word.unicodeScalars.count])
    }
}
