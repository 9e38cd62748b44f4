#if canImport(Darwin)
import Darwin
#else
import Glibc
#endif
import Foundation
import Synchronization

/// The terminal side of the line editor: raw mode while a line is read (cooked otherwise, so a
/// reply streams normally and Ctrl-C during it is a signal), keys through `LineEditState`, a
/// one-line redraw that scrolls sideways, and history kept in a file.
final class LineEditor {
    enum Input: Equatable {
        case line(String)
        /// Ctrl-C at the prompt; carries the text that was dropped.
        case cancelled(String)
        case endOfInput
    }

    let prompt: String
    private var state: LineEditState
    private let historyFile: URL?
    /// Bytes read but not yet fed (a paste of several lines is read at once).
    private var unread: [UInt8] = []
    private var unreadStart = 0

    /// Nil unless stdin and stdout are both terminals: then the caller reads plain lines.
    init?(prompt: String, historyFile: URL?, historyLimit: Int = 500) {
        guard isatty(STDIN_FILENO) == 1, isatty(STDOUT_FILENO) == 1,
              tcgetattr(STDIN_FILENO, &cookedSettings) == 0 else { return nil }
        self.prompt = prompt
        self.historyFile = historyFile
        let saved = historyFile.flatMap { try? String(contentsOf: $0, encoding: .utf8) }
        state = LineEditState(history: saved.map { $0.split(separator: "\n").map(String.init) } ?? [], historyLimit: historyLimit)
        Self.installRestoringHandlers()
    }

    deinit { leaveRawMode() }

    /// Reads one line with editing. Returns on Enter, Ctrl-C, or Ctrl-D on an empty line.
    func read() -> Input {
        enterRawMode()
        defer { leaveRawMode() }
        redraw()
        while true {
            if unreadStart == unread.count {
                // A lone Esc waits for a sequence that never comes: drop it after a pause.
                if state.hasPendingInput && !inputArrives(withinMilliseconds: 100) {
                    state.abandonPendingInput()
                    continue
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = systemRead(STDIN_FILENO, &chunk, chunk.count)
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { write("\r\n"); return .endOfInput }
                unread = Array(chunk[..<count])
                unreadStart = 0
            }
            let byte = unread[unreadStart]
            unreadStart += 1
            // The line as it was before Enter or Ctrl-C, cursor at its end (a paste ending in Enter
            // was never drawn; "^C" must not cover text).
            var shown = state
            _ = shown.feed(byte: 0x05)
            switch state.feed(byte: byte) {
            case .submit(let line)?:
                redraw(shown)
                write("\r\n")
                saveHistory()
                return .line(line)
            case .cancel(let dropped)?:
                redraw(shown)
                write("^C\r\n")
                return .cancelled(dropped)
            case .endOfInput?:
                write("\r\n")
                return .endOfInput
            case .suspend?:
                leaveRawMode()
                write("\r\n")
                kill(getpid(), SIGTSTP)
                enterRawMode()
            case .clearScreen?:
                write("\u{1b}[H\u{1b}[2J")
            case nil:
                break
            }
            // One redraw per chunk read, not per byte of a paste.
            if unreadStart == unread.count { redraw() }
        }
    }

    private func redraw() { redraw(state) }

    private func redraw(_ state: LineEditState) {
        let promptColumns = prompt.reduce(0) { $0 + LineEditState.columns(of: $1) }
        let (text, column) = state.layout(promptColumns: promptColumns, columns: terminalColumns())
        // Start of line, prompt and text, erase the rest, cursor to its column.
        var out = "\r" + prompt + text + "\u{1b}[K\r"
        if column > 0 { out += "\u{1b}[\(column)C" }
        write(out)
    }

    private func terminalColumns() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 { return Int(size.ws_col) }
        return 80
    }

    private func inputArrives(withinMilliseconds timeout: Int32) -> Bool {
        var descriptor = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, timeout) > 0
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { systemWrite(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }
            bytes = bytes.dropFirst(written)
        }
    }

    /// The whole (bounded) history, rewritten after each line: private, since it holds the chat.
    private func saveHistory() {
        guard let historyFile else { return }
        let folder = historyFile.deletingLastPathComponent()
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let text = state.history.joined(separator: "\n") + "\n"
        // History is a convenience: a read-only home is not an error.
        _ = FileManager.default.createFile(atPath: historyFile.path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
    }

    // MARK: raw mode

    private func enterRawMode() {
        var raw = cookedSettings
        // No echo, bytes as typed, Ctrl-C/Z/S/Q/V as bytes, CR not turned into NL.
        raw.c_iflag &= ~tcflag_t(BRKINT | ICRNL | INPCK | ISTRIP | IXON)
        raw.c_cflag |= tcflag_t(CS8)
        raw.c_lflag &= ~tcflag_t(ECHO | ICANON | IEXTEN | ISIG)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        // TCSADRAIN, not FLUSH: what was typed during the reply stays to be read.
        if tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) == 0 { rawModeActive.store(true, ordering: .sequentiallyConsistent) }
    }

    private func leaveRawMode() {
        guard rawModeActive.exchange(false, ordering: .sequentiallyConsistent) else { return }
        tcsetattr(STDIN_FILENO, TCSADRAIN, &cookedSettings)
    }

    /// A signal that ends the process while the terminal is raw first gives the terminal back.
    private static func installRestoringHandlers() {
        guard !handlersInstalled.exchange(true, ordering: .sequentiallyConsistent) else { return }
        for signo in [SIGTERM, SIGHUP, SIGQUIT, SIGABRT] { setSignalHandler(signo, restoreTerminalAndReraise) }
        atexit { if rawModeActive.load(ordering: .sequentiallyConsistent) { tcsetattr(STDIN_FILENO, TCSANOW, &cookedSettings) } }
    }
}

#if canImport(Darwin)
private let systemRead = Darwin.read
private let systemWrite = Darwin.write
#else
private let systemRead = Glibc.read
private let systemWrite = Glibc.write
#endif

/// The terminal's settings before raw mode, reachable from signal handlers.
nonisolated(unsafe) private var cookedSettings = termios()
private let rawModeActive = Atomic<Bool>(false)
private let handlersInstalled = Atomic<Bool>(false)

private func restoreTerminalAndReraise(_ signo: Int32) {
    if rawModeActive.load(ordering: .sequentiallyConsistent) { tcsetattr(STDIN_FILENO, TCSANOW, &cookedSettings) }
    signal(signo, SIG_DFL)
    raise(signo)
}

/// `sigaction` with SA_RESTART, so an interrupted read or write carries on.
func setSignalHandler(_ signo: Int32, _ handler: @escaping @convention(c) (Int32) -> Void) {
    var action = sigaction()
    #if canImport(Darwin)
    action.__sigaction_u = __sigaction_u(__sa_handler: handler)
    #else
    action.__sigaction_handler = .init(sa_handler: handler)
    #endif
    sigemptyset(&action.sa_mask)
    action.sa_flags = SA_RESTART
    sigaction(signo, &action, nil)
}
