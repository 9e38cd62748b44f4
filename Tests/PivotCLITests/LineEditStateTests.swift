import XCTest
import PivotCLI

/// The chat line editor's keys, fed as the bytes a terminal sends.
final class LineEditStateTests: XCTestCase {
    private let left: [UInt8] = [0x1b, 0x5b, 0x44]
    private let right: [UInt8] = [0x1b, 0x5b, 0x43]
    private let up: [UInt8] = [0x1b, 0x5b, 0x41]
    private let down: [UInt8] = [0x1b, 0x5b, 0x42]

    private func typed(_ text: String) -> [UInt8] { Array(text.utf8) }

    func testTypingAndArrowsInsertAtTheCursor() {
        var state = LineEditState()
        XCTAssertEqual(state.feed(typed("helo") + left + typed("l")), [])
        XCTAssertEqual(state.text, "hello")
        XCTAssertEqual(state.cursor, 4)
        _ = state.feed(right + right)  // the second one stops at the end
        XCTAssertEqual(state.cursor, 5)
        _ = state.feed([0x01] + typed(">") + [0x05] + typed("!"))  // Ctrl-A, Ctrl-E
        XCTAssertEqual(state.text, ">hello!")
        _ = state.feed([0x1b, 0x5b, 0x48] + right + [0x1b, 0x5b, 0x33, 0x7e])  // Home, Right, Delete
        XCTAssertEqual(state.text, ">ello!")
        XCTAssertEqual(state.feed([0x0d]), [.submit(">ello!")])
        XCTAssertEqual(state.text, "")
        XCTAssertEqual(state.cursor, 0)
    }

    func testMultiByteCharactersAreOneStep() {
        var state = LineEditState()
        _ = state.feed(typed("aé€😀b"))
        XCTAssertEqual(state.characters.count, 5)
        _ = state.feed(left + [0x7f])  // Backspace removes the 4-byte emoji whole
        XCTAssertEqual(state.text, "aé€b")
        XCTAssertEqual(state.cursor, 3)
        _ = state.feed([0x7f, 0x7f])
        XCTAssertEqual(state.text, "ab")
        // A combining accent joins the letter before it: one character, one Backspace.
        _ = state.feed(typed("e\u{301}"))
        XCTAssertEqual(state.characters.count, 3)
        _ = state.feed([0x7f])
        XCTAssertEqual(state.text, "ab")
    }

    func testSequencesSplitAcrossReads() {
        var state = LineEditState()
        _ = state.feed(typed("xy"))
        _ = state.feed([0x1b])
        XCTAssertTrue(state.hasPendingInput)
        _ = state.feed([0x5b])
        _ = state.feed([0x44])  // ESC [ D in three reads: one Left
        XCTAssertFalse(state.hasPendingInput)
        XCTAssertEqual(state.cursor, 1)
        let euro = Array("€".utf8)
        _ = state.feed(euro.prefix(1))
        XCTAssertEqual(state.text, "xy")
        _ = state.feed(euro.dropFirst())
        XCTAssertEqual(state.text, "x€y")
        // Ctrl-Right as xterm sends it (ESC [ 1 ; 5 C), split mid-parameters.
        _ = state.feed([0x01, 0x1b, 0x5b, 0x31])
        _ = state.feed([0x3b, 0x35, 0x43])
        XCTAssertEqual(state.cursor, 3)
        // A lone Esc the caller gives up on leaves the next key alone.
        _ = state.feed([0x1b])
        state.abandonPendingInput()
        _ = state.feed(typed("b"))
        XCTAssertEqual(state.text, "x€yb")
    }

    func testKillKeys() {
        var state = LineEditState()
        _ = state.feed(typed("one two  three") + left + left)
        _ = state.feed([0x0b])  // Ctrl-K
        XCTAssertEqual(state.text, "one two  thr")
        _ = state.feed([0x17])  // Ctrl-W: the word before the cursor
        XCTAssertEqual(state.text, "one two  ")
        _ = state.feed([0x17])  // spaces, then the word before them
        XCTAssertEqual(state.text, "one ")
        _ = state.feed(typed("six") + left)
        _ = state.feed([0x15])  // Ctrl-U
        XCTAssertEqual(state.text, "x")
        XCTAssertEqual(state.cursor, 0)
    }

