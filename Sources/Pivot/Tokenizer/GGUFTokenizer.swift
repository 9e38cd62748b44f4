extension Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    public convenience init(gguf: GGUFFile) throws {
        let m = gguf.metadata
        guard let model = m["tokenizer.ggml.model"]?.string else {
            throw PivotError.malformed(file: gguf.path, "no tokenizer in the file (tokenizer.ggml.model missing)")
        }
        guard let tokenValues = m["tokenizer.ggml.tokens"]?.array, !tokenValues.isEmpty else {
            throw PivotError.malformed(file: gguf.path, "tokenizer.ggml.tokens missing or empty")
        }
        let tokens = tokenValues.map { $0.string ?? "" }
        let types = m["tokenizer.ggml.token_type"]?.array?.map { $0.int ?? 1 } ?? []
        // 3 = control, 4 = user-defined: both are matched verbatim in text.
        let specials = types.enumerated().compactMap { i, t in (t == 3 || t == 4) && i < tokens.count && !tokens[i].isEmpty ? tokens[i] : nil }
        let bos = m["tokenizer.ggml.bos_token_id"]?.int
        let eos = m["tokenizer.ggml.eos_token_id"]?.int
        let template = m["tokenizer.chat_template"]?.string
        var stops: Set<Int> = []
        if let eot = m["tokenizer.ggml.eot_token_id"]?.int { stops.insert(eot) }
        for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] {
            if let i = tokens.firstIndex(of: name), specials.contains(name) { stops.insert(i) }
        }
        switch model {
        case "gpt2":
            let pre = m["tokenizer.ggml.pre"]?.string ?? "default"
            let merges: [(String, String)] = (m["tokenizer.ggml.merges"]?.array ?? []).compactMap { value in
                guard let s = value.string, let space = s.firstIndex(of: " ") else { return nil }
                return (String(s[..<space]), String(s[s.index(after: space)...]))
            }
            self.init(kind: .byteLevel(PreTokenizer(ggufName: pre)), tokens: tokens, mergeList: merges,
                      specialTokens: specials, bos: bos, eos: eos,
                      addBOS: m["tokenizer.ggml.add_bos_token"]?.bool ?? false, stopTokens: stops, chatTemplate: template)
        case "llama":
            let scores = m["tokenizer.ggml.scores"]?.array?.map { Float($0.double ?? 0) }
            guard let scores, scores.count == tokens.count else {
                throw PivotError.malformed(file: gguf.path, "SentencePiece tokenizer needs one score per token")
            }
            self.init(kind: .sentencePiece(addSpacePrefix: m["tokenizer.ggml.add_space_prefix"]?.bool ?? true),
                      tokens: tokens, mergeList: [], scores: scores, specialTokens: specials, bos: bos, eos: eos,
                      addBOS: m["tokenizer.ggml.add_bos_token"]?.bool ?? true, stopTokens: stops, chatTemplate: template)
        default:
            throw PivotError.unsupported(file: gguf.path, "tokenizer model '\(model)' (supported: gpt2, llama)")
        }
        unusedIDs = Set(types.indices.filter { types[$0] == 5 && $0 < tokens.count })
    }
}

extension PreTokenizer {
    /// llama.cpp's `tokenizer.ggml.pre` names.
    init(ggufName: String) {
        switch ggufName {
        case "llama3", "llama-v3", "llama-bpe", "dbrx", "smaug-bpe": self = .llama3(maxDigits: 3)
        case "qwen2", "deepseek-r1-qwen": self = .llama3(maxDigits: 1)
        case "smollm", "starcoder", "refact", "codeshell", "command-r": self = .gpt2(individualDigits: true)
        default: self = .gpt2(individualDigits: false)
        }
    }
}
