#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Zero-filled, 64-byte aligned memory. Large blocks come straight from the kernel (anonymous
/// mappings), whose pages cost nothing until written: a KV cache sized for a whole context holds
/// only the memory of the furthest position it has reached (pages are not returned on truncation),
/// so a server's RSS follows the longest sequences its slots have served, not its settings.
public enum ZeroedMemory {
    /// Blocks from this size up are mapped rather than allocated and cleared.
    static let mappingThreshold = 1 << 20

    public static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        let size = max(1, bytes)
        if size >= mappingThreshold {
            guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), mapped != MAP_FAILED else {
                fatalError("out of memory: could not map \(size) bytes")
            }
            return mapped
        }
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        return pointer
    }

    /// Frees a block `allocate(bytes:)` returned, with the same size.
    public static func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        let size = max(1, bytes)
        if size >= mappingThreshold { munmap(pointer, size) } else { pointer.deallocate() }
    }
}
