import COpenSSL

/// HKDF with SHA-256 (RFC 5869), through OpenSSL's `EVP_KDF` "HKDF".
///
/// SHA-256 because every key Metacrypt derives is at most 256 bits; a wider hash would add nothing.
public enum HKDF {
    /// Output length of the pseudorandom key, and the least a PRK given to ``expand`` may have.
    public static let hashSize = 32
    /// RFC 5869's ceiling for one expansion: 255 blocks of the hash.
    public static let maximumOutputCount = 255 * hashSize
    /// OpenSSL 3.0 keeps `info` in a fixed 1024-byte buffer.
    public static let maximumInfoCount = 1024

    /// Extract-then-expand: `outputCount` bytes of key material bound to `info`.
    ///
    /// - Parameters:
    ///   - inputKeyMaterial: the secret to derive from (a shared secret, a master key).
    ///   - salt: optional non-secret randomness; empty means RFC 5869's default of zero bytes.
    ///   - info: what the output is for; different `info` gives independent keys.
    ///   - outputCount: 1 ... ``maximumOutputCount`` bytes.
    /// - Throws: ``CryptoError/Code/invalidInput`` for an output length or `info` out of range.
    public static func deriveKey(
        inputKeyMaterial: SecureBytes, salt: some ByteView, info: some ByteView, outputCount: Int
    ) throws -> SecureBytes {
        try derive(mode: .extractAndExpand, key: inputKeyMaterial, salt: salt, info: info, outputCount: outputCount)
    }

    /// The extract step alone: a 32-byte pseudorandom key.
    public static func extract(inputKeyMaterial: SecureBytes, salt: some ByteView) throws -> SecureBytes {
        try derive(mode: .extractOnly, key: inputKeyMaterial, salt: salt, info: [UInt8](), outputCount: hashSize)
    }

    /// The expand step alone.
    ///
    /// - Parameter pseudorandomKey: at least 32 bytes, normally the output of ``extract(inputKeyMaterial:salt:)``.
    /// - Throws: ``CryptoError/Code/invalidInput`` for a short key, an output length or `info` out of range.
    public static func expand(
        pseudorandomKey: SecureBytes, info: some ByteView, outputCount: Int
    ) throws -> SecureBytes {
        guard pseudorandomKey.count >= hashSize else {
            throw CryptoError(
                .invalidInput, "HKDF pseudorandom key is \(pseudorandomKey.count) bytes, need \(hashSize)")
        }
        return try derive(
            mode: .expandOnly, key: pseudorandomKey, salt: [UInt8](), info: info, outputCount: outputCount)
    }

    /// `EVP_KDF_HKDF_MODE_*`.
    private enum Mode: Int32 {
        case extractAndExpand = 0
        case extractOnly = 1
        case expandOnly = 2
    }

    private static func derive(
        mode: Mode, key: SecureBytes, salt: some ByteView, info: some ByteView, outputCount: Int
    ) throws -> SecureBytes {
        guard outputCount >= 1, outputCount <= maximumOutputCount else {
            throw CryptoError(.invalidInput, "HKDF output of \(outputCount) bytes is outside 1...\(maximumOutputCount)")
        }
        let infoCount = info.withUnsafeBytes { $0.count }
        guard infoCount <= maximumInfoCount else {
            throw CryptoError(.invalidInput, "HKDF info is \(infoCount) bytes, more than \(maximumInfoCount)")
        }
        let context = try KDFContext(algorithm: "HKDF")

        var out = SecureBytes(zeroes: outputCount)
        var modeValue = mode.rawValue
        let rc: Int32 = withCStrings(["digest", "SHA256", "key", "salt", "info", "mode"]) { names in
            key.withUnsafeBytes { k in
                salt.withUnsafeBytes { s in
                    info.withUnsafeBytes { i in
                        withUnsafeMutablePointer(to: &modeValue) { m in
                            // The context copies the key and clears its copy when freed.
                            var params = [
                                OSSL_PARAM_construct_utf8_string(names[0], names[1], 0),
                                OSSL_PARAM_construct_octet_string(
                                    names[2], UnsafeMutableRawPointer(mutating: k.baseAddress), k.count),
                                OSSL_PARAM_construct_int(names[5], m),
                            ]
                            // An absent salt is RFC 5869's all-zero salt; OpenSSL refuses an empty one.
                            if s.count > 0 {
                                params.append(
                                    OSSL_PARAM_construct_octet_string(
                                        names[3], UnsafeMutableRawPointer(mutating: s.baseAddress), s.count))
                            }
                            if i.count > 0 {
                                params.append(
                                    OSSL_PARAM_construct_octet_string(
                                        names[4], UnsafeMutableRawPointer(mutating: i.baseAddress), i.count))
                            }
                            params.append(OSSL_PARAM_construct_end())
                            return out.withUnsafeMutableBytes { o in
                                EVP_KDF_derive(context.raw, o.bindMemory(to: UInt8.self).baseAddress, o.count, &params)
                            }
                        }
                    }
                }
            }
        }
        try check(rc, "HKDF derive")
        return out
    }
}

/// Owns an `EVP_KDF_CTX` (and the fetched `EVP_KDF` it was made from).
final class KDFContext {
    let kdf: OpaquePointer
    let raw: OpaquePointer

    init(algorithm: String) throws {
        guard let kdf = EVP_KDF_fetch(nil, algorithm, nil) else {
            throw CryptoError(.library, "EVP_KDF_fetch(\(algorithm)) failed")
        }
        guard let ctx = EVP_KDF_CTX_new(kdf) else {
            EVP_KDF_free(kdf)
            throw CryptoError(.library, "EVP_KDF_CTX_new(\(algorithm)) failed")
        }
        self.kdf = kdf
        self.raw = ctx
    }

    deinit {
        EVP_KDF_CTX_free(raw)
        EVP_KDF_free(kdf)
    }
}

/// Runs `body` with NUL-terminated copies of `strings` that stay valid for the whole call.
///
/// An `OSSL_PARAM` keeps pointers to its name and data; Swift's implicit string bridging only lasts for
/// one C call, so parameter arrays need copies that outlive their construction.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>]) throws -> R) rethrows -> R {
    let pointers = strings.map { string -> UnsafeMutablePointer<CChar> in
        let chars = Array(string.utf8CString)
        let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: chars.count)
        pointer.initialize(from: chars, count: chars.count)
        return pointer
    }
    defer { pointers.forEach { $0.deallocate() } }
    return try body(pointers)
}
