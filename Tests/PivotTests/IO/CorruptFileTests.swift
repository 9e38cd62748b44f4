import Foundation
import XCTest
import Pivot

/// Truncated, lying and corrupted files must fail with a clear PivotError, never crash or read out of bounds.
final class CorruptFileTests: XCTestCase {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-corrupt-\(getpid())")

    override func setUp() { try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }
    override func tearDown() { try? FileManager.default.removeItem(at: directory) }

    func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = directory.appendingPathComponent(name).path
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    func testValidTinyGGUFParses() throws {
        let gguf = try GGUFFile(path: write(TinyGGUF.bytes(), "ok.gguf"))
        XCTAssertEqual(gguf.metadata["general.architecture"]?.string, "llama")
        XCTAssertEqual(gguf.tensors["a"]?.shape, [2, 32])
        XCTAssertEqual(gguf.tensors["a"]?.toFloats()[33], 1.5)
        XCTAssertEqual(gguf.tensors["b"]?.type, .block(.q8_0))
    }

    /// 4 KB of garbage in the middle of the weights: `inspect --check` names the tensor, and perplexity stops with a
    /// clear error naming the file instead of printing `PPL = nan`.
    func testGarbageInTheWeightsIsNamedAndStopsARun() throws {
        let (_, folder, path) = try TinyModel.floatGGUF(hidden: 64, ffn: 128, seed: 5)
        defer { try? FileManager.default.removeItem(at: folder) }
        XCTAssertEqual(TensorCheck.scan(try GGUFFile(path: path)), [])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // Overwrite the middle of the file's data with 0xFF (NaN in F32) across 4 KB.
        let middle = bytes.count / 2
        for i in middle..<min(bytes.count, middle + 4096) { bytes[i] = 0xFF }
        let broken = directory.appendingPathComponent("broken.gguf").path
        XCTAssertTrue(FileManager.default.createFile(atPath: broken, contents: Data(bytes)))
        let problems = TensorCheck.scan(try GGUFFile(path: broken))
        XCTAssertFalse(problems.isEmpty)
        XCTAssertTrue(problems[0].value.isNaN, "\(problems[0])")
        let model = try LoadedModel.load(path: broken)
        let evaluator = PerplexityEvaluator(model: model, contextLength: 16, execution: Execution(pool: Shared.pool))
        XCTAssertThrowsError(try evaluator.evaluate(tokens: Array(0..<64).map { $0 % 200 }, windows: 2)) { error in
            guard case PivotError.nonFinite(let file, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(file, broken)
        }
    }

    func testEveryTruncationOfAGGUFFailsCleanly() {
        let bytes = TinyGGUF.bytes()
        for length in 0..<bytes.count {
            let path = write(Array(bytes[..<length]), "cut.gguf")
            XCTAssertThrowsError(try GGUFFile(path: path), "truncated at \(length)") { error in
                XCTAssertTrue(error is PivotError, "\(error)")
                XCTAssertTrue("\(error)".contains("cut.gguf"), "error names the file: \(error)")
            }
        }
    }

    func testRandomByteCorruptionNeverCrashes() {
        let bytes = TinyGGUF.bytes()
        var rng = SystemRandomNumberGenerator()
        var failures = 0
        for trial in 0..<400 {
            var corrupted = bytes
            for _ in 0..<(1 + trial % 4) {
                corrupted[Int.random(in: 0..<TinyGGUF.headerLength, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            do {
                let gguf = try GGUFFile(path: write(corrupted, "flip.gguf"))
                // Whatever parsed must stay inside the file.
                for t in gguf.tensors.values { XCTAssertLessThanOrEqual(t.data + t.byteCount, gguf.file.base + gguf.file.size) }
            } catch {
                XCTAssertTrue(error is PivotError, "\(error)")
                failures += 1
            }
        }
        XCTAssertGreaterThan(failures, 0)
    }

    func testLyingHeadersAreNamed() {
        let cases: [(String, [UInt8], String)] = [
            ("magic", Array("GGUX".utf8) + TinyGGUF.bytes().dropFirst(4), "not a GGUF file"),
            ("version", TinyGGUF.bytes(version: 9), "GGUF version 9"),
            ("tensor count", TinyGGUF.bytes(tensorCountOverride: 1 << 40), "more than the file can hold"),
            ("offset", TinyGGUF.bytes(offsetOverride: 1 << 20), "runs past the end"),
            ("type", TinyGGUF.bytes(typeOverride: 99), ""),
            ("dimension", TinyGGUF.bytes(dimensionOverride: 1 << 50), "absurd"),
            // K-quants: rows of 32 cannot hold 256-weight super-blocks; 2 × 1024 Q6_K weights need 1680 bytes.
            ("K-quant rows", TinyGGUF.bytes(typeOverride: 12), "does not fill whole Q4_K blocks"),
            ("K-quant size", TinyGGUF.bytes(typeOverride: 14, dimensionOverride: 1024), "runs past the end"),
        ]
        for (label, bytes, message) in cases {
            let path = write(bytes, "\(label).gguf")
            do {
                let gguf = try GGUFFile(path: path)
                // An unknown tensor type is reported when the tensor is used.
                XCTAssertEqual(label, "type")
                XCTAssertThrowsError(try gguf.require("a", shape: [2, 32])) { XCTAssertTrue("\($0)".contains("GGML type 99"), "\($0)") }
            } catch {
                XCTAssertTrue("\(error)".contains(message), "\(label): \(error)")
            }
        }
    }

    func testMissingFileAndWrongShape() throws {
        XCTAssertThrowsError(try LoadedModel.load(path: directory.appendingPathComponent("nope.gguf").path)) {
            XCTAssertTrue("\($0)".contains("no such file"), "\($0)")
        }
        let gguf = try GGUFFile(path: write(TinyGGUF.bytes(), "shape.gguf"))
        XCTAssertThrowsError(try gguf.require("a", shape: [32, 2])) { XCTAssertTrue("\($0)".contains("has shape [2, 32], expected [32, 2]"), "\($0)") }
        XCTAssertThrowsError(try gguf.require("zzz", shape: [1])) { XCTAssertTrue("\($0)".contains("missing tensor 'zzz'"), "\($0)") }
        // A tiny GGUF is not a runnable model: the loader names what is missing.
        XCTAssertThrowsError(try LoadedModel.load(path: gguf.path)) { XCTAssertTrue($0 is PivotError, "\($0)") }
    }

    func testTruncatedRealModelFailsCleanly() throws {
        let model = try Shared.requireModelPath()
        let data = try Data(contentsOf: URL(fileURLWithPath: model), options: .alwaysMapped)
        for length in [0, 3, 24, 1000, 200_000, 2_000_000, data.count / 2, data.count - 1] {
            let path = directory.appendingPathComponent("real-cut.gguf").path
            _ = FileManager.default.createFile(atPath: path, contents: data.prefix(length))
            XCTAssertThrowsError(try LoadedModel.load(path: path), "cut at \(length)") { error in
                XCTAssertTrue(error is PivotError, "\(error)")
            }
        }
    }

    func testCorruptSafetensors() throws {
        let good = directory.appendingPathComponent("good.safetensors").path
        try SafetensorsWriter.write([.init(name: "w", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]),
                                     .init(name: "h", shape: [2], floats: [1.5, -2], dtype: "BF16"),
                                     .init(name: "f", shape: [2], floats: [0.25, 3], dtype: "F16")], to: good)
        let store = try SafetensorsStore(file: good)
        XCTAssertEqual(store.tensor(named: "w")?.toFloats(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(store.tensor(named: "h")?.toFloats(), [1.5, -2])
        XCTAssertEqual(store.tensor(named: "f")?.toFloats(), [0.25, 3])
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: good)))
        for length in stride(from: 0, to: bytes.count, by: 3) {
            XCTAssertThrowsError(try SafetensorsStore(file: write(Array(bytes[..<length]), "cut.safetensors")), "cut at \(length)") {
                XCTAssertTrue($0 is PivotError, "\($0)")
            }
        }
        var lying = bytes
        lying[0] = 0xFF; lying[1] = 0xFF; lying[2] = 0xFF
        XCTAssertThrowsError(try SafetensorsStore(file: write(lying, "lying.safetensors"))) {
            XCTAssertTrue("\($0)".contains("does not fit the file"), "\($0)")
        }
        var notJSON = bytes
        notJSON[8] = UInt8(ascii: "x")
        XCTAssertThrowsError(try SafetensorsStore(file: write(notJSON, "bad.safetensors"))) {
            XCTAssertTrue("\($0)".contains("not a JSON object"), "\($0)")
        }
    }
}

/// Builds a small valid GGUF v3 file: two metadata keys, an F32 tensor "a" [32 x 2] and a Q8_0 tensor "b".
enum TinyGGUF {
    static var headerLength: Int { bytes().count - 256 - 34 }

    static func bytes(version: UInt32 = 3, tensorCountOverride: UInt64? = nil, offsetOverride: UInt64? = nil,
                      typeOverride: UInt32? = nil, dimensionOverride: UInt64? = nil) -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(version)
        u64(tensorCountOverride ?? 2)
        u64(2)
        str("general.architecture"); u32(8); str("llama")
        str("general.alignment"); u32(4); u32(32)
        str("a"); u32(2); u64(dimensionOverride ?? 32); u64(2); u32(typeOverride ?? 0); u64(offsetOverride ?? 0)
        str("b"); u32(1); u64(32); u32(8); u64(256)
        while out.count % 32 != 0 { out.append(0) }
        for i in 0..<64 { u32((i == 33 ? Float(1.5) : Float(i) * 0.5).bitPattern) }
        withUnsafeBytes(of: Float16(0.5).bitPattern.littleEndian) { out.append(contentsOf: $0) }
        for i in 0..<32 { out.append(UInt8(bitPattern: Int8(i - 16))) }
        return out
    }
}
