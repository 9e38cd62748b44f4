import XCTest
import PivotKernels

/// The run-time choice of kernel path: what each set of CPU flags selects and what PIVOT_ISA accepts.
final class KernelISATests: XCTestCase {
    func testFlagsChooseThePath() {
        let avx2: Set<String> = ["sse4_2", "avx", "avx2", "fma", "f16c"]
        let avx512 = avx2.union(["avx512f", "avx512bw", "avx512vl", "avx512_vnni"])
        #if arch(x86_64)
        XCTAssertEqual(KernelISA.supported(features: []), [.portable])
        XCTAssertEqual(KernelISA.supported(features: ["avx", "avx2", "fma"]), [.portable], "no F16C: the AVX2 build's conversions need it")
        XCTAssertEqual(KernelISA.supported(features: avx2), [.portable, .avx2])
        XCTAssertEqual(KernelISA.supported(features: avx512.subtracting(["avx512_vnni"])), [.portable, .avx2], "AVX-512 without VNNI (Skylake-X) runs AVX2")
        XCTAssertEqual(KernelISA.supported(features: avx2.union(["avx_vnni"])), [.portable, .avx2, .avxVNNI], "Alder Lake")
        XCTAssertEqual(KernelISA.supported(features: avx512), [.portable, .avx2, .avx512], "Ice Lake server: no AVX-VNNI")
        XCTAssertEqual(KernelISA.supported(features: avx512.union(["avx_vnni"])), [.portable, .avx2, .avxVNNI, .avx512], "Sapphire Rapids")
        #else
        XCTAssertEqual(KernelISA.supported(features: avx512), [.portable])
        #endif
        XCTAssertEqual(KernelISA.supported.first, .portable, "every machine runs the portable loops")
        XCTAssertEqual(KernelISA.supported.last, KernelISA.detected)
    }

    func testEnvironmentNames() {
        XCTAssertEqual(KernelISA(name: "AVX512"), .avx512)
        XCTAssertEqual(KernelISA(name: "avx512-vnni"), .avx512)
        XCTAssertEqual(KernelISA(name: "avx2"), .avx2)
        XCTAssertEqual(KernelISA(name: "avxvnni"), .avxVNNI)
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
