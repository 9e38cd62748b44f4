#if arch(x86_64)
/// LLVM's prefetch intrinsic (`prefetcht0`), which Swift does not otherwise expose. Decode streams
/// every weight once; requesting lines a little ahead of the loads keeps more of them in flight than
/// the hardware prefetchers do (BENCHMARKS, "Kernels, third pass"). Shared by every x86 path.
/// The `.p0` name is LLVM's opaque-pointer spelling (LLVM 15 on, every Swift 6 toolchain); the
/// constant hint arguments are written inside `prefetch`, which is inlinable, so they stay constants.
@_silgen_name("llvm.prefetch.p0") @usableFromInline
func llvmPrefetch(_ address: UnsafeRawPointer, _ write: Int32, _ locality: Int32, _ cacheType: Int32)

/// Requests the line holding `address` into every cache level.
@inlinable @inline(__always) public func prefetch(_ address: UnsafeRawPointer) { llvmPrefetch(address, 0, 3, 1) }

/// Every 64-byte line of `bytes` bytes from `start`.
@inlinable @inline(__always) public func prefetchLines(_ start: UnsafeRawPointer, bytes: Int) {
    var offset = 0
    while offset < bytes { prefetch(start + offset); offset += 64 }
}

/// Decode's prefetch spread over a group's blocks: block b of `blocks` requests its share of the
/// group's `groupBytes` bytes `ahead` bytes on, so the next group's lines arrive while this one is
/// summed. A burst of the whole next group before it was slower (a model larger than the cache:
/// Q4_0 56–60 → 73–82 t/s spread out).
@inlinable @inline(__always)
public func prefetchShare(_ group: UnsafeRawPointer, _ b: Int, ahead: Int, groupBytes: Int, blocks: Int) {
    let share = groupBytes / blocks, from = b * share, to = b + 1 == blocks ? groupBytes : from + share
    prefetchLines(group + ahead + from, bytes: to - from)
}
#endif
