import XCTest
import Pivot
import PivotKernels

/// The allocation is exact: it equals a brute-force search over every combination, never passes
/// the budget, and refuses a budget below the smallest choices.
final class MixedPrecisionTests: XCTestCase {
    func testAllocationEqualsBruteForceAndMeetsTheBudget() {
        var g = SplitMix64(seed: 12)
        for trial in 0..<40 {
            let items = (0..<6).map { i in
                MixedPrecision.Item(name: "t\(i)", options: (0..<Int.random(in: 2...4, using: &g)).map { _ in
                    .init(format: .q4_0, bytes: 6 * Int.random(in: 1...40, using: &g), cost: Double.random(in: 0...10, using: &g))
                })
            }
            let budget = Int.random(in: 40...600, using: &g)
            // Brute force over every combination.
            var bestCost = Double.infinity
            func search(_ i: Int, _ bytes: Int, _ cost: Double) {
                if bytes > budget { return }
                if i == items.count { bestCost = min(bestCost, cost); return }
                for o in items[i].options { search(i + 1, bytes + o.bytes, cost + o.cost) }
            }
            search(0, 0, 0)
            let picks = MixedPrecision.allocate(items, budget: budget)
            if bestCost == .infinity { XCTAssertNil(picks, "trial \(trial)"); continue }
            let chosen = zip(items, picks!).map { $0.options[$1] }
            XCTAssertLessThanOrEqual(chosen.reduce(0) { $0 + $1.bytes }, budget, "trial \(trial)")
            XCTAssertEqual(chosen.reduce(0) { $0 + $1.cost }, bestCost, accuracy: 1e-9, "trial \(trial)")
        }
    }

    /// Extension types join only when no standard assignment fits, even where they would cost less.
    func testExtensionTypesOnlyWhenStandardTypesCannotFit() throws {
        let items = (0..<3).map { i in
            MixedPrecision.Item(name: "t\(i)", options: [.init(format: .q4_0, bytes: 100, cost: 1), .init(format: .q2_g64, bytes: 50, cost: 0.5)])
        }
        let standard = try XCTUnwrap(MixedPrecision.allocateStandardFirst(items, budget: 300, extensions: true))
        XCTAssertEqual(zip(standard.items, standard.picks).map { $0.options[$1].format }, [.q4_0, .q4_0, .q4_0])
        let mixed = try XCTUnwrap(MixedPrecision.allocateStandardFirst(items, budget: 299, extensions: true))
        let formats = zip(mixed.items, mixed.picks).map { $0.options[$1].format }
        XCTAssertEqual(formats.filter { $0 == .q2_g64 }.count, 3, "below the standard minimum the cheaper-cost extension type wins everywhere it fits")
        XCTAssertNil(MixedPrecision.allocateStandardFirst(items, budget: 299, extensions: false), "--standard-only: no file fits")
        XCTAssertNil(MixedPrecision.allocateStandardFirst(items, budget: 149, extensions: true))
    }

    /// Group-wise types whose group does not divide a row fall back to the same bits in a smaller group.
    func testGroupwiseFallbackKeepsTheBits() {
        XCTAssertEqual(QuantizeFileType.fallback(.q2_g128, columns: 576), .q2_g64)
        XCTAssertEqual(QuantizeFileType.fallback(.q3_g128, columns: 1536), .q3_g128)
        XCTAssertEqual(QuantizeFileType.fallback(.q4_g64, columns: 96), .q4_1)
        XCTAssertEqual(QuantizeFileType.fallback(.q2_g64, columns: 96), .q2_g32)
    }

    /// On the real model, standard types cannot go below ≈4.03 bits per projection weight (Q4_0 on the
    /// 576-wide rows, Q2_K on ffn_down); the group-wise types reach 2.44. Checked before any calibration.
    func testBudgetsBelowEveryAllocationFailBeforeCalibration() throws {
        let gguf = try GGUFFile(path: try Shared.requireModelPath())
        let type = try XCTUnwrap(QuantizeFileType.named("Q3_K_M"))
        XCTAssertThrowsError(try MixedPrecision.checkReachable(gguf, fileType: type, bitsPerWeight: 4.0, scope: .projections)) { error in
            XCTAssertTrue("\(error)".contains("4.031"), "\(error)")
        }
        XCTAssertNoThrow(try MixedPrecision.checkReachable(gguf, fileType: type, bitsPerWeight: 4.04, scope: .projections))
        XCTAssertNoThrow(try MixedPrecision.checkReachable(gguf, fileType: type, bitsPerWeight: 2.5, scope: .projections, extensions: true))
        XCTAssertThrowsError(try MixedPrecision.checkReachable(gguf, fileType: type, bitsPerWeight: 2.4, scope: .projections, extensions: true))
        XCTAssertThrowsError(try MixedPrecision.checkReachable(gguf, fileType: type, bitsPerWeight: 4.5, outliers: OutlierPlan(fraction: 0.5), scope: .projections),
                             "half the weights as 6-byte outliers cannot fit 4.5 bits")
    }
}
