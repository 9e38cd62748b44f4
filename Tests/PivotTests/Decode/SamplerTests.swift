import XCTest
import Pivot

final class SamplerTests: XCTestCase {
    let logits: [Float] = [0.1, 2.0, -1.0, 1.9, 0.5, 3.0, 2.9, -4.0]

    func sample(_ sampler: inout Sampler) -> Int { logits.withUnsafeBufferPointer { sampler.sample($0.baseAddress!, count: $0.count) } }

    func testGreedyTopKOneAndTinyTopPPickTheArgmax() {
        var greedy = Sampler(temperature: 0)
        var topOne = Sampler(temperature: 1.5, topK: 1, seed: 9)
        var nucleus = Sampler(temperature: 1, topK: 0, topP: 0.01, seed: 9)
        for _ in 0..<20 {
            XCTAssertEqual(sample(&greedy), 5)
            XCTAssertEqual(sample(&topOne), 5)
            XCTAssertEqual(sample(&nucleus), 5)
        }
    }

    func testTopKLimitsCandidatesAndSeedReproduces() {
        var a = Sampler(temperature: 1, topK: 3, topP: 1, seed: 42)
        var b = Sampler(temperature: 1, topK: 3, topP: 1, seed: 42)
        var seen = Set<Int>()
        var first: [Int] = []
        for _ in 0..<400 {
            let x = sample(&a)
            first.append(x)
            seen.insert(x)
            XCTAssertEqual(sample(&b), x, "same seed, same sequence")
        }
        XCTAssertEqual(seen, [5, 6, 1], "only the three largest logits are drawn")
        // Frequencies follow softmax over the kept logits: p(5) = e^3 / (e^3 + e^2.9 + e^2) ≈ 0.43.
        let share = Double(first.filter { $0 == 5 }.count) / 400
        XCTAssertEqual(share, 0.43, accuracy: 0.08)
    }
}
