import CSodium

/// Overwrites `count` bytes at `pointer` with zeros in a way the compiler cannot remove (audit #45).
///
/// Every wipe in Metacrypt goes through this function.
public func secureWipe(_ pointer: UnsafeMutableRawPointer?, _ count: Int) {
    guard let pointer, count > 0 else { return }
    sodium_memzero(pointer, count)
}

/// Wipes the contents of a byte array in place. The array keeps its length, now all zeros.
///
/// - Warning: Swift arrays may have been copied before this call (every copy-on-write mutation
///   leaves the old buffer behind). Keep secrets in ``SecureBytes``; use this for temporaries only.
public func secureWipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { secureWipe($0.baseAddress, $0.count) }
}

/// Compares two byte sequences in constant time (for equal lengths). Different lengths compare unequal.
public func constantTimeEquals(_ a: some ByteView, _ b: some ByteView) -> Bool {
    a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in
            guard pa.count == pb.count else { return false }
            if pa.count == 0 { return true }
            return sodium_memcmp(pa.baseAddress, pb.baseAddress, pa.count) == 0
        }
    }
}

/// Types that expose their bytes contiguously (arrays, slices, ``SecureBytes``).
public protocol ByteView {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ByteView where Element == UInt8 {}
extension ArraySlice: ByteView where Element == UInt8 {}
