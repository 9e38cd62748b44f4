import ArgumentParser
import Foundation
import XCTest
import PivotCLI

/// Every verb's argument rules and exit codes, run in-process as `pivot ARGS` would: a usage error is
/// exit 64 before any work, a runtime error exit 1, both one clear line.
final class VerbParsingTests: XCTestCase {
    func testEveryVerbIsRegistered() {
        let names = PivotCommand.configuration.subcommands.map { $0._commandName }
        XCTAssertEqual(Set(names), ["generate", "chat", "perplexity", "eval", "kld", "attention-map", "quantize", "intact", "convert",
                                    "imatrix", "serve", "bench", "inspect", "tokenize", "train", "distill", "prune"])
    }

    func testTrainingVerbsRefuseBadSettingsBeforeWork() async {
        let model = ["-m", "/work/none.gguf", "--data", "/x.txt", "-o", "/tmp/out.gguf"]
        var code = await PivotCommand.run(arguments: ["train"] + model + ["--steps", "0"])
        XCTAssertEqual(code, 64)
        code = await PivotCommand.run(arguments: ["train"] + model + ["--train-layers", "9-3"])
        XCTAssertEqual(code, 64)
        code = await PivotCommand.run(arguments: ["distill", "--teacher", "t.gguf"] + model + ["--sequence", "--reverse"])
        XCTAssertEqual(code, 64)
        code = await PivotCommand.run(arguments: ["distill", "--teacher", "t.gguf"] + model + ["--ce-weight", "2"])
        XCTAssertEqual(code, 64)
        code = await PivotCommand.run(arguments: ["intact", "--from", "f.gguf", "-o", "/tmp/o.gguf", "--calibrate"])
        XCTAssertEqual(code, 64)
    }

    func testPruneAndShortlistRefuseBadSettingsBeforeWork() async {
        for arguments in ["prune -o /tmp/p.gguf", "prune -o /tmp/p.gguf --ffn 1.2", "prune -o /tmp/p.gguf --layers 2 --drop-layers 3",
                          "prune -o /tmp/p.gguf --drop-layers 1,x", "prune -o /tmp/p.gguf --drop-layers 2,2",
                          "prune -o /tmp/p.gguf --vocab-corpus /nonexistent.txt", "prune -o /tmp/p.gguf --vocab-corpus /etc/hostname --heal distill",
                          "generate -p hi --shortlist 0", "generate -p hi --shortlist-lossy", "bench --shortlist 8 --shortlist-corpus /nonexistent.txt"] {
            let code = await code(arguments)
            XCTAssertEqual(code, 64, arguments)
        }
    }

    private func code(_ arguments: String) async -> Int32 {
        await PivotCommand.run(arguments: arguments.split(separator: " ").map(String.init))
    }

    func testUsageErrorsExit64BeforeAnyWork() async {
        let usage: [String] = [
            "genrate", "help nosuch",
            "generate -p hi -n -5", "generate -p hi --temp -1", "generate -p hi --top-p 2", "generate -p hi -c 1", "generate -p hi -t 0",
            "generate -p hi --kv-type f16 --pivot 4", "generate -p hi --kv-type kivi --kv-bits 5", "generate -p hi --kv-rank 0.5",
            "generate -p hi --draft ngram --draft-max 0", "generate -p hi --quantize-on-load Q9_K", "generate -p hi --nosuch",
            "chat -n 0", "serve --parallel 0", "serve --port 70000", "serve -c 8", "serve --drain-seconds -1",
            "perplexity -f x -c 1", "perplexity -f x --chunks 0", "perplexity -f x --ctx 9000",
            "eval", "eval nosuch", "eval piqa --limt 2", "eval piqa --limit 0", "eval piqa --act-bits 1", "eval piqa --shots 6",
            "eval piqa --json /proc/nope/x.json", "eval piqa --shard 1/1",
            "kld -f x --save-top-k 0", "kld -f x --base-kv-type kivi", "kld -f x --act-bits 1",
            "attention-map -p hi --top 0", "attention-map -p hi --svg /proc/nope/map.svg",
            "quantize -o /tmp/x.gguf --type Q4_K_Z", "quantize -o /tmp/x.gguf --type Q4_K_M --method gtpq",
            "quantize -o /tmp/x.gguf --type Q4_K_M --method gptq", "quantize -o /tmp/x.gguf --type Q4_K_M --bpw 4",
            "quantize -o /proc/x.gguf --type Q4_0", "quantize -o /tmp/x.gguf --type Q2_G64 --standard-only",
            "quantize -o /tmp/x.gguf --type Q4_K_M --method awq", "quantize -o /tmp/x.gguf --type Q4_K_M --method awq+rtn --calib x",
            "quantize -o /tmp/x.gguf --type Q4_K_M --method awq --alpha 0.5 --calib x", "quantize -o /tmp/x.gguf --type F16 --method awq --calib x",
            "quantize -o /tmp/x.gguf --type Q8_0 --method smooth --alpha 2 --calib x", "quantize -o /tmp/x.gguf --type Q8_0 --alpha 0.5 --calib x",
            "convert -m x -o /tmp/x.gguf --type Q9", "imatrix -f x --calib-ctx 8", "bench -p 0 -n 0", "bench -r 0", "bench -d -1",
            "tokenize", "tokenize -p a -f b",
            "intact -o /tmp/x.gguf", "intact --from x -o /tmp/x.gguf --prefix a --prefix-chat", "intact --from x -o /proc/x.gguf",
            "perplexity -f x --prefix-bos --prefix-chat", "perplexity -f x --prefix=",
            "eval --matrix x.json --prefix-chat",
        ]
        for arguments in usage {
            let result = await code(arguments)
            XCTAssertEqual(result, 64, "pivot \(arguments)")
        }
    }

    func testRuntimeErrorsExit1() async {
        for arguments in ["generate -m nosuch-model.gguf -p hi", "perplexity -f /nonexistent/text.txt", "tokenize -f /nonexistent/text.txt",
                          "kld -f /nonexistent/text.txt", "quantize -m nosuch-model.gguf -o /tmp/pivot-cli-test.gguf --type Q4_0",
                          "intact -m nosuch-model.gguf --from nosuch-full.gguf -o /tmp/pivot-cli-intact.gguf"] {
            let result = await code(arguments)
            XCTAssertEqual(result, 1, "pivot \(arguments)")
        }
    }

    func testHelpAndVersionExit0() async {
        for arguments in ["--help", "--version", "help generate", "generate --help", "quantize --help", "serve --help"] {
            let result = await code(arguments)
            XCTAssertEqual(result, 0, "pivot \(arguments)")
        }
    }

    func testHelpIsGroupedInTitledSections() {
        let help = PivotCommand.helpMessage(for: PivotCommand.configuration.subcommands.first { $0._commandName == "generate" }!, columns: 200)
        for title in ["MODEL:", "SAMPLING:", "KV CACHE COMPRESSION:", "DRAFTING (FASTER, SAME OUTPUT):", "CONTEXT:"] {
            XCTAssertTrue(help.contains(title), title)
        }
        XCTAssertFalse(help.contains("--ctx <"), "the old spelling stays hidden")
    }
}
