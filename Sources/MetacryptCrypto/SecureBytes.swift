import CSodium

/// A buffer for secrets: copy-on-write, wiped in full when its last copy goes away, compared in
/// constant time, and printed as `<redacted>`.
public struct SecureBytes: Sendable, ByteView, CustomStringConvertible, CustomDebugStringConvertible {
    final class Storage: @unchecked Sendable {
        // Only mutated while uniquely referenced (see `withUnsafeMutableBytes`), so sharing is safe.
        let pointer: UnsafeMutableRawPointer
        let capacity: Int
        var count: Int

        init(capacity: Int) {
            self.capacity = Swift.max(capacity, 1)
            self.pointer = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 16)
            self.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: self.capacity)
            self.count = 0
        }

        deinit {
            secureWipe(pointer, capacity)
            pointer.deallocate()
        }
    }

    private var storage: Storage

    /// A buffer of `count` zero bytes.
    public init(zeroes count: Int) {
        storage = Storage(capacity: count)
        storage.count = count
    }

    /// A buffer of `count` random bytes.
    public init(randomCount count: Int) {
        self.init(zeroes: count)
        withUnsafeMutableBytes { randomFill($0) }
    }

    /// Copies `bytes` into a new secure buffer. The caller remains responsible for wiping the source.
    public init(copying bytes: some ByteView) {
        let count = bytes.withUnsafeBytes { $0.count }
        self.init(zeroes: count)
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { storage.pointer.copyMemory(from: base, byteCount: count) }
        }
    }

    /// Takes the contents of `bytes` and wipes the array.
    public init(consuming bytes: inout [UInt8]) {
        self.init(copying: bytes)
        secureWipe(&bytes)
    }

    public var count: Int { storage.count }
    public var isEmpty: Bool { storage.count == 0 }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.pointer, count: storage.count))
    }

    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = Storage(capacity: storage.capacity)
            copy.pointer.copyMemory(from: storage.pointer, byteCount: storage.count)
            copy.count = storage.count
            storage = copy
        }
        return try body(UnsafeMutableRawBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Shortens the buffer to `count` bytes, wiping what is cut off.
    public mutating func truncate(to count: Int) {
        precondition(count >= 0 && count <= self.count, "truncate beyond the buffer")
        withUnsafeMutableBytes { buffer in
            secureWipe(buffer.baseAddress.map { $0 + count }, buffer.count - count)
        }
        storage.count = count
    }

    /// A copy of the bytes as an ordinary array.
    ///
    /// - Warning: the array is not wiped automatically. Use only for values that leave the process
    ///   anyway (a response to the caller) and wipe it when done.
    public func unsafeArray() -> [UInt8] {
        withUnsafeBytes { Array($0) }
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "SecureBytes(<redacted>, \(count) bytes)" }
}

extension SecureBytes: Equatable {
    /// Constant-time comparison.
    public static func == (lhs: SecureBytes, rhs: SecureBytes) -> Bool {
        constantTimeEquals(lhs, rhs)
    }
}
