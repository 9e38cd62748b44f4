import Foundation

extension Tokenizer {
    /// From `tokenizer.json` (+ `tokenizer_config.json` for BOS/EOS and add_bos; the chat template from
    /// `chat_template.jinja`, as transformers 5 saves it, else from `tokenizer_config.json`).
    public convenience init(huggingFaceDirectory directory: String, extraStopTokens: Set<Int> = []) throws {
        let path = (directory as NSString).appendingPathComponent("tokenizer.json")
        let json = try HuggingFaceLoader.readJSON(path)
        let configPath = (directory as NSString).appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.fileExists(atPath: configPath) ? try HuggingFaceLoader.readJSON(configPath) : [:]

        guard let model = json["model"] as? [String: Any], (model["type"] as? String ?? "BPE") == "BPE",
              let vocab = model["vocab"] as? [String: Int] else {
            throw PivotError.unsupported(file: path, "only BPE tokenizers are supported (model.type BPE with a vocab)")
        }
        let added = (json["added_tokens"] as? [[String: Any]]) ?? []
        var size = (vocab.values.max() ?? -1) + 1
        for token in added { if let id = token["id"] as? Int { size = max(size, id + 1) } }
        guard size > 0, size <= 1 << 22 else { throw PivotError.malformed(file: path, "vocabulary size \(size) is implausible") }
        var tokens = [String](repeating: "", count: size)
        for (text, id) in vocab where id >= 0 { tokens[id] = text }
        var specials: [String] = []
        for token in added {
            guard let id = token["id"] as? Int, id >= 0, let content = token["content"] as? String else { continue }
            tokens[id] = content
            specials.append(content)
        }
        var merges: [(String, String)] = []
        for merge in (model["merges"] as? [Any]) ?? [] {
            if let s = merge as? String, let space = s.firstIndex(of: " ") {
                merges.append((String(s[..<space]), String(s[s.index(after: space)...])))
            } else if let pair = merge as? [String], pair.count == 2 {
                merges.append((pair[0], pair[1]))
            }
        }
        func tokenText(_ key: String) -> String? {
            if let s = config[key] as? String { return s }
            return (config[key] as? [String: Any])?["content"] as? String
        }
        let ids = Dictionary(tokens.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let bos = tokenText("bos_token").flatMap { ids[$0] }
        let eos = tokenText("eos_token").flatMap { ids[$0] }
        let jinjaPath = (directory as NSString).appendingPathComponent("chat_template.jinja")
        var template = FileManager.default.fileExists(atPath: jinjaPath) ? try String(contentsOfFile: jinjaPath, encoding: .utf8) : nil
        if template == nil { template = config["chat_template"] as? String }
        if template == nil, let list = config["chat_template"] as? [[String: Any]] {
            template = list.first { ($0["name"] as? String) == "default" }?["template"] as? String
        }
        var stops = extraStopTokens.filter { $0 >= 0 && $0 < size }
        for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] where specials.contains(name) { if let id = ids[name] { stops.insert(id) } }

        let kind = Self.detectKind(json)
        let addBOS: Bool
        if let flag = config["add_bos_token"] as? Bool { addBOS = flag } else if case .sentencePiece = kind { addBOS = true } else { addBOS = false }
        self.init(kind: kind, tokens: tokens, mergeList: merges, specialTokens: specials, bos: bos, eos: eos,
                  addBOS: addBOS, stopTokens: stops, chatTemplate: template)
    }

    /// Walks the pre-tokenizer and normalizer to pick the splitting rules.
    static func detectKind(_ json: [String: Any]) -> Kind {
        var components: [[String: Any]] = []
        func collect(_ node: Any?) {
            guard let node = node as? [String: Any] else { return }
            components.append(node)
            for key in ["pretokenizers", "normalizers"] { (node[key] as? [Any])?.forEach(collect) }
        }
        collect(json["pre_tokenizer"])
        collect(json["normalizer"])
        let types = components.compactMap { $0["type"] as? String }
        let patterns = components.compactMap { ($0["pattern"] as? [String: Any])?["Regex"] as? String }
        let replacesSpace = components.contains { ($0["type"] as? String) == "Replace" && "\($0["content"] ?? "")" == "▁" }
        if types.contains("Metaspace") || replacesSpace || ((json["model"] as? [String: Any])?["byte_fallback"] as? Bool) == true {
            return .sentencePiece(addSpacePrefix: true)
        }
        if patterns.contains(where: { $0.contains("\\p{N}{1,3}") }) { return .byteLevel(.llama3(maxDigits: 3)) }
        if patterns.contains(where: { $0.contains("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+") }) { return .byteLevel(.llama3(maxDigits: 1)) }
        let digits = components.contains { ($0["type"] as? String) == "Digits" && ($0["individual_digits"] as? Bool) == true }
        return .byteLevel(.gpt2(individualDigits: digits))
    }
}
