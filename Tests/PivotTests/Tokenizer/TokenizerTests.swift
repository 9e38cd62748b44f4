import XCTest
import Pivot

/// Tokenizer pieces that do not need the real model.
final class TokenizerTests: XCTestCase {
    func split(_ text: String, _ pre: PreTokenizer) -> [String] {
        let scalars = Array(text.unicodeScalars)
        return pre.split(scalars).map { range in
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[range])
            return String(view)
        }
    }

    func testGPT2PreTokenizerMatchesTheRegex() {
        // Expected splits of `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
        let pre = PreTokenizer.gpt2(individualDigits: false)
        XCTAssertEqual(split("Hello world", pre), ["Hello", " world"])
        XCTAssertEqual(split("I'm here's  x", pre), ["I", "'m", " here", "'s", " ", " x"])
        XCTAssertEqual(split("a\n\nb", pre), ["a", "\n", "\n", "b"])
        XCTAssertEqual(split("a   ", pre), ["a", "   "])
        XCTAssertEqual(split("x 123 !!?", pre), ["x", " 123", " !!?"])
        XCTAssertEqual(split("héllo wörld", pre), ["héllo", " wörld"])
        XCTAssertEqual(split("it'S", pre), ["it", "'", "S"])
        let smollm = PreTokenizer.gpt2(individualDigits: true)
        XCTAssertEqual(split("year 2018!", smollm), ["year", " ", "2", "0", "1", "8", "!"])
    }

    func testLlama3PreTokenizerMatchesTheRegex() {
        let pre = PreTokenizer.llama3(maxDigits: 3)
        XCTAssertEqual(split("Hello world", pre), ["Hello", " world"])
        XCTAssertEqual(split("12345", pre), ["123", "45"])
        XCTAssertEqual(split("I'M ok", pre), ["I", "'M", " ok"])
        XCTAssertEqual(split("a.\n\nb", pre), ["a", ".\n\n", "b"])
        XCTAssertEqual(split("x  \n y", pre), ["x", "  \n", " y"])
        XCTAssertEqual(split("(hello)", pre), ["(hello", ")"])
        XCTAssertEqual(split("12345", .llama3(maxDigits: 1)), ["1", "2", "3", "4", "5"])
    }

    /// A tiny byte-level vocabulary: merges apply by rank, special tokens split the text.
    func testByteLevelBPEMergesByRankAndParsesSpecials() {
        let byte = { (c: Character) in String(ByteLevel.byteToScalar[Int(c.asciiValue!)]) }
        var tokens = (0..<256).map { String(ByteLevel.byteToScalar[$0]) }
        tokens += ["lo", "low", byte(" ") + "low", "<|end|>"]
        let tokenizer = Tokenizer(kind: .byteLevel(.gpt2(individualDigits: false)), tokens: tokens,
                                  mergeList: [("l", "o"), ("lo", "w"), (byte(" "), "low")],
                                  specialTokens: ["<|end|>"], bos: nil, eos: 259, addBOS: false, chatTemplate: nil)
        XCTAssertEqual(tokenizer.encode("low low<|end|>lo"), [257, 258, 259, 256])
        XCTAssertEqual(tokenizer.decode([257, 258, 259, 256]), "low low<|end|>lo")
        XCTAssertEqual(tokenizer.encode("é"), [0xC3, 0xA9].map { Int($0) })
        XCTAssertTrue(tokenizer.stopTokens.contains(259))
    }

    /// SentencePiece BPE from scores: "▁" prefix, merges by score, byte fallback for unknown characters.
    func testSentencePieceBPE() {
        var tokens = ["<unk>", "<s>", "</s>"] + (0..<256).map { Tokenizer.byteFallbackToken(UInt8($0)) }
        tokens += ["▁", "h", "i", "▁h", "▁hi", "!"]
        var scores = [Float](repeating: 0, count: tokens.count)
        scores[tokens.firstIndex(of: "▁h")!] = -1
        scores[tokens.firstIndex(of: "▁hi")!] = -0.5
        let tokenizer = Tokenizer(kind: .sentencePiece(addSpacePrefix: true), tokens: tokens, mergeList: [], scores: scores,
                                  specialTokens: ["<s>", "</s>"], bos: 1, eos: 2, addBOS: true, chatTemplate: nil)
        let ids = tokenizer.encode("hi hi€")
        let hi = tokens.firstIndex(of: "▁hi")!
        XCTAssertEqual(Array(ids.prefix(3)), [1, hi, hi])
        XCTAssertEqual(ids.count, 6, "€ falls back to its three UTF-8 bytes")
        XCTAssertEqual(tokenizer.decode(Array(ids.dropFirst())), "hi hi€")
    }

    func testStreamingDecoderHoldsBackPartialCharacters() {
        var tokens = (0..<256).map { String(ByteLevel.byteToScalar[$0]) }
        tokens.append("x")
        let tokenizer = Tokenizer(kind: .byteLevel(.gpt2(individualDigits: false)), tokens: tokens, mergeList: [],
                                  specialTokens: [], bos: nil, eos: nil, addBOS: false, chatTemplate: nil)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        XCTAssertEqual(decoder.push(0xE2), "")
        XCTAssertEqual(decoder.push(0x82), "")
        XCTAssertEqual(decoder.push(0xAC), "€")
        XCTAssertEqual(decoder.push(Int(UInt8(ascii: "a"))), "a")
    }

    func testChatTemplates() {
        let smol = ChatTemplate(jinja: "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{{'<|im_start|>' + message['role']}}")
        XCTAssertEqual(smol, .chatML(defaultSystem: "You are helpful"))
        XCTAssertEqual(smol.render([ChatMessage(role: "user", content: "Hi")]),
                       "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(smol.render([ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: false),
                       "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
        XCTAssertEqual(ChatTemplate(jinja: "<|start_header_id|>"), .llama3)
        XCTAssertEqual(ChatTemplate(jinja: "[INST]").render([ChatMessage(role: "user", content: "Hi")]), "<s>[INST] Hi [/INST]")
    }
}
