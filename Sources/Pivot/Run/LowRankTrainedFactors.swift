import Foundation
import PivotKernels

extension CSKVSettings {
    /// The run's plan: the closed form at this rank, or with `trainSteps`, its trained rows, loaded from
    /// the trained file beside `factorsPath` or trained (on `pool`) and saved there.
    func plan(factors: LowRankKVFactors, model: LoadedModel, pool: ThreadPool, log: (String) -> Void) throws -> LowRankPlan {
        let plan = try LowRankPlan(factors: factors, fraction: rank, latentBits: latentBits, rope: RotaryGeometry(model.config))
        guard trainSteps > 0 else { return plan }
        guard let text = calibration ?? ModelLocator.calibrationText else {
            throw PivotError.invalidArgument("CSKV training needs calibration text (give --kv-calib FILE)")
        }
        guard FileManager.default.fileExists(atPath: text) else { throw PivotError.fileNotFound(text + " (--kv-calib)") }
        let path = trainedPath(factorsPath: self.factors ?? LowRankKVFactors.defaultPath(modelPath: model.path), calibration: text)
        if FileManager.default.fileExists(atPath: path) {
            if try plan.loadRows(path: path) { return plan }
            log("CSKV: \(path) was trained for other ranks; training again")
        }
        let recipe = LowRankTrainingRecipe(steps: trainSteps, learningRate: trainLearningRate, window: window)
        log("CSKV: training the factors on \((text as NSString).lastPathComponent) (\(recipe.chunks) chunks of \(recipe.chunkLength) tokens, "
            + "\(trainSteps) steps per layer, learning rate \(trainLearningRate))")
        let start = Date()
        try plan.train(model: model, tokens: model.tokenizer.encode(try readTextFile(text), addBOS: false), recipe: recipe, pool: pool, log: log)
        do {
            try plan.writeRows(to: path)
        } catch {
            throw PivotError.cannotWrite(path, (error as NSError).localizedFailureReason ?? error.localizedDescription)
        }
        log(String(format: "CSKV: trained in %.0f s, saved to %@", Date().timeIntervalSince(start), path))
        return plan
    }

    /// Where trained rows are kept: beside the closed form's file, named by everything training depends
    /// on (rank, latent bits, window, steps, rate, the calibration text's name and size), so a trained and an
    /// untrained run, or two trainings, never share a file.
    public func trainedPath(factorsPath: String, calibration: String) -> String {
        let size = ((try? FileManager.default.attributesOfItem(atPath: calibration))?[.size] as? Int) ?? 0
        let base = factorsPath.hasSuffix(".safetensors") ? String(factorsPath.dropLast(".safetensors".count)) : factorsPath
        let text = (calibration as NSString).lastPathComponent
        return base + String(format: ".trained-r%g-l%d-w%d-s%d-lr%g-%@-%d.v1.safetensors", rank, latentBits, window, trainSteps,
                             trainLearningRate, text, size)
    }
}

extension LowRankPlan {
    /// The encoder and decoder rows of every vector (`ranks`, `encoders`, `decoders`, F32), as trained.
    func writeRows(to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let total = encoders.count
        try SafetensorsWriter.write([
            .init(name: "ranks", shape: [ranks.count], floats: ranks.map(Float.init)),
            .init(name: "encoders", shape: [total], floats: Array(UnsafeBufferPointer(start: encoders.pointer, count: total))),
            .init(name: "decoders", shape: [total], floats: Array(UnsafeBufferPointer(start: decoders.pointer, count: total))),
        ], to: path)
    }

    /// Replaces the rows with a file's; false when it holds other ranks (another allocation).
    func loadRows(path: String) throws -> Bool {
        let store = try SafetensorsStore(file: path)
        guard let ranks = store.tensor(named: "ranks")?.toFloats(), let encoders = store.tensor(named: "encoders")?.toFloats(),
              let decoders = store.tensor(named: "decoders")?.toFloats() else {
            throw PivotError.malformed(file: path, "not a trained CSKV file (needs ranks, encoders, decoders)")
        }
        guard ranks.map({ Int($0) }) == self.ranks, encoders.count == self.encoders.count, decoders.count == self.decoders.count else { return false }
        self.encoders.pointer.update(from: encoders, count: encoders.count)
        self.decoders.pointer.update(from: decoders, count: decoders.count)
        return true
    }
}
