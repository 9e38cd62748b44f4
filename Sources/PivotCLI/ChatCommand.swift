import Foundation

/// What one line typed into `pivot chat` asks for. Public so the tests can check the parsing.
public enum ChatCommand: Equatable, Sendable {
    case help
    case reset
    case exit
    /// `/word` that is no command: the word, to say so.
    case unknown(String)
    /// Text for the model.
    case message(String)
    case empty

    /// A line whose first word is `/` and letters is a command (case-insensitive; the rest of the
    /// line is ignored). `//text` sends `/text`; a slash not followed by a letter word (`/usr/bin`,
    /// `/ 2`) is just text.
    public static func parse(_ line: String) -> ChatCommand {
        let input = line.trimmingCharacters(in: .whitespaces)
        if input.isEmpty { return .empty }
        if input.hasPrefix("//") { return .message(String(input.dropFirst())) }
        guard input.hasPrefix("/") else { return .message(input) }
        let word = input.prefix { !$0.isWhitespace }
        let name = word.dropFirst().lowercased()
        if name == "?" { return .help }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter }) else { return .message(input) }
        switch name {
        case "help": return .help
        case "reset": return .reset
        case "exit", "quit": return .exit
        default: return .unknown(String(word))
        }
    }

    public static let helpText = """
        Commands:
          /help           this list
          /reset          forget the conversation (the system prompt stays)
          /exit, /quit    leave (also Ctrl-D on an empty line)
          //text          send "/text" to the model
        Keys: Left/Right, Home/End (Ctrl-A/Ctrl-E) move; Up/Down recall earlier lines;
          Backspace/Delete; Ctrl-U, Ctrl-K delete to the start, to the end; Ctrl-W the word before;
          Ctrl-C clears the line, stops a reply; Ctrl-C on an empty line twice, or Ctrl-D, quits.

        """
}
