import ArgumentParser
import Foundation
import Pivot
import PivotKernels

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a model's architecture, tensor types, parameter count and size; --check scans every tensor.")

    @OptionGroup(title: "Model") var model: ModelOptions

    @Flag(help: "List every tensor of a GGUF file.")
    var tensors = false

    @Flag(help: "Decode every tensor of a GGUF file and scan it for NaN, infinity and impossible magnitudes (llama.cpp's --check-tensors); exit 1 naming each bad tensor.")
    var check = false

    func run() throws {
        if check { return try checkTensors() }
        let loaded = try model.load()
        let c = loaded.config
        print("file:            \(loaded.path)")
        print("architecture:    \(c.architecture)")
        print("layers:          \(c.layerCount)")
        print("hidden size:     \(c.hiddenSize)")
        if let s = c.stateSpace {
            print("block:           " + s.summary + (s.projectionBias ? ", projection biases" : "") + "; no attention, no MLP")
            print(String(format: "recurrent state: %.1f KiB per sequence (fixed; no KV cache), and up to %d copies to return to",
                         Double(s.stateBytes(layers: c.layerCount)) / 1024, RecurrentStateCache.defaultSnapshotLimit))
        } else {
            print("FFN size:        \(c.intermediateSize)")
            print("heads:           \(c.headCount) query, \(c.kvHeadCount) key/value (head dim \(c.headDim))")
        }
        print("vocabulary:      \(c.vocabularySize)")
        print("context length:  \(c.contextLength)")
        if c.stateSpace == nil {
            print("rope theta:      \(c.ropeTheta) (\(c.ropeInterleaved ? "adjacent pairs" : "rotate half"))")
            print("rope scaling:    \(c.ropeScaling)" + (c.ropeLayers.map { " (RoPE in \($0.filter { $0 }.count) of \($0.count) layers)" } ?? ""))
        }
        if c.queryKeyNorm { print("q/k norm:        " + (c.variant.queryKeyNormSpansHeads ? "over the projection" : "per head")) }
        if !c.variant.isLlamaBlock { print("block:           " + c.variant.departures.joined(separator: "; ")) }
        if let e = c.experts {
            print("experts:         \(e.count), \(e.used) per token, width \(e.intermediateSize)" + (e.sharedIntermediateSize.map { ", shared expert \($0)" } ?? "")
                  + (e.normalizeWeights ? ", top-k renormalized" : "") + (e.sparseLayers.map { " (\($0.filter { $0 }.count) of \($0.count) layers routed)" } ?? ""))
        }
        if let dtype = c.declaredDType { print("declared dtype:  \(dtype)") }
        print((c.variant.norm == .layer ? "norm eps:        " : "rms norm eps:    ") + "\(c.rmsNormEpsilon)")
        print("tied embeddings: \(c.tiedEmbeddings)")
        if c.stateSpace == nil { print("attention bias:  \(c.attentionBias)") }
        print(String(format: "parameters:      %.2f M", Double(loaded.parameterCount) / 1e6))
        print(String(format: "weights:         %.2f MiB (%.2f bits per weight)", Double(loaded.weightBytes) / 1_048_576,
                     Double(loaded.weightBytes * 8) / Double(loaded.parameterCount)))
        var formats: [String: Int] = [:]
        for layer in loaded.transformer.layers { for op in layer.linears { formats[op.formatName, default: 0] += 1 } }
        print("projections:     " + formats.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", "))
        print("embedding:       \(loaded.transformer.embedding.tensor.type)" + (c.tiedEmbeddings ? " (also the output head)" : ""))
        let pivotOnly = formats.keys.filter { name in BlockFormat.extensionFormats.contains { name.hasPrefix($0.name) } || name.hasSuffix("+outliers") }
        if !pivotOnly.isEmpty {
            print("Pivot only:      \(pivotOnly.sorted().joined(separator: ", ")) (extension types / sparse outliers: other GGUF runtimes cannot load this file)")
        }
        let t = loaded.tokenizer
        print("tokenizer:       \(t.kind), \(t.vocabularySize) tokens, BOS \(t.bos.map(String.init) ?? "none"), EOS \(t.eos.map(String.init) ?? "none"), add BOS \(t.addBOS)")
        print("chat template:   \(loaded.chatTemplate)")
        if let p = loaded.intactPrefix {
            print("intact prefix:   \(p.tokens.count) token(s) \(p.text.debugDescription) from \(p.source), \(p.calibrated ? "calibrated" : "not calibrated"); "
                  + "Pivot only (llama.cpp refuses its tensors)")
        }
        if let gguf = try? GGUFFile(path: loaded.path), let record = PruningRecord(gguf: gguf) {
            for line in record.lines(config: c) { print("pruned " + line) }
        }
        print("stop tokens:     \(t.stopTokens.sorted().map { "\($0) \(t.tokens[$0].debugDescription)" }.joined(separator: ", "))")
        let g = loaded.generationDefaults
        if g != GenerationDefaults() {
            print("sampling (generation_config): temperature \(g.temperature.map { "\($0)" } ?? "-"), top-k \(g.topK.map(String.init) ?? "-"), top-p \(g.topP.map { "\($0)" } ?? "-")")
        }
        if tensors, let gguf = try? GGUFFile(path: loaded.path) {
            for name in gguf.tensorOrder {
                let tensor = gguf.tensors[name]!
                print("  \(name)  \(tensor.type)  \(tensor.shape)  \(tensor.byteCount) bytes")
            }
        }
    }

    /// Every tensor decoded and scanned; a bad one is named and the exit code is 1.
    func checkTensors() throws {
        let path = try model.resolvedPath()
        let file = try GGUFFile(path: path)
        let bar = ProgressBar(total: file.tensorOrder.count, label: "check")
        let problems = TensorCheck.scan(file) { done, _ in bar.update(done) }
        bar.finish()
        guard let first = problems.first else {
            print("\(path): \(file.tensorOrder.count) tensors checked, no NaN, infinity or impossible value")
            return
        }
        for problem in problems { writeErr("\(path): \(problem)\n") }
        throw PivotError.malformed(file: path, "\(problems.count) bad tensor(s), the first '\(first.tensor)'")
    }
}
