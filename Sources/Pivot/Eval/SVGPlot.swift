import Foundation

/// Small, dependency-free SVG charts for reports: lines over numeric axes and heat maps.
public enum SVGPlot {
    public struct Point: Sendable { public var x, y: Double; public var label: String
        public init(x: Double, y: Double, label: String) { self.x = x; self.y = y; self.label = label }
    }
    public struct Series: Sendable { public var name: String; public var points: [Point]
        public init(name: String, points: [Point]) { self.name = name; self.points = points }
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// About five round tick values covering lo...hi.
    static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let span = max(hi - lo, 1e-12)
        let raw = span / 5, magnitude = pow(10, floor(log10(raw)))
        let step = [1, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var values: [Double] = []
        var v = ceil(lo / step - 1e-9) * step
        while v <= hi + step * 1e-9 { values.append(v); v += step }
        return values
    }

    static func format(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 100 || v == v.rounded() { return String(format: "%.0f", v) }
        if abs(v) >= 1 { return String(format: "%.1f", v) }
        return String(format: "%.3g", v)
    }

    /// Lines through each series' points (sorted by x) with markers, axes, grid and a legend at the right.
    /// `logX` draws x on a log₂ scale with ticks at the data's own x values (bit widths 4…32);
    /// `logY` draws y on a log₁₀ scale (KL divergences spanning decades). Points of the first
    /// series carry their labels (configuration names).
    public static func lines(title: String, xLabel: String, yLabel: String, series: [Series],
                             logX: Bool = false, logY: Bool = false) -> String {
        let width = 760.0, height = 440.0, left = 70.0, right = 190.0, top = 44.0, bottom = 60.0
        let plotW = width - left - right, plotH = height - top - bottom
        let all = series.flatMap(\.points)
        let fx: (Double) -> Double = logX ? { log2($0) } : { $0 }
        let fy: (Double) -> Double = logY ? { log10($0) } : { $0 }
        var xLo = all.map { fx($0.x) }.min() ?? 0, xHi = all.map { fx($0.x) }.max() ?? 1
        var yLo = all.map { fy($0.y) }.min() ?? 0, yHi = all.map { fy($0.y) }.max() ?? 1
        if xHi - xLo < 1e-9 { xLo -= 0.5; xHi += 0.5 }
        if yHi - yLo < 1e-9 { yLo -= max(0.5, abs(yLo) * 0.1); yHi += max(0.5, abs(yHi) * 0.1) }
        let yPad = (yHi - yLo) * 0.08, xPad = (xHi - xLo) * 0.05
        xLo -= xPad; xHi += xPad; yLo -= yPad; yHi += yPad
        func px(_ x: Double) -> Double { left + (fx(x) - xLo) / (xHi - xLo) * plotW }
        func py(_ y: Double) -> Double { top + (1 - (fy(y) - yLo) / (yHi - yLo)) * plotH }
        let xTicks = logX ? Array(Set(all.map(\.x))).sorted() : ticks(xLo, xHi)
        let yTicks = logY ? stride(from: floor(yLo), through: ceil(yHi), by: 1).map { pow(10, $0) }.filter { fy($0) >= yLo && fy($0) <= yHi }
                          : ticks(yLo, yHi)
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left + plotW / 2)" y="26" text-anchor="middle" font-size="17" font-weight="bold">\(escape(title))</text>

