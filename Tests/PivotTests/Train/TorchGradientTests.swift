import XCTest
import Pivot
import PivotKernels

/// The backward pass against PyTorch autograd on the real model: `scripts/torch_gradients.py` writes
/// the loss and every parameter's gradient (GGUF layout) for a token batch; this compares tensor by
/// tensor, ‖ours − torch‖/‖torch‖. Opt-in (needs torch):
///   python3 scripts/torch_gradients.py --model MODEL --tokens T.json --out DIR [--double]
///   PIVOT_TORCH_GRADIENTS=DIR swift test -c release --filter TorchGradientTests
final class TorchGradientTests: XCTestCase {
    func testGradientsMatchPyTorch() throws {
        guard let directory = ProcessInfo.processInfo.environment["PIVOT_TORCH_GRADIENTS"] else {
            throw XCTSkip("set PIVOT_TORCH_GRADIENTS to a torch_gradients.py output folder")
        }
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/index.json"))) as! [String: Any]
        let tokens = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: index["tokens"] as! String))) as! [[Int]]
        let model = try TrainableModel(gguf: try GGUFFile(path: index["model"] as! String))
        let gradients = ParameterBuffer(layout: model.layout)
        let pool = ThreadPool(threads: 2)
        let (loss, rows) = model.step(batch: tokens, objective: NextTokenCrossEntropy(batch: tokens), gradients: gradients, pool: pool)
        XCTAssertEqual(rows, index["rows"] as? Int)
        let torchLoss = index["loss"] as! Double
        XCTAssertEqual(loss, torchLoss, accuracy: 1e-4 * torchLoss)
        var worst = (name: "", error: 0.0)
        for entry in model.layout.entries {
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(entry.name).f32"))
            let reference = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(reference.count, entry.count, entry.name)
            let ours = gradients.values(entry.name)
            var difference = 0.0, norm = 0.0
            for i in 0..<entry.count {
                let r = Double(reference[i]), e = Double(ours[i]) - r
                difference += e * e; norm += r * r
            }
            let relative = (difference / max(norm, 1e-300)).squareRoot()
            if relative > worst.error { worst = (entry.name, relative) }
            XCTAssertLessThan(relative, Double(ProcessInfo.processInfo.environment["PIVOT_TORCH_TOLERANCE"] ?? "1e-4")!, entry.name)
        }
        print(String(format: "loss %.6f (torch %.6f); worst relative gradient error %.3g in %@", loss, torchLoss, worst.error, worst.name))
    }
}
