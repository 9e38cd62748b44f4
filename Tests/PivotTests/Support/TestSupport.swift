import Foundation
import XCTest
import Pivot
import PivotKernels

/// Locations of the shared real-model assets; tests that need them skip with a clear message where absent.
enum Shared {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let sharedRoot = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")

    static var modelPath: String? {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["PIVOT_MODELS"] { candidates.append(env + "/" + ModelLocator.defaultModelName) }
        candidates.append(sharedRoot.appendingPathComponent("models/\(ModelLocator.defaultModelName)").path)
        candidates.append(packageRoot.appendingPathComponent("models/\(ModelLocator.defaultModelName)").path)
        candidates.append(ModelLocator.cacheDirectory + "/models/" + ModelLocator.defaultModelName)
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    static var referencePath: String { sharedRoot.appendingPathComponent("reference/smollm2-135m-q4_1.json").path }
    static var wikitextPath: String { sharedRoot.appendingPathComponent("data/wikitext-2-raw-test.txt").path }

    /// The wikitext-2 test text, or a skip where the shared data is absent.
    static func wikitext() throws -> String {
        guard let text = try? String(contentsOfFile: wikitextPath, encoding: .utf8) else { throw XCTSkip("wikitext-2 not found at \(wikitextPath)") }
        return text
    }
    static var evalDataPath: String { sharedRoot.appendingPathComponent("data/eval").path }

    static func requireEvalData() throws -> String {
        guard FileManager.default.fileExists(atPath: evalDataPath + "/hellaswag_validation.jsonl") else {
            throw XCTSkip("evaluation data not found in \(evalDataPath)")
        }
        return evalDataPath
    }

    static func requireModelPath() throws -> String {
        guard let path = modelPath else {
            throw XCTSkip("real model not found: put \(ModelLocator.defaultModelName) in ../shared/models or $PIVOT_MODELS (scripts/fetch-model.sh downloads it)")
        }
        return path
    }

    nonisolated(unsafe) private static var cachedModel: LoadedModel?
    static let lock = NSLock()

    /// The real model, loaded once per test process.
    static func model() throws -> LoadedModel {
        let path = try requireModelPath()
        lock.lock(); defer { lock.unlock() }
        if let cachedModel { return cachedModel }
        let loaded = try LoadedModel.load(path: path)
        cachedModel = loaded
        return loaded
    }

    static let pool = ThreadPool()

    static func reference() throws -> Reference {
        guard FileManager.default.fileExists(atPath: referencePath) else { throw XCTSkip("reference file \(referencePath) not found") }
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: referencePath)))
    }
}

struct Reference: Decodable {
    struct Top: Decodable { let ids: [Int]; let values: [Float] }
    struct Prompt: Decodable {
        let text: String
        let ids: [Int]
        let last_logits_top10: Top
        let last_logits_first16: [Float]
        let greedy_32: [Int]
    }
    struct PPL: Decodable { let ppl: Double? }
    let prompts: [Prompt]
    let chat_template_text: String
    let chat_template_ids: [Int]
    let wikitext_num_tokens: Int
}

