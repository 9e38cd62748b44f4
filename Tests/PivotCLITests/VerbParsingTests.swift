import ArgumentParser
import XCTest
import PivotCLI

/// Every verb parses and validates without a model: argument errors are caught before any work.
final class VerbParsingTests: XCTestCase {
    func testEveryVerbIsRegistered() {
        let names = PivotCommand.configuration.subcommands.map { $0._commandName }
        XCTAssertEqual(Set(names), ["generate", "chat", "perplexity", "eval", "kld", "attention-map", "quantize", "convert",
                                    "imatrix", "serve", "bench", "inspect", "tokenize"])
    }
}