        """
        for t in xTicks {
            s += "<line x1=\"\(px(t))\" y1=\"\(top)\" x2=\"\(px(t))\" y2=\"\(top + plotH)\" stroke=\"#e5e5e5\"/>"
            s += "<text x=\"\(px(t))\" y=\"\(top + plotH + 18)\" text-anchor=\"middle\" font-size=\"12\">\(format(t))</text>\n"
        }
        for t in yTicks {
            s += "<line x1=\"\(left)\" y1=\"\(py(t))\" x2=\"\(left + plotW)\" y2=\"\(py(t))\" stroke=\"#e5e5e5\"/>"
            s += "<text x=\"\(left - 8)\" y=\"\(py(t) + 4)\" text-anchor=\"end\" font-size=\"12\">\(format(t))</text>\n"
        }
        s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotW)\" height=\"\(plotH)\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 16)\" text-anchor=\"middle\" font-size=\"14\">\(escape(xLabel))</text>\n"
        s += "<text transform=\"translate(20 \(top + plotH / 2)) rotate(-90)\" text-anchor=\"middle\" font-size=\"14\">\(escape(yLabel))</text>\n"
        for (i, series) in series.enumerated() {
            let color = palette[i % palette.count]
            let points = series.points.sorted { $0.x < $1.x }
            if points.count > 1 {
                s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points.map { "\(px($0.x)),\(py($0.y))" }.joined(separator: " "))\"/>\n"
            }
            for p in points {
                s += "<circle cx=\"\(px(p.x))\" cy=\"\(py(p.y))\" r=\"4.5\" fill=\"\(color)\"><title>\(escape(series.name)) · \(escape(p.label)): \(format(p.y))</title></circle>\n"
                if i == 0 {
                    // Labels near the right edge end at their point instead of running into the legend.
                    let nearEdge = px(p.x) > left + plotW - 70
                    s += "<text x=\"\(px(p.x) + (nearEdge ? -7 : 7))\" y=\"\(py(p.y) - 8)\" font-size=\"11\" fill=\"#444\""
                        + (nearEdge ? " text-anchor=\"end\"" : "") + ">\(escape(p.label))</text>\n"
                }
            }
            let ly = top + 10 + Double(i) * 22
            s += "<line x1=\"\(left + plotW + 16)\" y1=\"\(ly)\" x2=\"\(left + plotW + 40)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"3\"/>"
            s += "<text x=\"\(left + plotW + 46)\" y=\"\(ly + 4)\" font-size=\"13\">\(escape(series.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// A grid of values in 0...1, white → dark green, each cell printed as a percentage.
    /// `cell`: side of a cell in pixels; below 40 the percentages are left out (the colour carries them).
    public static func heatMap(title: String, rowTitle: String, columnTitle: String, rows: [String], columns: [String], values: [[Double]],
                               cell: Double = 64) -> String {
        let left = 110.0, top = 70.0
        // Wide enough for the title (about 9 px per character at 16 px bold).
        let width = max(left + cell * Double(columns.count) + 30, Double(title.count) * 9.5 + 40)
        let height = top + cell * Double(rows.count) + 50
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="24" text-anchor="middle" font-size="16" font-weight="bold">\(escape(title))</text>
        <text x="\(left + cell * Double(columns.count) / 2)" y="48" text-anchor="middle" font-size="13">\(escape(columnTitle))</text>
        <text transform="translate(18 \(top + cell * Double(rows.count) / 2)) rotate(-90)" text-anchor="middle" font-size="13">\(escape(rowTitle))</text>

        """
        for (j, c) in columns.enumerated() {
            s += "<text x=\"\(left + cell * (Double(j) + 0.5))\" y=\"\(top - 6)\" text-anchor=\"middle\" font-size=\"12\">\(escape(c))</text>\n"
        }
        for (i, r) in rows.enumerated() {
            let y = top + cell * Double(i)
            s += "<text x=\"\(left - 8)\" y=\"\(y + cell / 2 + 4)\" text-anchor=\"end\" font-size=\"12\">\(escape(r))</text>\n"
            for (j, v) in values[i].enumerated() {
                let t = max(0, min(1, v))
                let (r0, g0, b0) = (255.0 - 235 * t, 255.0 - 135 * t, 255.0 - 195 * t)
                let x = left + cell * Double(j)
                s += "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(cell)\" height=\"\(cell)\" fill=\"rgb(\(Int(r0)),\(Int(g0)),\(Int(b0)))\" stroke=\"#bbb\"/>"
                s += cell < 40 ? "\n" : "<text x=\"\(x + cell / 2)\" y=\"\(y + cell / 2 + 5)\" text-anchor=\"middle\" font-size=\"13\" fill=\"\(t > 0.55 ? "white" : "black")\">\(Int((v * 100).rounded()))%</text>\n"
            }
        }
        return s + "</svg>\n"
    }
}
