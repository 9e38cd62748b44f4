#if canImport(Darwin)
import Darwin
#else
import Glibc
#endif
import Synchronization

/// Ctrl-C while a reply streams stops that reply, not the program: SIGINT only sets a flag that
/// the token callback polls between tokens. A second SIGINT before the first was seen (the
/// program is stuck, e.g. in a long prefill) takes the default action and ends the process.
enum ReplyInterrupt {
    static func install() {
        setSignalHandler(SIGINT, onInterrupt)
    }

    /// Whether Ctrl-C came since the last `clear()`.
    static var requested: Bool { interruptFlag.load(ordering: .sequentiallyConsistent) }

    static func clear() { interruptFlag.store(false, ordering: .sequentiallyConsistent) }
}

private let interruptFlag = Atomic<Bool>(false)

private func onInterrupt(_ signo: Int32) {
    if interruptFlag.exchange(true, ordering: .sequentiallyConsistent) {
        signal(signo, SIG_DFL)
        raise(signo)
    }
}
