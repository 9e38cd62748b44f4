import Foundation
import PivotKernels

/// A configuration's `quantize` key: the file a quantization method makes from the configuration's
/// model, so a matrix spec compares methods by name —
/// `{"name": "awq", "quantize": {"type": "Q4_K_M", "method": "awq+gptq"}}`. The file is made once
/// (calibration included) and kept in `~/.cache/pivot/quantized` under a name that encodes everything
/// it was made from; the Hessians and activation statistics are cached beside it for other methods.
public struct QuantizeSpec: Codable, Sendable, Equatable {
    /// A file type, as `pivot quantize --type` takes it.
    public var type: String
    /// As `pivot quantize --method` (default: imatrix, with the calibration text below).
    public var method: String?
    /// SmoothQuant's α.
    public var alpha: Double?
    /// MQ's bits per weight of the tensor data.
    public var bpw: Double?
    /// Calibration text (default: calibration.txt beside the evaluation data, when the method needs one).
    public var calib: String?
    /// Calibration chunk length in tokens (default 512).
    public var calibContext: Int?

    public init(type: String, method: String? = nil, alpha: Double? = nil, bpw: Double? = nil, calib: String? = nil, calibContext: Int? = nil) {
        self.type = type; self.method = method; self.alpha = alpha; self.bpw = bpw; self.calib = calib; self.calibContext = calibContext
    }

    enum CodingKeys: String, CodingKey { case type, method, alpha, bpw, calib, calibContext = "calib_ctx" }

    /// The job for `model`, writing `output`; the calibration path resolved.
    func job(model: String, output: String) throws -> QuantizeJob {
        guard let fileType = QuantizeFileType.named(type) else {
            throw PivotError.invalidArgument("quantize: unknown type '\(type)' (known: \(QuantizeFileType.all.map(\.name).joined(separator: ", ")))")
        }
        let methodName = method ?? "imatrix"
        let (rounding, scaling) = try ChannelScaling.resolveMethod(methodName, alpha: alpha, methodOption: "quantize method",
                                                                   alphaOption: "quantize alpha")
        var job = QuantizeJob(input: model, output: output, fileType: fileType, method: rounding)
        job.scaling = scaling
        job.bitsPerWeight = bpw
        job.chunkLength = calibContext ?? 512
        if rounding != .rtn {
            guard let text = calib ?? ModelLocator.dataDirectory(containing: "../calibration.txt").map({ $0 + "/../calibration.txt" }) else {
                throw PivotError.invalidArgument("quantize: method '\(methodName)' needs calibration text; give \"calib\" (no calibration.txt found beside the evaluation data)")
            }
            job.calibrationText = text
        }
        return job
    }

    public func validate() throws {
        try job(model: "", output: "").validate()
    }

    /// The quantized file for `model`, made first when it is not in the cache folder.
    func file(for model: String, pool: ThreadPool, log: (String) -> Void) throws -> String {
        let folder = ModelLocator.cacheDirectory + "/quantized"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var job = try job(model: model, output: "")
        func describe(_ path: String) -> String {
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let size = attributes?[.size] as? Int ?? 0, modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\((path as NSString).standardizingPath):\(size):\(modified)"
        }
        var effectiveAlpha = ""
        if case .smooth(let a) = job.scaling { effectiveAlpha = "\(a)" }
        let identity = [describe(model), type, method ?? "", effectiveAlpha, bpw.map { "\($0)" } ?? "", "\(job.chunkLength)",
                        job.calibrationText.map(describe) ?? ""].joined(separator: "|")
        let stem = ((model as NSString).lastPathComponent as NSString).deletingPathExtension
        let name = "\(stem)-\(type)-\((method ?? "default").replacingOccurrences(of: "+", with: "_"))-\(fnv1a(identity)).gguf"
        let path = folder + "/" + name
        if FileManager.default.fileExists(atPath: path) { return path }
        job.output = path
        job.calibrationCache = folder + "/\(stem)-calibration.gguf"
        log("quantize: making \(name) once (\(method ?? "imatrix"), \(type)); later runs reuse it")
        try withoutActuallyEscaping(log) { note in _ = try job.run(pool: pool, events: .init(note: note)) }
        return path
    }

    private func fnv1a(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16)
    }
}
