/// The line editor's keys as a pure state machine: terminal bytes in, buffer/cursor/events out.
/// No I/O here, so every key can be unit-tested; `LineEditor` does the terminal side.
///
/// Bytes may arrive in any split (a CSI sequence or a UTF-8 character across two reads): the
/// machine keeps the unfinished part until the rest comes.
public struct LineEditState {
    /// What a byte asks of the caller beyond editing the buffer.
    public enum Event: Equatable, Sendable {
        /// Enter: the line (the buffer is then empty and the line is in the history).
        case submit(String)
        /// Ctrl-C: the line was dropped; carries what it held.
        case cancel(String)
        /// Ctrl-D on an empty line.
        case endOfInput
        /// Ctrl-Z: the caller suspends the process.
        case suspend
        /// Ctrl-L: the caller clears the screen.
        case clearScreen
    }

    public private(set) var characters: [Character] = []
    /// Index into `characters`: a multi-byte or combined character is one step.
    public private(set) var cursor = 0
    /// Oldest first; submitted non-blank lines are appended (no consecutive duplicates).
    public private(set) var history: [String]
    public let historyLimit: Int
    public var text: String { String(characters) }

    /// Which history entry is shown; `history.count` is the line being typed.
    private var historyIndex: Int
    /// The line being typed, kept while browsing the history.
    private var draft: [Character] = []
    private var parser = Parser.ground

    private enum Parser: Equatable {
        case ground
        case escape
        case csi([UInt8])
        case ss3
        case utf8(remaining: Int, value: UInt32, length: Int)
    }

    public init(history: [String] = [], historyLimit: Int = 500) {
        self.historyLimit = max(0, historyLimit)
        self.history = Array(history.suffix(self.historyLimit))
        historyIndex = self.history.count
    }

    /// True while an escape sequence or a UTF-8 character is unfinished.
    public var hasPendingInput: Bool { parser != .ground }

    /// A lone Esc key looks like the start of a sequence; the caller drops it after a pause.
    public mutating func abandonPendingInput() { parser = .ground }

    /// Feeds bytes; returns the events in order. The I/O side feeds one byte at a time so that
    /// bytes after a submit stay unread for the next line.
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> [Event] where Bytes.Element == UInt8 {
        bytes.compactMap { feed(byte: $0) }
    }

    public mutating func feed(byte: UInt8) -> Event? {
        switch parser {
        case .ground:
            return ground(byte)
        case .escape:
            parser = .ground
            switch byte {
            case UInt8(ascii: "["): parser = .csi([])
            case UInt8(ascii: "O"): parser = .ss3
            case UInt8(ascii: "b"): moveWordLeft()
            case UInt8(ascii: "f"): moveWordRight()
            case 0x7f: deleteWordBefore()
            default: break
            }
            return nil
        case .csi(var body):
            // Parameters and intermediates (0x20-0x3F) until a final byte (0x40-0x7E).
            if (0x20...0x3f).contains(byte) && body.count < 16 {
                body.append(byte)
                parser = .csi(body)
                return nil
            }
            parser = .ground
            if (0x40...0x7e).contains(byte) { csi(final: byte, parameters: String(decoding: body, as: UTF8.self)) }
            return nil
        case .ss3:
            parser = .ground
            csi(final: byte, parameters: "")
            return nil
        case .utf8(let remaining, let value, let length):
            guard byte & 0xc0 == 0x80 else {
                parser = .ground
                return feed(byte: byte)
            }
            let value = value << 6 | UInt32(byte & 0x3f)
            if remaining > 1 {
                parser = .utf8(remaining: remaining - 1, value: value, length: length)
                return nil
            }
            parser = .ground
            let smallest: UInt32 = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000
            if value >= smallest, let scalar = Unicode.Scalar(value) { insert(scalar) }
            return nil
        }
    }

    private mutating func ground(_ byte: UInt8) -> Event? {
        switch byte {
        case 0x01: cursor = 0                                     // Ctrl-A
        case 0x02: cursor = max(0, cursor - 1)                    // Ctrl-B
        case 0x03:                                                // Ctrl-C
            let dropped = text
            clearLine()
            return .cancel(dropped)
        case 0x04:                                                // Ctrl-D
            if characters.isEmpty { return .endOfInput }
            if cursor < characters.count { characters.remove(at: cursor) }
        case 0x05: cursor = characters.count                      // Ctrl-E
        case 0x06: cursor = min(characters.count, cursor + 1)     // Ctrl-F
        case 0x08, 0x7f:                                          // Ctrl-H, Backspace
            if cursor > 0 { cursor -= 1; characters.remove(at: cursor) }
        case 0x09: insert(Unicode.Scalar(0x09))                   // Tab: kept as typed
        case 0x0a, 0x0d:                                          // Enter
            let line = text
            addHistory(line)
            clearLine()
            return .submit(line)
        case 0x0b: characters.removeSubrange(cursor...)           // Ctrl-K
        case 0x0c: return .clearScreen                            // Ctrl-L
        case 0x0e: historyStep(+1)                                // Ctrl-N
        case 0x10: historyStep(-1)                                // Ctrl-P
        case 0x15:                                                // Ctrl-U
            characters.removeSubrange(..<cursor)
            cursor = 0
        case 0x17: deleteWordBefore()                             // Ctrl-W
        case 0x1a: return .suspend                                // Ctrl-Z
        case 0x1b: parser = .escape
        case 0x20...0x7e: insert(Unicode.Scalar(byte))
        case 0xc2...0xdf: parser = .utf8(remaining: 1, value: UInt32(byte & 0x1f), length: 2)
        case 0xe0...0xef: parser = .utf8(remaining: 2, value: UInt32(byte & 0x0f), length: 3)
        case 0xf0...0xf4: parser = .utf8(remaining: 3, value: UInt32(byte & 0x07), length: 4)
        default: break                                            // other controls, stray bytes
        }
        return nil
    }

