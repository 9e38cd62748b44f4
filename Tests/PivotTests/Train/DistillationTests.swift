import XCTest
import Pivot
import PivotKernels

/// The distillation losses' logit gradients against finite differences (forward KL on a top-k at a
/// temperature with a cross-entropy mix, reverse KL), and the top-k selection.
final class DistillationTests: XCTestCase {
    let V = 40

    func objective(_ settings: DistillationSettings, teacher: [Float]) -> DistillationObjective {
        let lse = teacher.map { $0 / settings.temperature }.withUnsafeBufferPointer { logSumExp($0.baseAddress!, count: V) }
        let logp = teacher.map { $0 / settings.temperature - lse }
        let top = TeacherSource.topIndices(teacher.map { $0 / settings.temperature }, settings.topK)
        let full = FloatBuffer(count: V)
        for j in 0..<V { full.pointer[j] = logp[j] }
        return DistillationObjective(settings: settings, indices: top.map(Int32.init), logProbabilities: top.map { logp[$0] },
                                     full: settings.divergence == .reverse ? full : nil, targets: [7])
    }

    func check(_ settings: DistillationSettings) {
        var g = SplitMix64(seed: 12)
        let teacher = (0..<V).map { _ in Float.random(in: -3...3, using: &g) }
        let student = (0..<V).map { _ in Float.random(in: -3...3, using: &g) }
        let o = objective(settings, teacher: teacher)
        func loss(_ z: [Float]) -> Double { var z = z; return Double(z.withUnsafeMutableBufferPointer { o.loss(row: 0, logits: $0.baseAddress!, vocabulary: V) }) }
        var gradient = student
        _ = gradient.withUnsafeMutableBufferPointer { o.loss(row: 0, logits: $0.baseAddress!, vocabulary: V) }
        XCTAssertGreaterThan(loss(student), 0)
        for j in 0..<V {
            var plus = student, minus = student
            plus[j] += 1e-2; minus[j] -= 1e-2
            let numeric = (loss(plus) - loss(minus)) / 2e-2
            XCTAssertEqual(Double(gradient[j]), numeric, accuracy: 2e-3 + 0.02 * abs(numeric), "\(settings) logit \(j)")
        }
        // At the teacher's own logits the (full) divergence vanishes.
        if settings.crossEntropyWeight == 0 && (settings.divergence == .reverse || settings.topK == V) {
            XCTAssertEqual(loss(teacher), 0, accuracy: 1e-5)
        }
    }

    func testForwardKLOnTopKWithTemperatureAndCrossEntropy() {
        check(DistillationSettings(topK: 8, temperature: 2, crossEntropyWeight: 0.3))
        check(DistillationSettings(topK: V, temperature: 1))
    }

    func testReverseKL() {
        check(DistillationSettings(topK: 8, temperature: 1.5, divergence: .reverse))
        check(DistillationSettings(topK: 8, temperature: 2, crossEntropyWeight: 0.4, divergence: .reverse))
    }

    func testTopIndicesAreTheLargestInOrder() {
        let x: [Float] = [0.1, 5, -2, 3, 3.5, 9, 0]
        XCTAssertEqual(TeacherSource.topIndices(x, 3), [5, 1, 4])
        XCTAssertEqual(TeacherSource.topIndices(x, 7).count, 7)
    }
}
