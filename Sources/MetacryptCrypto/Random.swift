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

/// A uniformly random integer in `0..<bound`.
///
/// Rejection sampling rather than `randomUInt64() % bound`: the modulo alone favours small values
/// whenever `bound` does not divide 2^64.
///
/// - Precondition: `bound > 0`.
public func randomUInt64(below bound: UInt64) -> UInt64 {
    precondition(bound > 0, "random bound must be positive")
    // 2^64 mod bound: drawing at least this many values leaves a range that is a whole multiple of bound.
    let threshold = (0 &- bound) % bound
    while true {
        let value = randomUInt64()
        if value >= threshold { return value % bound }
    }
}

/// Stops the process if libsodium could not initialise; call it before any libsodium function that needs
/// `sodium_init` (the AEADs pick their implementation there).
func requireSodium() {
    precondition(sodiumReady, "libsodium failed to initialise")
}