    /// Arrows, Home/End, Delete, Ctrl-arrows (xterm and VT forms; `ESC O x` arrives here too).
    private mutating func csi(final: UInt8, parameters: String) {
        let word = parameters.hasSuffix(";5") || parameters.hasSuffix(";3")   // Ctrl- or Alt-arrow
        switch (final, parameters) {
        case (UInt8(ascii: "A"), _): historyStep(-1)
        case (UInt8(ascii: "B"), _): historyStep(+1)
        case (UInt8(ascii: "C"), _): if word { moveWordRight() } else { cursor = min(characters.count, cursor + 1) }
        case (UInt8(ascii: "D"), _): if word { moveWordLeft() } else { cursor = max(0, cursor - 1) }
        case (UInt8(ascii: "H"), _), (UInt8(ascii: "~"), "1"), (UInt8(ascii: "~"), "7"): cursor = 0
        case (UInt8(ascii: "F"), _), (UInt8(ascii: "~"), "4"), (UInt8(ascii: "~"), "8"): cursor = characters.count
        case (UInt8(ascii: "~"), "3"): if cursor < characters.count { characters.remove(at: cursor) }
        default: break
        }
    }

    /// Inserts at the cursor; a combining mark (or the second half of a flag, a ZWJ sequence)
    /// joins the character before it, so the pair stays one cursor step.
    private mutating func insert(_ scalar: Unicode.Scalar) {
        if cursor > 0 {
            var joined = String(characters[cursor - 1])
            joined.unicodeScalars.append(scalar)
            if joined.count == 1 { characters[cursor - 1] = joined.first!; return }
        }
        characters.insert(Character(scalar), at: cursor)
        cursor += 1
    }

    private mutating func clearLine() {
        characters = []
        cursor = 0
        draft = []
        historyIndex = history.count
    }

    public mutating func addHistory(_ line: String) {
        guard historyLimit > 0, !line.allSatisfy(\.isWhitespace), history.last != line else { return }
        history.append(line)
        if history.count > historyLimit { history.removeFirst(history.count - historyLimit) }
        historyIndex = history.count
    }

    private mutating func historyStep(_ step: Int) {
        let target = historyIndex + step
        guard target >= 0, target <= history.count, target != historyIndex else { return }
        if historyIndex == history.count { draft = characters }
        historyIndex = target
        characters = target == history.count ? draft : Array(history[target])
        cursor = characters.count
    }

    private mutating func deleteWordBefore() {
        let end = cursor
        moveWordLeft()
        characters.removeSubrange(cursor..<end)
    }

    private mutating func moveWordLeft() {
        while cursor > 0 && characters[cursor - 1].isWhitespace { cursor -= 1 }
        while cursor > 0 && !characters[cursor - 1].isWhitespace { cursor -= 1 }
    }

    private mutating func moveWordRight() {
        while cursor < characters.count && characters[cursor].isWhitespace { cursor += 1 }
        while cursor < characters.count && !characters[cursor].isWhitespace { cursor += 1 }
    }
}

extension LineEditState {
    /// Terminal columns a character takes: 2 for East Asian wide and emoji, 1 otherwise
    /// (controls are drawn as one column: a tab as a space).
    public static func columns(of character: Character) -> Int {
        guard let scalar = character.unicodeScalars.first else { return 0 }
        if scalar.properties.isEmojiPresentation { return 2 }
        switch scalar.value {
        case 0x1100...0x115f, 0x2e80...0x303e, 0x3041...0x33ff, 0x3400...0x4dbf, 0x4e00...0x9fff,
             0xa000...0xa4cf, 0xac00...0xd7a3, 0xf900...0xfaff, 0xfe30...0xfe4f, 0xff00...0xff60,
             0xffe0...0xffe6, 0x1f300...0x1f64f, 0x1f900...0x1f9ff, 0x20000...0x3fffd:
            return 2
        default:
            return 1
        }
    }

    /// The slice of the line to draw after a prompt `promptColumns` wide on a terminal `columns`
    /// wide, scrolled so the cursor is visible (the last column stays free so the terminal never
    /// wraps), and the cursor's column.
    public func layout(promptColumns: Int, columns: Int) -> (text: String, cursorColumn: Int) {
        let room = max(1, columns - promptColumns - 1)
        let widths = characters.map(Self.columns(of:))
        var start = 0
        var beforeCursor = widths[..<cursor].reduce(0, +)
        while start < cursor && beforeCursor >= room { beforeCursor -= widths[start]; start += 1 }
        var end = start
        var used = 0
        while end < characters.count && used + widths[end] <= room { used += widths[end]; end += 1 }
        let shown = characters[start..<end].map { $0.isASCII && $0.asciiValue! < 0x20 ? " " : $0 }
        return (String(shown), promptColumns + beforeCursor)
    }
}
