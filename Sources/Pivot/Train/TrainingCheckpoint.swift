import Foundation

/// A training run's state between updates: the (master) weights, AdamW's moments and step, the log
/// so far and the settings. One file, written beside itself and renamed over the old one, so a kill
/// at any moment leaves the previous checkpoint whole. Layout: "PIVOTCKP", UInt64 header length,
/// JSON header, then count floats each of weights, first moment, second moment (little-endian F32),
/// then the weight projection's own state (learned grids), if any.
struct TrainingCheckpoint {
    struct Header: Codable {
        var version = 1
        var settings: TrainingSettings
        var step: Int
        var parameterCount: Int
        var tensorNames: [String]
        var records: [TrainingRecord]
        var projectionCount: Int? = nil
    }
    static let magic = Array("PIVOTCKP".utf8)

    var settings: TrainingSettings
    var optimizer: AdamW
    var records: [TrainingRecord]
    let weights: UnsafeMutablePointer<Float>
    let count: Int
    var projectionState: [Float]

    init(settings: TrainingSettings, optimizer: AdamW, records: [TrainingRecord], weights: UnsafeMutablePointer<Float>, count: Int,
         projectionState: [Float] = []) {
        self.settings = settings; self.optimizer = optimizer; self.records = records; self.weights = weights; self.count = count
        self.projectionState = projectionState
    }

    func write(path: String, layout: ParameterLayout) throws {
        let header = Header(settings: settings, step: optimizer.step, parameterCount: count, tensorNames: layout.entries.map(\.name), records: records,
                            projectionCount: projectionState.count)
        let json = try JSONEncoder().encode(header)
        var head = Data(Self.magic)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { head.append(contentsOf: $0) }
        head.append(json)
        // Streamed section by section: no second copy of the (weights + moments) in memory.
        let temporary = path + ".partial"
        do {
            guard FileManager.default.createFile(atPath: temporary, contents: head) else {
                throw PivotError.cannotWrite(temporary, String(cString: strerror(errno)))
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try handle.seekToEnd()
            func append(_ p: UnsafePointer<Float>, _ n: Int) throws {
                let chunk = 1 << 22
                for start in stride(from: 0, to: n, by: chunk) {
                    try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: p + start), count: 4 * min(chunk, n - start), deallocator: .none))
                }
            }
            try append(weights, count)
            try optimizer.firstMoment.withUnsafeBufferPointer { try append($0.baseAddress!, $0.count) }
            try optimizer.secondMoment.withUnsafeBufferPointer { try append($0.baseAddress!, $0.count) }
            if !projectionState.isEmpty { try projectionState.withUnsafeBufferPointer { try append($0.baseAddress!, $0.count) } }
            try handle.synchronize()
            guard rename(temporary, path) == 0 else { throw PivotError.cannotWrite(path, String(cString: strerror(errno))) }
        } catch let error as PivotError { throw error } catch {
            throw PivotError.cannotWrite(path, error.localizedDescription)
        }
    }

    /// Reads a checkpoint of a run with the same layout and settings (anything else would not be a resumption).
    static func read(path: String, layout: ParameterLayout, settings: TrainingSettings) throws -> (weights: [Float], optimizer: AdamW, records: [TrainingRecord], projectionState: [Float]) {
        // Mapped, not read: the floats are copied once, into the arrays training resumes with.
        let file = try MappedFile(path: path)
        let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: file.base), count: file.size, deallocator: .none)
        guard data.count > 16, Array(data.prefix(8)) == magic else { throw PivotError.malformed(file: path, "not a Pivot training checkpoint") }
        let length = Int(data[8..<16].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
        guard length > 0, 16 + length <= data.count else { throw PivotError.malformed(file: path, "truncated header") }
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: data[16..<(16 + length)]) } catch {
            throw PivotError.malformed(file: path, "unreadable header: \(error)")
        }
        guard header.tensorNames == layout.entries.map(\.name), header.parameterCount == layout.count else {
            throw PivotError.invalidArgument("--resume \(path): the checkpoint is of a different model or parameter set")
        }
        guard header.settings == settings else {
            throw PivotError.invalidArgument("--resume \(path): the checkpoint was made with different training settings (steps, batch, length, rate, filter or seed); "
                + "resume with the same ones, or remove the checkpoint to start over")
        }
        let n = layout.count, start = 16 + length, extra = header.projectionCount ?? 0
        guard data.count == start + 4 * (3 * n + extra) else { throw PivotError.malformed(file: path, "expected \(3 * n + extra) floats after the header") }
        func floats(_ i: Int, count: Int? = nil) -> [Float] {
            let c = count ?? n
            return [Float](unsafeUninitializedCapacity: c) { buffer, initialized in
                if c > 0 { memcpy(buffer.baseAddress!, file.base + start + i * 4 * n, 4 * c) }
                initialized = c
            }
        }
        let optimizer = AdamW(settings: settings.optimizer, step: header.step, firstMoment: floats(1), secondMoment: floats(2))
        return withExtendedLifetime(file) { (floats(0), optimizer, header.records, floats(3, count: extra)) }
    }
}
