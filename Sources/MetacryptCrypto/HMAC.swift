import COpenSSL

/// HMAC (RFC 2104) with SHA-256 or SHA-512, through OpenSSL's one-shot `HMAC()`.
public enum HMAC {
    /// The hash under the MAC.
    public enum Algorithm: String, Sendable, Hashable, CaseIterable {
        /// HMAC-SHA256: the default; 32-byte codes.
        case sha256
        /// HMAC-SHA512: 64-byte codes, for callers that want the wider output (and it is faster on 64-bit CPUs).
        case sha512

        /// Length of an authentication code in bytes.
        public var size: Int { self == .sha256 ? 32 : 64 }

        var digest: OpaquePointer {
            self == .sha256 ? EVP_sha256() : EVP_sha512()
        }
    }

    /// The authentication code of `message` under `key`.
    ///
    /// Keys of any length are accepted (RFC 2104 hashes long keys and pads short ones); a key shorter than
    /// the algorithm's output size is weak.
    public static func authenticationCode(
        for message: some ByteView, key: SecureBytes, algorithm: Algorithm = .sha256
    ) -> [UInt8] {
        var code = [UInt8](repeating: 0, count: algorithm.size)
        var length: UInt32 = 0
        let result = key.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                // OpenSSL copies the key into its MAC context and clears it when the context is freed.
                COpenSSL.HMAC(
                    algorithm.digest, k.baseAddress, Int32(k.count), m.bindMemory(to: UInt8.self).baseAddress,
                    m.count, &code, &length)
            }
        }
        precondition(result != nil && length == UInt32(algorithm.size), "HMAC-\(algorithm) failed")
        return code
    }

    /// True if `code` is the full-length authentication code of `message` under `key`.
    ///
    /// The comparison takes the same time wherever the codes differ, so a caller cannot find a valid code
    /// byte by byte. Truncated codes never match.
    public static func isValidAuthenticationCode(
        _ code: some ByteView, for message: some ByteView, key: SecureBytes, algorithm: Algorithm = .sha256
    ) -> Bool {
        var expected = authenticationCode(for: message, key: key, algorithm: algorithm)
        defer { secureWipe(&expected) }
        return constantTimeEquals(expected, code)
    }
}
