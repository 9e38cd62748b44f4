import Foundation
import PivotKernels

/// Calibrated IntactKV (Liu et al. 2024, "calibration"): the pivot tokens' keys and values, first
/// computed by the full-precision model, become the only trainable parameters of the quantized
/// model, tuned so that its next-token distributions after the prefix match the full model's (KL on
/// calibration text). The quantized weights stay as they are (float forward of their dequantized
/// values; the runtime's int8 activations differ slightly).
public enum IntactCalibration {
    /// Trains `prefix`'s keys/values in place (and marks it calibrated); returns the trainer's log.
    public static func calibrate(prefix: inout IntactPrefix, quantized: GGUFFile, full: LoadedModel, windows: TrainingWindows,
                                 settings: TrainingSettings, distillation: DistillationSettings = DistillationSettings(),
                                 pool: ThreadPool, events: (TrainingEvent) -> Void = { _ in }) throws -> [TrainingRecord] {
        let P = prefix.tokens.count
        let model = try TrainableModel(gguf: quantized, prefixLength: P)
        try prefix.check(for: model.config, file: quantized.path)
        for l in 0..<model.config.layerCount {
            prefix.keys[l].withUnsafeBufferPointer { model.weights.pointer(ParameterLayout.intactKeyName(layer: l)).update(from: $0.baseAddress!, count: $0.count) }
            prefix.values[l].withUnsafeBufferPointer { model.weights.pointer(ParameterLayout.intactValueName(layer: l)).update(from: $0.baseAddress!, count: $0.count) }
        }
        var settings = settings
        settings.filter = ParameterFilter(prefixOnly: true)
        let source = TeacherSource(teacher: full, settings: distillation, length: settings.length,
                                   execution: Execution(pool: pool, precision: .float), prefix: prefix.tokens)
        let trainer = Trainer(model: model, settings: settings, data: windows, source: source)
        try trainer.run(pool: pool, events: events)
        for l in 0..<model.config.layerCount {
            prefix.keys[l] = model.weights.values(ParameterLayout.intactKeyName(layer: l))
            prefix.values[l] = model.weights.values(ParameterLayout.intactValueName(layer: l))
        }
        prefix.calibrated = true
        return trainer.records
    }
}
