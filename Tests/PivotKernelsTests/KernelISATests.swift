import XCTest
import PivotKernels

/// The run-time choice of kernel path: what each set of CPU flags selects and what PIVOT_ISA accepts.
final class KernelISATests: XCTestCase {
    func testFlagsChooseThePath() {
        let avx2: Set<String> = ["sse4_2", "avx", "avx2", "fma", "f16c"]
        let avx512 = avx2.union(["avx512f", "avx512bw", "avx512vl", "avx512_vnni"])
        #if arch(x86_64)
        XCTAssertEqual(KernelISA.detect(features: []), .portable)
        XCTAssertEqual(KernelISA.detect(features: ["avx", "avx2", "fma"]), .portable, "no F16C: the AVX2 build's conversions need it")
        XCTAssertEqual(KernelISA.detect(features: avx2), .avx2)
        XCTAssertEqual(KernelISA.detect(features: avx512.subtracting(["avx512_vnni"])), .avx2, "AVX-512 without VNNI (Skylake-X) runs AVX2")
        XCTAssertEqual(KernelISA.detect(features: avx2.union(["avx_vnni"])), .avx2, "AVX-VNNI alone has no kernels yet")
        XCTAssertEqual(KernelISA.detect(features: avx512), .avx512)
        #else
        XCTAssertEqual(KernelISA.detect(features: avx512), .portable)
        #endif
        XCTAssertEqual(KernelISA.supported.first, .portable, "every machine runs the portable loops")
        XCTAssertEqual(KernelISA.supported.last, KernelISA.detected)
    }

    func testEnvironmentNames() {
        XCTAssertEqual(KernelISA(name: "AVX512"), .avx512)
        XCTAssertEqual(KernelISA(name: "avx512-vnni"), .avx512)
        XCTAssertEqual(KernelISA(name: "avx2"), .avx2)
        XCTAssertEqual(KernelISA(name: "portable"), .portable)
        XCTAssertNil(KernelISA(name: "sse2"))
        XCTAssertEqual(KernelISA.avx512.description, "avx512-vnni")
    }

    func testForEachSupportedRestoresThePath() {
        let before = KernelISA.active
        var seen: [KernelISA] = []
        KernelISA.forEachSupported { seen.append($0); XCTAssertEqual(KernelISA.active, $0) }
        XCTAssertEqual(seen, KernelISA.supported)
        XCTAssertEqual(KernelISA.active, before)
    }
}
