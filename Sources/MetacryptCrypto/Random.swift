import CSodium

private let sodiumReady: Bool = sodium_init() >= 0

/// Fills `buffer` with bytes from the operating system's CSPRNG (libsodium's `randombytes_buf`,
/// which uses `getrandom(2)` and cannot fail once initialised).
public func randomFill(_ buffer: UnsafeMutableRawBufferPointer) {
    precondition(sodiumReady, "libsodium failed to initialise")
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    randombytes_buf(base, buffer.count)
}

/// `count` random bytes.
public func randomBytes(_ count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { randomFill($0) }
    return bytes
}

/// A uniformly random 64-bit integer.
public func randomUInt64() -> UInt64 {
    var value: UInt64 = 0
    withUnsafeMutableBytes(of: &value) { randomFill($0) }
    return value
}
