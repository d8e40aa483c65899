import Glibc

/// Memory handed across the engine ABI. Each block carries its size in a 16-byte header, so that whoever
/// releases it can wipe all of it without being told its length. The host and every engine allocate
/// with this, each side releasing only what it allocated.
public enum WipingAllocator {
    static let header = 16

    /// `count` zeroed bytes, or nil.
    public static func allocate(_ count: Int) -> UnsafeMutableRawPointer? {
        guard count >= 0, count <= Int.max - header, let block = calloc(1, count + header) else { return nil }
        block.storeBytes(of: count, as: Int.self)
        return block + header
    }

    /// A copy of `bytes`, or nil.
    public static func allocate(copying bytes: some ByteView) -> UnsafeMutableRawPointer? {
        bytes.withUnsafeBytes { source in
            guard let out = allocate(source.count) else { return nil }
            if let base = source.baseAddress, source.count > 0 { out.copyMemory(from: base, byteCount: source.count) }
            return out
        }
    }

    /// Wipes and frees a block from `allocate`. NULL is a no-op.
    public static func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        let block = pointer - header
        secureWipe(block, block.load(as: Int.self) + header)
        free(block)
    }
}