    func testHistoryUpAndDownKeepsTheDraft() {
        var state = LineEditState(history: ["first"])
        XCTAssertEqual(state.feed(typed("second\r")), [.submit("second")])
        _ = state.feed(typed("   \r") + typed("second\r"))  // blank lines and repeats are not kept
        XCTAssertEqual(state.history, ["first", "second"])
        _ = state.feed(typed("draft") + up)
        XCTAssertEqual(state.text, "second")
        XCTAssertEqual(state.cursor, 6)
        _ = state.feed(up + up)  // stops at the oldest
        XCTAssertEqual(state.text, "first")
        _ = state.feed(down)
        XCTAssertEqual(state.text, "second")
        _ = state.feed(down)
        XCTAssertEqual(state.text, "draft")
        _ = state.feed([0x10])  // Ctrl-P
        XCTAssertEqual(state.feed(typed("!\n")), [.submit("second!")])
        XCTAssertEqual(state.history, ["first", "second", "second!"])
    }

    func testHistoryIsBounded() {
        var state = LineEditState(history: ["a", "b", "c"], historyLimit: 2)
        XCTAssertEqual(state.history, ["b", "c"])
        _ = state.feed(typed("d\r"))
        XCTAssertEqual(state.history, ["c", "d"])
    }

    func testControlKeyEvents() {
        var state = LineEditState()
        XCTAssertEqual(state.feed([0x04]), [.endOfInput])  // Ctrl-D on an empty line
        _ = state.feed(typed("ab") + left)
        XCTAssertEqual(state.feed([0x04]), [])  // elsewhere it deletes under the cursor
        XCTAssertEqual(state.text, "a")
        XCTAssertEqual(state.feed([0x03]), [.cancel("a")])  // Ctrl-C drops the line
        XCTAssertEqual(state.text, "")
        XCTAssertEqual(state.feed([0x03]), [.cancel("")])
        XCTAssertEqual(state.feed(typed("a\rb\r")), [.submit("a"), .submit("b")])  // a pasted pair of lines
    }

    func testLayoutScrollsToTheCursor() {
        var state = LineEditState()
        _ = state.feed(typed("abcdefghij"))
        // "> " then 7 columns of room (the last column stays free).
        var layout = state.layout(promptColumns: 2, columns: 10)
        XCTAssertEqual(layout.text, "efghij")
        XCTAssertEqual(layout.cursorColumn, 8)
        _ = state.feed([0x01])
        layout = state.layout(promptColumns: 2, columns: 10)
        XCTAssertEqual(layout.text, "abcdefg")
        XCTAssertEqual(layout.cursorColumn, 2)
        var wide = LineEditState()
        _ = wide.feed(typed("日本\t"))
        layout = wide.layout(promptColumns: 2, columns: 80)
        XCTAssertEqual(layout.text, "日本 ")
        XCTAssertEqual(layout.cursorColumn, 7)
    }

    func testChatCommands() {
        XCTAssertEqual(ChatCommand.parse("  /help "), .help)
        XCTAssertEqual(ChatCommand.parse("/RESET"), .reset)
        XCTAssertEqual(ChatCommand.parse("/quit"), .exit)
        XCTAssertEqual(ChatCommand.parse("/exit now"), .exit)
        XCTAssertEqual(ChatCommand.parse("/frobnicate x"), .unknown("/frobnicate"))
        XCTAssertEqual(ChatCommand.parse("//help"), .message("/help"))
        XCTAssertEqual(ChatCommand.parse("/usr/bin is a folder?"), .message("/usr/bin is a folder?"))
        XCTAssertEqual(ChatCommand.parse("Hi"), .message("Hi"))
        XCTAssertEqual(ChatCommand.parse("   "), .empty)
    }
}
