/// One turn of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// Chat prompt formats. Jinja templates are not executed; the model's template is recognised
/// and rendered by the matching built-in format, which covers the families Pivot supports.
public enum ChatTemplate: Sendable, Equatable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen2). `defaultSystem` is inserted
    /// when the conversation does not start with a system message, as SmolLM2's template does.
    case chatML(defaultSystem: String?)
    /// Llama-3: `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`.
    case llama3
    /// Llama-2 / Mistral: `[INST] user [/INST] assistant</s>`.
    case llama2

    /// Recognises a Jinja chat template by its markers; ChatML when there is none.
    public init(jinja: String?) {
        guard let jinja else { self = .chatML(defaultSystem: nil); return }
        if jinja.contains("<|start_header_id|>") { self = .llama3; return }
        if jinja.contains("[INST]") { self = .llama2; return }
        // A literal default system turn: '<|im_start|>system\n...<|im_end|>' with no Jinja inside.
        let marker = "<|im_start|>system\n"
        if let start = jinja.range(of: marker), let end = jinja.range(of: "<|im_end|>", range: start.upperBound..<jinja.endIndex) {
            let text = String(jinja[start.upperBound..<end.lowerBound])
            if !text.contains("{{") && !text.contains("{%") && !text.contains("'") {
                self = .chatML(defaultSystem: text)
                return
            }
        }
        self = .chatML(defaultSystem: nil)
    }

    /// The prompt text for `messages`, ending with the assistant's header when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true, bosToken: String = "<s>") -> String {
        var out = ""
        switch self {
        case .chatML(let defaultSystem):
            if let defaultSystem, messages.first?.role != "system" {
                out += "<|im_start|>system\n\(defaultSystem)<|im_end|>\n"
            }
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        case .llama3:
            out += "<|begin_of_text|>"
            for m in messages { out += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(m.content)<|eot_id|>" }
            if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .llama2:
            var system: String?
            var first = true
            for m in messages {
                switch m.role {
                case "system": system = m.content
                case "user":
                    let content = first && system != nil ? "<<SYS>>\n\(system!)\n<</SYS>>\n\n\(m.content)" : m.content
                    out += "\(bosToken)[INST] \(content) [/INST]"
                    first = false
                default: out += " \(m.content)</s>"
                }
            }
        }
        return out
    }
}

extension ChatTemplate: CustomStringConvertible {
    public var description: String {
        switch self {
        case .chatML(let system): return "ChatML" + (system.map { " (default system prompt: \"\($0)\")" } ?? "")
        case .llama3: return "Llama-3"
        case .llama2: return "Llama-2 [INST]"
        }
    }
}
