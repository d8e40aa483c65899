import CArgon2

/// Argon2id key derivation (RFC 9106) through the reference implementation.
public struct Argon2Parameters: Codable, Sendable, Equatable {
    /// Passes over memory.
    public var time: UInt32
    /// Memory in KiB.
    public var memoryKiB: UInt32
    /// Lanes, also used as threads.
    public var lanes: UInt32

    enum CodingKeys: String, CodingKey {
        case time
        case memoryKiB = "memory_kib"
        case lanes
    }

    public init(time: UInt32, memoryKiB: UInt32, lanes: UInt32) {
        self.time = time
        self.memoryKiB = memoryKiB
        self.lanes = lanes
    }

    /// RFC 9106's second recommended option (64 MiB, t=3), with lanes matched to a small server.
    public static let recommended = Argon2Parameters(time: 3, memoryKiB: 64 * 1024, lanes: 4)

    /// The least the server accepts: below this a password-derived key is too cheap to guess.
    public static let minimum = Argon2Parameters(time: 1, memoryKiB: 8 * 1024, lanes: 1)

    /// Nil if the parameters are acceptable, else why not.
    public func problem() -> String? {
        if time < Self.minimum.time { return "argon2 time \(time) is below the minimum \(Self.minimum.time)" }
        if memoryKiB < Self.minimum.memoryKiB {
            return "argon2 memory_kib \(memoryKiB) is below the minimum \(Self.minimum.memoryKiB)"
        }
        if lanes < 1 || lanes > 64 { return "argon2 lanes \(lanes) is outside 1...64" }
        if memoryKiB < 8 * lanes { return "argon2 memory_kib must be at least 8 per lane" }
        if time > 64 || memoryKiB > 4 * 1024 * 1024 { return "argon2 parameters exceed the server's ceiling" }
        return nil
    }
}

public enum Argon2id {
    /// Derives `length` bytes from `password` and `salt`.
    public static func deriveKey(
        password: some ByteView, salt: [UInt8], parameters: Argon2Parameters, length: Int = 32
    ) throws -> SecureBytes {
        if let problem = parameters.problem() { throw CryptoError(.invalidInput, problem) }
        guard salt.count >= 16 else { throw CryptoError(.invalidInput, "argon2 salt is \(salt.count) bytes, need 16") }
        var out = SecureBytes(zeroes: length)
        let rc: Int32 = password.withUnsafeBytes { pwd in
            out.withUnsafeMutableBytes { o in
                argon2id_hash_raw(parameters.time, parameters.memoryKiB, parameters.lanes,
                                  pwd.baseAddress, pwd.count, salt, salt.count, o.baseAddress, o.count)
            }
        }
        guard rc == ARGON2_OK.rawValue else {
            throw CryptoError(.library, "argon2id failed: \(String(cString: argon2_error_message(rc)))")
        }
        return out
    }
}

extension Argon2id {
    /// A password hash in the PHC string format (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), with a fresh
    /// 16-byte salt and a 32-byte hash.
    public static func hashPassword(_ password: some ByteView, parameters: Argon2Parameters) throws -> String {
        if let problem = parameters.problem() { throw CryptoError(.invalidInput, problem) }
        let salt = randomBytes(16)
        let length = argon2_encodedlen(parameters.time, parameters.memoryKiB, parameters.lanes, 16, 32, Argon2_id)
        var encoded = [CChar](repeating: 0, count: length + 1)
        let rc: Int32 = password.withUnsafeBytes { pwd in
            argon2id_hash_encoded(parameters.time, parameters.memoryKiB, parameters.lanes, pwd.baseAddress, pwd.count,
                                  salt, salt.count, 32, &encoded, encoded.count)
        }
        guard rc == ARGON2_OK.rawValue else {
            throw CryptoError(.library, "argon2id failed: \(String(cString: argon2_error_message(rc)))")
        }
        return String(decoding: encoded.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// True if `password` matches the PHC-format `encoded` hash. Malformed hashes never match.
    public static func verifyPassword(_ password: some ByteView, encoded: String) -> Bool {
        guard encoded.hasPrefix("$argon2id$") else { return false }
        return password.withUnsafeBytes { pwd in
            argon2id_verify(encoded, pwd.baseAddress, pwd.count) == ARGON2_OK.rawValue
        }
    }
}
