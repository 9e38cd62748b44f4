#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file. Weights point into it; nothing is copied.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            if errno == ENOENT { throw PivotError.fileNotFound(path) }
            throw PivotError.cannotRead(path, String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw PivotError.cannotRead(path, String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw PivotError.cannotRead(path, "not a regular file") }
        size = Int(info.st_size)
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw PivotError.cannotRead(path, "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(mapped)
    }

    /// Tells the kernel the whole pages inside `bytes` are not needed now (after their contents were
    /// quantized into memory of our own): they leave the resident set and are read again from the
    /// file only if touched. The mapping is private and read-only, so nothing is lost.
    public func releasePages(_ bytes: UnsafeRawPointer, count: Int) {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: bytes) + pageSize - 1) / pageSize * pageSize
        let end = (Int(bitPattern: bytes) + count) / pageSize * pageSize
        guard size > 0, start < end, start >= Int(bitPattern: base), end <= Int(bitPattern: base) + size,
              let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(pointer, end - start, Int32(MADV_DONTNEED))
    }

    deinit {
        if size == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}

/// A bounds-checked little-endian reader over a byte range; every read that would pass the end throws.
struct ByteCursor {
    let base: UnsafeRawPointer
    let size: Int
    let file: String
    var offset = 0

    var remaining: Int { size - offset }

    mutating func need(_ count: Int, _ what: @autoclosure () -> String) throws {
        if count < 0 || count > remaining {
            throw PivotError.malformed(file: file, "truncated while reading \(what()) at byte \(offset) (needs \(count), \(remaining) left)")
        }
    }

    mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, what())
        let value = base.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: value)
    }

    mutating func readFloat(_ what: @autoclosure () -> String) throws -> Float {
        Float(bitPattern: try read(UInt32.self, what()))
    }

    mutating func readDouble(_ what: @autoclosure () -> String) throws -> Double {
        Double(bitPattern: try read(UInt64.self, what()))
    }

    mutating func readBytes(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        try need(count, what())
        let buffer = UnsafeRawBufferPointer(start: base + offset, count: count)
        offset += count
        return buffer
    }
}
