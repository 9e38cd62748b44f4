import XCTest
import PivotKernels

/// `setLevel` writes exactly one weight's code: after writing level l into element c of a real
/// block, only element c changes and it decodes to origin + l·step.
final class BlockLevelTests: XCTestCase {
    func testEveryElementTakesEveryLevelAndNothingElseMoves() {
        for format in BlockFormat.allCases {
            let n = format.elementsPerBlock
            let x = KQuantizeTests.gaussianRow(n, seed: 31)
            var block = [UInt8](repeating: 0, count: format.bytesPerBlock)
            x.withUnsafeBufferPointer { xs in block.withUnsafeMutableBytes { format.quantizeRow(xs.baseAddress!, count: n, into: $0.baseAddress!, importance: nil) } }
            var origin = [Float](repeating: 0, count: n), step = origin
            block.withUnsafeBytes { b in
                origin.withUnsafeMutableBufferPointer { o in step.withUnsafeMutableBufferPointer { format.levelGrid(b.baseAddress!, origin: o.baseAddress!, step: $0.baseAddress!) } }
            }
            func decode(_ bytes: [UInt8]) -> [Float] {
                var out = [Float](repeating: 0, count: n)
                bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { format.dequantizeRow(b.baseAddress!, count: n, into: $0.baseAddress!) } }
                return out
            }
            let before = decode(block)
            var g = SplitMix64(seed: 7)
            for c in stride(from: 0, to: n, by: format.isKQuant ? 5 : 1) {
                for level in [0, format.levels - 1, Int.random(in: 0..<format.levels, using: &g)] {
                    var copy = block
                    copy.withUnsafeMutableBytes { format.setLevel($0.baseAddress!, c, level) }
                    let after = decode(copy)
                    XCTAssertEqual(after[c], origin[c] + Float(level) * step[c], accuracy: 1e-5 * max(1, abs(after[c])), "\(format) element \(c) level \(level)")
                    for i in 0..<n where i != c { XCTAssertEqual(after[i], before[i], "\(format): writing element \(c) moved element \(i)") }
                }
            }
            // The quantizer's own codes are levels of this grid.
            for c in 0..<n where step[c] != 0 {
                let level = (before[c] - origin[c]) / step[c]
                XCTAssertEqual(level, level.rounded(), accuracy: 1e-3, "\(format) element \(c)")
            }
        }
    }
}
