import Foundation
import PivotKernels

extension KVCacheSpec {
    /// Makes the spec ready for `model`: checks what needs the model (the group must divide the head
    /// size), turns a pivot prefix into its token count, loads IntactKV's full-precision model, and
    /// loads CSKV's factors or calibrates them (on `pool`) and saves them. `log` gets one line per step.
    /// The intact prefix stored in the model's file, if any, is every cache's pivot source (`--intact-from`
    /// takes precedence).
    public func prepare(for model: LoadedModel, pool: ThreadPool, log: (String) -> Void = { _ in },
                        progress: (Int, Int) -> Void = { _, _ in }) throws -> PreparedKVCache {
        try validate(headDim: model.config.headDim)
        if let why = AttentionShape(model.config).f32OnlyReason, self != .f32 {
            throw PivotError.unsupported(file: model.path, "the \(label) KV cache does not apply to \(model.config.architecture): \(why)")
        }
        let stored = model.intactPrefix.map(StoredPivots.init)
        switch self {
        case .f32, .f16: return PreparedKVCache(spec: self, pivotSource: stored)
        case .kivi(var settings):
            if let prefix = settings.pivotPrefix {
                settings.pivots = model.tokenizer.encode(prefix).count
                settings.pivotPrefix = nil
            }
            var source: PivotSource? = stored
            if let name = settings.intactFrom {
                guard let path = ModelLocator.resolve(name) else { throw PivotError.fileNotFound(name + " (--intact-from)") }
                source = try IntactPivots(base: try LoadedModel.load(path: path), for: model, pivots: settings.pivots)
            }
            return PreparedKVCache(spec: .kivi(settings), pivotSource: source)
        case .cskv(let settings):
            let factors = try settings.factors(for: model, pool: pool, log: log, progress: progress)
            let plan = try settings.plan(factors: factors, model: model, pool: pool, log: log)
            return PreparedKVCache(spec: self, pivotSource: stored, lowRankPlan: plan)
        }
    }
}

extension CSKVSettings {
    /// The factors from `factors` (or the default path), calibrated and saved there when missing.
    func factors(for model: LoadedModel, pool: ThreadPool, log: (String) -> Void, progress: (Int, Int) -> Void) throws -> LowRankKVFactors {
        let path = factors ?? LowRankKVFactors.defaultPath(modelPath: model.path)
        let c = model.config
        try c.requireLlamaBlock(for: "CSKV calibration")
        if FileManager.default.fileExists(atPath: path) {
            let factors = try LowRankKVFactors.load(path: path)
            guard factors.layers == c.layerCount, factors.kvHeads == c.kvHeadCount, factors.headDim == c.headDim else {
                throw PivotError.invalidArgument("--kv-factors \(path): \(factors.layers) layers × \(factors.kvHeads) KV heads × \(factors.headDim), "
                    + "the model has \(c.layerCount) × \(c.kvHeadCount) × \(c.headDim)")
            }
            return factors
        }
        guard let text = calibration ?? ModelLocator.calibrationText else {
            throw PivotError.invalidArgument("CSKV needs factors: no file at \(path) and no calibration text (give --kv-calib FILE)")
        }
        guard FileManager.default.fileExists(atPath: text) else { throw PivotError.fileNotFound(text + " (--kv-calib)") }
        let contents = try readTextFile(text)
        log("CSKV: calibrating factors on \((text as NSString).lastPathComponent) (32 chunks of 512 tokens)")
        let factors = try LowRankKVFactors.calibrate(model: model, tokens: model.tokenizer.encode(contents, addBOS: false), pool: pool, progress: progress)
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try factors.write(to: path)
        } catch {
            throw PivotError.cannotWrite(path, (error as NSError).localizedFailureReason ?? error.localizedDescription)
        }
        log("CSKV: factors saved to \(path)")
        return factors
    }
}
