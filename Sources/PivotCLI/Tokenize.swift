import ArgumentParser
import Foundation
import Pivot

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text (or a file) with the model's tokenizer.")

    @OptionGroup(title: "Model") var model: ModelOptions

    @Option(name: [.customShort("p"), .customLong("prompt")], help: "Text to tokenize.")
    var prompt: String?

    @Option(name: [.customShort("f"), .customLong("file")], help: "Tokenize this file instead.")
    var file: String?

    @Flag(help: "Add the BOS token when the model's tokenizer asks for it.")
    var bos = false

    @Flag(help: "Show each token's text next to its id.")
    var pieces = false

    func validate() throws {
        guard (prompt == nil) != (file == nil) else { throw ValidationError("give exactly one of -p or -f") }
    }

    func run() throws {
        var text = prompt ?? ""
        if let file { text = try readTextFile(file) }
        let loaded = try model.load()
        let ids = loaded.tokenizer.encode(text, addBOS: bos ? nil : false)
        if pieces {
            for id in ids { print("\(id)\t\(loaded.tokenizer.decode([id]).debugDescription)") }
        } else {
            print(ids.map { "\($0)" }.joined(separator: " "))
        }
        writeErr("\(ids.count) tokens\n")
    }
}
