// swift-tools-version:6.0
import PackageDescription

/// Kernels are built for x86-64 with AVX2/FMA/F16C (Haswell and newer); the AVX-512 VNNI and
/// AVX-VNNI kernels sit in modules of their own built for those ISAs and are called only when the
/// CPU has them (`KernelISA`), so one binary serves every x86 machine from Haswell on. The target
/// CPUs are the oldest with each ISA (Cascade Lake: AVX-512 F/BW/VL/DQ/CD + VNNI and nothing newer;
/// Haswell + AVX-VNNI), so the compiler cannot pick an instruction the run-time check did not see.
/// The manifest runs on the build host: an Arm host (Apple silicon) gets no x86 flags and builds the
/// portable paths (cross-compiling between the two is not handled).
#if arch(x86_64)
let x86Flags: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c", "-target-cpu", "haswell"],
                 .when(platforms: [.linux, .macOS])),
]
let avx512Flags: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c", "-Xcc", "-mavx512f", "-Xcc", "-mavx512bw",
                  "-Xcc", "-mavx512vl", "-Xcc", "-mavx512vnni", "-target-cpu", "cascadelake"],
                 .when(platforms: [.linux, .macOS])),
]
let avxVNNIFlags: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c", "-Xcc", "-mavxvnni", "-target-cpu", "haswell"],
                 .when(platforms: [.linux, .macOS])),
]
#else
let x86Flags: [SwiftSetting] = []
let avx512Flags: [SwiftSetting] = []
let avxVNNIFlags: [SwiftSetting] = []
#endif
let fast: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "Pivot",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Pivot", targets: ["Pivot"]),
        .executable(name: "pivot", targets: ["pivot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.60.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
    ],
    targets: [
        .target(name: "PivotKernelsAVX512", swiftSettings: avx512Flags + fast),
        .target(name: "PivotKernelsAVXVNNI", dependencies: ["PivotKernelsAVX512"], swiftSettings: avxVNNIFlags + fast),
        .target(name: "PivotKernels", dependencies: ["PivotKernelsAVX512", "PivotKernelsAVXVNNI"], swiftSettings: x86Flags + fast),
        .target(name: "Pivot", dependencies: ["PivotKernels"], swiftSettings: x86Flags + fast),
        .target(name: "PivotServer", dependencies: ["Pivot", .product(name: "Hummingbird", package: "hummingbird"),
                                                   .product(name: "NIOCore", package: "swift-nio"),
                                                   .product(name: "NIOHTTP1", package: "swift-nio"),
                                                   .product(name: "Logging", package: "swift-log"),
                                                   .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                   .product(name: "HTTPTypes", package: "swift-http-types")]),
        .target(
            name: "PivotCLI",
            dependencies: ["Pivot", "PivotServer", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: x86Flags + fast),
        .executableTarget(name: "pivot", dependencies: ["PivotCLI"], swiftSettings: x86Flags + fast),
        .testTarget(name: "PivotKernelsTests", dependencies: ["PivotKernels"], exclude: ["Fixtures"], swiftSettings: x86Flags),
        .testTarget(name: "PivotServerTests", dependencies: ["PivotServer", "Pivot", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                                                      .product(name: "NIOHTTP1", package: "swift-nio")]),
        .testTarget(name: "PivotCLITests", dependencies: ["PivotCLI", "Pivot", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(name: "PivotTests", dependencies: ["Pivot", "PivotKernels"], exclude: ["Fixtures"], swiftSettings: x86Flags),
    ],
    swiftLanguageModes: [.v6]
)
