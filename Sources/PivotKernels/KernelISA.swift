#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The instruction set the kernels run on, chosen once per process (ggml's "CPU variants" idea in
/// one binary): the AVX-512 VNNI kernels and the AVX-VNNI kernels (256-bit, client CPUs without
/// AVX-512) live in modules of their own built for that ISA and are only called when the CPU
/// reports it; otherwise the AVX2 kernels, and on other CPUs (or when forced with
/// `PIVOT_ISA=portable`) the portable loops that Apple-silicon and Arm builds compile. An x86 build
/// still needs AVX2 (the rest of the engine is built for Haswell): `portable` on x86 is there to run
/// and test the Arm code, not to serve older x86 CPUs.
///
/// The quantized paths compute the same integers and the VNNI kernels keep the AVX2 kernels' float
/// operations lane for lane, so their outputs are bit-identical (tested on every path the machine
/// supports); F16/BF16 on AVX-512 sums in another order (its own tiles), and portable in plain loops.
public enum KernelISA: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    case portable, avx2, avxVNNI, avx512

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .portable: return "portable"
        case .avx2: return "avx2"
        case .avxVNNI: return "avx-vnni"
        case .avx512: return "avx512-vnni"
        }
    }

    /// Paths this machine can run, slowest first. AVX2 means AVX2 + FMA + F16C; AVX-VNNI adds the
    /// VEX `vpdpbusd`; AVX-512 means F, BW, VL and VNNI (Ice Lake servers have it without AVX-VNNI).
    public static let supported: [KernelISA] = supported(features: cpuFeatures())

    /// The best path this CPU runs.
    public static var detected: KernelISA { supported.last ?? .portable }

    /// The path in use: `detected`, or `PIVOT_ISA` if set and supported. Tests switch it to run every
    /// kernel on every path; nothing else should.
    nonisolated(unsafe) public static var active: KernelISA = fromEnvironment()

    /// A note when `PIVOT_ISA` named a path this CPU cannot run or no path at all (then `detected` is used).
    nonisolated(unsafe) public private(set) static var environmentWarning: String?

    /// The path in use and, when `PIVOT_ISA` could not be honoured, why.
    public static var activeWithWarning: (isa: KernelISA, warning: String?) {
        let isa = active
        return (isa, environmentWarning)
    }

    /// Parses `PIVOT_ISA`'s values: avx2, avx512 (or avx512-vnni), portable.
    public init?(name: String) {
        switch name.lowercased() {
        case "portable", "generic", "none": self = .portable
        case "avx2": self = .avx2
        case "avxvnni", "avx-vnni", "avx_vnni": self = .avxVNNI
        case "avx512", "avx512-vnni", "avx512vnni", "vnni": self = .avx512
        default: return nil
        }
    }

    static func fromEnvironment() -> KernelISA {
        guard let raw = getenv("PIVOT_ISA") else { return detected }
        let value = String(cString: raw)
        guard let requested = KernelISA(name: value) else {
            environmentWarning = "PIVOT_ISA=\(value) is not one of avx512, avxvnni, avx2, portable; using \(detected)"
            return detected
        }
        guard supported.contains(requested) else {
            environmentWarning = "PIVOT_ISA=\(value): this CPU does not run \(requested); using \(detected)"
            return detected
        }
        return requested
    }

    /// Runs `body` with each supported path active in turn (kernel tests), then restores the path.
    public static func forEachSupported(_ body: (KernelISA) throws -> Void) rethrows {
        let saved = active
        defer { active = saved }
        for isa in supported {
            active = isa
            try body(isa)
        }
    }

    /// The paths a set of feature names (as `/proc/cpuinfo` spells them) allows, slowest first.
    public static func supported(features: Set<String>) -> [KernelISA] {
        var paths: [KernelISA] = [.portable]
        #if arch(x86_64)
        guard ["avx2", "fma", "f16c"].allSatisfy(features.contains) else { return paths }
        paths.append(.avx2)
        if features.contains("avx_vnni") { paths.append(.avxVNNI) }
        if ["avx512f", "avx512bw", "avx512vl", "avx512_vnni"].allSatisfy(features.contains) { paths.append(.avx512) }
        #endif
        return paths
    }

    /// Feature flags of this CPU as the OS reports them (the kernel clears AVX-512 when it does not
    /// save the zmm state, so the flags are what may be used, not only what the silicon has).
    static func cpuFeatures() -> Set<String> {
        #if os(Linux)
        guard let file = fopen("/proc/cpuinfo", "r") else { return [] }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            guard text.hasPrefix("flags") else { continue }
            let values = text.split(separator: ":", maxSplits: 1).last ?? ""
            return Set(values.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init))
        }
        return []
        #elseif os(macOS) && arch(x86_64)
        var features: Set<String> = []
        let names = ["avx2": "hw.optional.avx2_0", "avx_vnni": "hw.optional.avxvnni", "fma": "hw.optional.fma", "f16c": "hw.optional.f16c",
                     "avx512f": "hw.optional.avx512f", "avx512bw": "hw.optional.avx512bw",
                     "avx512vl": "hw.optional.avx512vl", "avx512_vnni": "hw.optional.avx512vnni"]
        for (flag, key) in names {
            var value: Int32 = 0
            var size = MemoryLayout<Int32>.size
            if sysctlbyname(key, &value, &size, nil, 0) == 0, value != 0 { features.insert(flag) }
        }
        return features
        #else
        return []
        #endif
    }
}
