import Foundation

/// A one-line progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise).
final class ProgressBar {
    let total: Int
    let label: String
    let start = Date()
    let interactive = isatty(2) != 0
    var lastDecile = -1

    init(total: Int, label: String) { self.total = max(1, total); self.label = label }

    func update(_ done: Int, suffix: String = "") {
        let fraction = min(1, max(0, Double(done) / Double(total)))
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        // Under a second in, a rate and an ETA are noise (the first item alone read as 10⁵ it/s).
        let timing = elapsed < 1 ? String(format: "– it/s, %.0fs, ETA –", elapsed)
            : String(format: "%.1f it/s, %.0fs, ETA %.0fs", Double(done) / elapsed, elapsed, eta)
        let line = String(format: "%@ %@ %d/%d %3.0f%% %@ [%@]", label, bar, done, total, fraction * 100, suffix, timing)
        if interactive {
            writeErr("\r" + line + "\u{1B}[K")
        } else if Int(fraction * 10) != lastDecile {
            lastDecile = Int(fraction * 10)
            writeErr(line + "\n")
        }
    }

    func finish() { if interactive { writeErr("\n") } }
}
