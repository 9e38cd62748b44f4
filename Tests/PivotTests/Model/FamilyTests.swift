import Foundation
import XCTest
import Pivot
import PivotKernels

/// Each family's tiny random checkpoint (scripts/tiny_families.py: built by transformers from its config
/// class, weights in BF16, reference logits in float64) loaded from its HF folder and, through
/// `pivot convert`, from GGUF: logits of every position agree with transformers'.
final class FamilyTests: XCTestCase {
    static let root = Shared.packageRoot.appendingPathComponent("Tests/PivotTests/Fixtures/families")
    static let families = ["llama", "qwen2", "qwen3", "phi3", "phi3-partial", "phi3-longrope", "olmo2", "stablelm", "stablelm-qk", "gpt-neox", "gemma2", "gemma3",
                           "gemma3-scaled", "falcon", "falcon-mha", "falcon2", "falcon-40b", "mixtral", "qwen2-moe", "qwen2-moe-dense",
                           "mamba", "mamba-untied", "mamba-bias", "mamba2"]
    /// Checkpoints llama.cpp's GGUF cannot hold, with a word of the reason conversion gives: a dense layer
    /// in a qwen2moe, biases on Mamba's projections.
    static let huggingFaceOnly = ["qwen2-moe-dense": "dense", "mamba-bias": "use_bias"]

    struct Reference {
        let tokens: [Int]
        let vocabulary: Int
        let logits: [Float]
        let greedy: [Int]

        init(_ folder: URL) throws {
            let data = try Data(contentsOf: folder.appendingPathComponent("reference.json"))
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
            tokens = try XCTUnwrap(json["tokens"] as? [Int])
            vocabulary = try XCTUnwrap(json["vocab_size"] as? Int)
            greedy = try XCTUnwrap(json["greedy"] as? [Int])
            let bytes = try XCTUnwrap(Data(base64Encoded: try XCTUnwrap(json["logits_f32_base64"] as? String)))
            logits = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(logits.count, tokens.count * vocabulary)
        }
    }

    /// Every position's logits from one pass with the F32 cache and float activations.
    static func logits(_ model: LoadedModel, tokens: [Int]) -> [Float] {
        let execution = Execution(pool: Shared.pool, precision: .float)
        let state = ForwardState(config: model.config, maxTokens: tokens.count, allLogits: true, execution: execution)
        let cache = model.makeCache(capacity: tokens.count, maxBatch: tokens.count)
        let m = model.transformer.forward(tokens, cache: cache, state: state, logits: .all)
        return (0..<tokens.count).flatMap { t in Array(UnsafeBufferPointer(start: m.row(t), count: m.columns)) }
    }

    /// Largest |difference| over every logit, relative to the logits' spread.
    static func check(_ name: String, _ ours: [Float], _ reference: Reference, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ours.count, reference.logits.count, name, file: file, line: line)
        let worst = zip(ours, reference.logits).map { abs($0 - $1) }.max() ?? .infinity
        let scale = reference.logits.map(abs).max() ?? 1
        print(String(format: "%@: max |Δlogit| %.2e (logits up to %.1f)", name, worst, scale))
        XCTAssertLessThan(worst, 1e-4, "\(name): max |Δlogit| \(worst) (logits up to \(scale))", file: file, line: line)
        let greedy = (0..<reference.tokens.count).map { t in
            (0..<reference.vocabulary).max { ours[t * reference.vocabulary + $0] < ours[t * reference.vocabulary + $1] }!
        }
        XCTAssertEqual(greedy, reference.greedy, "\(name): greedy tokens", file: file, line: line)
    }

    func testHuggingFaceFoldersMatchTransformers() throws {
        for name in Self.families {
            let folder = Self.root.appendingPathComponent(name)
            let reference = try Reference(folder)
            let model = try LoadedModel.load(path: folder.path)
            Self.check(name, Self.logits(model, tokens: reference.tokens), reference)
        }
    }

    /// One token at a time through the KV cache (windows with positions behind them, one-row MoE routing,
    /// parallel blocks in decode): each step's logits equal transformers' row for that position.
    func testDecodeStepsMatchTransformers() throws {
        for name in Self.families {
            let reference = try Reference(Self.root.appendingPathComponent(name))
            let model = try LoadedModel.load(path: Self.root.appendingPathComponent(name).path)
            let state = ForwardState(config: model.config, maxTokens: 1, allLogits: false, execution: Execution(pool: Shared.pool, precision: .float))
            let cache = model.makeCache(capacity: reference.tokens.count, maxBatch: 1)
            var steps: [Float] = []
            for token in reference.tokens {
                let m = model.transformer.forward(token: token, cache: cache, state: state)
                steps += Array(UnsafeBufferPointer(start: m.row(0), count: m.columns))
            }
            Self.check(name + " (decode)", steps, reference)
        }
    }

    func testConvertedGGUFMatchesTransformers() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-families-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in Self.families {
            let folder = Self.root.appendingPathComponent(name)
            let reference = try Reference(folder)
            let output = dir.appendingPathComponent(name + ".gguf").path
            if let reason = Self.huggingFaceOnly[name] {
                XCTAssertThrowsError(try HuggingFaceConverter.convert(folder: folder.path, to: output, floatType: .f32)) {
                    XCTAssertTrue("\($0)".contains(reason), "\($0)")
                }
                continue
            }
            try HuggingFaceConverter.convert(folder: folder.path, to: output, floatType: .f32)
            let model = try LoadedModel.load(path: output)
            Self.check(name + " (GGUF)", Self.logits(model, tokens: reference.tokens), reference)
        }
    }
}

/// Every family's config.json with each key removed, or set to a wrong type, or to a contradictory
/// number: the load either succeeds (the key has a default) and the model runs eight tokens, or it is
/// one PivotError naming the problem.
final class FamilyConfigFuzzTests: XCTestCase {
    func testMissingWrongAndContradictoryKeysAreClearErrors() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-fuzz-\(getpid())")
        defer { try? FileManager.default.removeItem(at: work) }
        var loaded = 0, refused = 0
        for name in FamilyTests.families {
            let source = FamilyTests.root.appendingPathComponent(name)
            let folder = work.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for file in try FileManager.default.contentsOfDirectory(atPath: source.path) where file != "config.json" {
                let target = folder.appendingPathComponent(file)
                if !FileManager.default.fileExists(atPath: target.path) {
                    try FileManager.default.createSymbolicLink(at: target, withDestinationURL: source.appendingPathComponent(file))
                }
            }
            let original = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as? [String: Any])
            var variants: [(String, [String: Any])] = []
            for key in original.keys.sorted() {
                var removed = original; removed[key] = nil
                variants.append(("without \(key)", removed))
                var wrong = original; wrong[key] = original[key] is String ? 7 : "seven"
                variants.append(("\(key) of the wrong type", wrong))
                if original[key] is Int, !(original[key] is Bool) {
                    var odd = original; odd[key] = (original[key] as! Int) * 3 + 1
                    variants.append(("\(key) contradicting the weights", odd))
                    var negative = original; negative[key] = -1
                    variants.append(("\(key) negative", negative))
                }
            }
            for (what, config) in variants {
                try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
                if ProcessInfo.processInfo.environment["PIVOT_FUZZ_TRACE"] != nil { FileHandle.standardError.write(Data("fuzz: \(name) \(what)\n".utf8)) }
                do {
                    let model = try LoadedModel.load(path: folder.path)
                    _ = FamilyTests.logits(model, tokens: Array(Array(0..<8).prefix(min(8, model.config.contextLength))))
                    loaded += 1
                } catch let error as PivotError {
                    XCTAssertFalse("\(error)".isEmpty, "\(name), \(what)")
                    refused += 1
                } catch {
                    XCTFail("\(name), \(what): not a PivotError: \(error)")
                }
            }
        }
        XCTAssertGreaterThan(refused, 100)
        XCTAssertGreaterThan(loaded, 50)
    }
}

/// Every family's converted GGUF with each `{arch}.*` key removed or given a wrong value: a clear
/// PivotError or a load, never a crash (llama.cpp's names, as a hand-edited or foreign file may have them).
final class FamilyGGUFFuzzTests: XCTestCase {
    func testMissingAndWrongMetadataAreClearErrors() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("pivot-gguf-fuzz-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        var refused = 0, loaded = 0
        for name in FamilyTests.families where FamilyTests.huggingFaceOnly[name] == nil {
            let source = work.appendingPathComponent(name + ".gguf").path
            try HuggingFaceConverter.convert(folder: FamilyTests.root.appendingPathComponent(name).path, to: source, floatType: .f32)
            let gguf = try GGUFFile(path: source)
            let arch = try XCTUnwrap(gguf.metadata["general.architecture"]?.string)
            let tensors = gguf.tensorNames.map { n -> GGUFWriter.Tensor in
                let t = gguf.tensors[n]!
                return GGUFWriter.Tensor(name: n, ggmlType: t.type.ggmlType, shape: t.shape, bytes: UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
            }
            let target = work.appendingPathComponent(name + ".fuzz.gguf").path
            for (index, entry) in gguf.metadataEntries.enumerated() where entry.key.hasPrefix(arch + ".") {
                var variants: [[GGUFMetadataEntry]] = []
                var without = gguf.metadataEntries; without.remove(at: index); variants.append(without)
                for value: MetadataValue in [.uint(0), .uint(1 << 31), .float(-1), .string("seven")] {
                    var wrong = gguf.metadataEntries
                    let type: UInt32 = { switch value { case .uint: 4; case .float: 6; default: 8 } }()
                    wrong[index] = GGUFMetadataEntry(entry.key, value, type: type)
                    variants.append(wrong)
                }
                for metadata in variants {
                    try GGUFWriter.write(metadata: metadata, tensors: tensors, to: target)
                    do {
                        // What loads must also run: eight tokens through it.
                        let model = try LoadedModel.load(path: target)
                        let tokens = Array(0..<8)
                        _ = FamilyTests.logits(model, tokens: Array(tokens.prefix(min(8, model.config.contextLength))))
                        loaded += 1
                    } catch is PivotError {
                        refused += 1
                    } catch {
                        XCTFail("\(name), \(entry.key): not a PivotError: \(error)")
                    }
                }
            }
        }
        XCTAssertGreaterThan(refused, 50)
        XCTAssertGreaterThan(loaded, 10)
    }
}
