import CSodium

/// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) through libsodium, with random 24-byte nonces.
///
/// Sealed form: nonce (24) || ciphertext || tag (16), the same layout as ``AESGCM``.
///
/// The 192-bit nonce is why this exists beside AES-GCM: random nonces never realistically collide, so a
/// key can encrypt an unbounded number of messages (transit and end-to-end keys that callers use freely).
public enum XChaCha20Poly1305 {
    public static let keySize = 32
    public static let nonceSize = 24
    public static let tagSize = 16
    public static let overhead = nonceSize + tagSize

    /// Encrypts `plaintext` under `key`, binding `aad`, with a fresh random nonce.
    ///
    /// - Returns: nonce || ciphertext || tag.
    /// - Throws: ``CryptoError/Code/invalidInput`` if the key is not 32 bytes.
    public static func seal(_ plaintext: some ByteView, key: SecureBytes, aad: some ByteView) throws -> [UInt8] {
        try SodiumAEAD.xchacha.seal(plaintext, key: key, nonce: randomBytes(nonceSize), aad: aad)
    }

    /// Encrypts with a caller-chosen nonce.
    ///
    /// - Warning: only for known-answer tests. Reusing a nonce under one key reveals the XOR of the
    ///   plaintexts and lets an attacker forge messages.
    public static func seal(
        _ plaintext: some ByteView, key: SecureBytes, nonce: [UInt8], aad: some ByteView
    ) throws -> [UInt8] {
        precondition(nonce.count == nonceSize, "XChaCha20-Poly1305 nonce must be 24 bytes")
        return try SodiumAEAD.xchacha.seal(plaintext, key: key, nonce: nonce, aad: aad)
    }

    /// Decrypts a sealed box.
    ///
    /// - Throws: the uniform ``CryptoError/authenticationFailed(file:line:)`` for any wrong key, modified
    ///   byte, other AAD or short input; ``CryptoError/Code/invalidInput`` if the key is not 32 bytes.
    public static func open(_ sealed: some ByteView, key: SecureBytes, aad: some ByteView) throws -> SecureBytes {
        try SodiumAEAD.xchacha.open(sealed, key: key, aad: aad)
    }
}

/// ChaCha20-Poly1305 as in RFC 8439 (96-bit nonce), through libsodium.
///
/// Sealed form: nonce (12) || ciphertext || tag (16). Kept for interoperability and known-answer tests;
/// new formats should prefer ``XChaCha20Poly1305``, whose longer nonce is safe to pick at random without
/// counting messages.
public enum ChaCha20Poly1305 {
    public static let keySize = 32
    public static let nonceSize = 12
    public static let tagSize = 16
    public static let overhead = nonceSize + tagSize

    /// Encrypts `plaintext` under `key`, binding `aad`, with a fresh random nonce.
    ///
    /// - Warning: random 96-bit nonces risk a collision after about 2^32 messages under one key; rotate
    ///   long before that.
    public static func seal(_ plaintext: some ByteView, key: SecureBytes, aad: some ByteView) throws -> [UInt8] {
        try SodiumAEAD.chacha.seal(plaintext, key: key, nonce: randomBytes(nonceSize), aad: aad)
    }

    /// Encrypts with a caller-chosen nonce.
    ///
    /// - Warning: only for known-answer tests and protocols that count nonces. Reusing a nonce under one
    ///   key destroys confidentiality and authenticity.
    public static func seal(
        _ plaintext: some ByteView, key: SecureBytes, nonce: [UInt8], aad: some ByteView
    ) throws -> [UInt8] {
        precondition(nonce.count == nonceSize, "ChaCha20-Poly1305 nonce must be 12 bytes")
        return try SodiumAEAD.chacha.seal(plaintext, key: key, nonce: nonce, aad: aad)
    }

    /// Decrypts a sealed box.
    ///
    /// - Throws: the uniform ``CryptoError/authenticationFailed(file:line:)`` for any wrong key, modified
    ///   byte, other AAD or short input; ``CryptoError/Code/invalidInput`` if the key is not 32 bytes.
    public static func open(_ sealed: some ByteView, key: SecureBytes, aad: some ByteView) throws -> SecureBytes {
        try SodiumAEAD.chacha.open(sealed, key: key, aad: aad)
    }
}

/// The two libsodium AEADs share one calling convention; this keeps the pointer work in one place.
enum SodiumAEAD {
    case xchacha
    case chacha

    static let keySize = 32
    static let tagSize = 16

    var name: String { self == .xchacha ? "XChaCha20-Poly1305" : "ChaCha20-Poly1305" }
    var nonceSize: Int { self == .xchacha ? 24 : 12 }

    func seal(_ plaintext: some ByteView, key: SecureBytes, nonce: [UInt8], aad: some ByteView) throws -> [UInt8] {
        requireSodium()
        guard key.count == Self.keySize else { throw CryptoError(.invalidInput, "\(name) key is \(key.count) bytes") }

        let length = plaintext.withUnsafeBytes { $0.count }
        var out = [UInt8](repeating: 0, count: nonceSize + length + Self.tagSize)
        let rc: Int32 = out.withUnsafeMutableBufferPointer { outBuf in
            let base = outBuf.baseAddress!
            for i in 0..<nonceSize { base[i] = nonce[i] }
            return plaintext.withUnsafeBytes { p in
                aad.withUnsafeBytes { a in
                    key.withUnsafeBytes { k in
                        encrypt(
                            base + nonceSize, p.bindMemory(to: UInt8.self).baseAddress, UInt64(p.count),
                            a.bindMemory(to: UInt8.self).baseAddress, UInt64(a.count), base,
                            k.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
            }
        }
        guard rc == 0 else { throw CryptoError(.library, "\(name) encryption failed") }
        return out
    }

    func open(_ sealed: some ByteView, key: SecureBytes, aad: some ByteView) throws -> SecureBytes {
        requireSodium()
        guard key.count == Self.keySize else { throw CryptoError(.invalidInput, "\(name) key is \(key.count) bytes") }

        return try sealed.withUnsafeBytes { box in
            guard box.count >= nonceSize + Self.tagSize else { throw CryptoError.authenticationFailed() }
            let input = box.bindMemory(to: UInt8.self).baseAddress!
            var plaintext = SecureBytes(zeroes: box.count - nonceSize - Self.tagSize)
            let rc: Int32 = plaintext.withUnsafeMutableBytes { p in
                aad.withUnsafeBytes { a in
                    key.withUnsafeBytes { k in
                        decrypt(
                            p.bindMemory(to: UInt8.self).baseAddress, input + nonceSize, UInt64(box.count - nonceSize),
                            a.bindMemory(to: UInt8.self).baseAddress, UInt64(a.count), input,
                            k.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
            }
            // libsodium checks the tag before decrypting, so on failure `plaintext` holds no unauthenticated
            // bytes; it is wiped when it goes out of scope either way.
            guard rc == 0 else { throw CryptoError.authenticationFailed() }
            return plaintext
        }
    }

    private func encrypt(
        _ out: UnsafeMutablePointer<UInt8>, _ message: UnsafePointer<UInt8>?, _ messageLength: UInt64,
        _ aad: UnsafePointer<UInt8>?, _ aadLength: UInt64, _ nonce: UnsafePointer<UInt8>, _ key: UnsafePointer<UInt8>
    ) -> Int32 {
        switch self {
        case .xchacha:
            crypto_aead_xchacha20poly1305_ietf_encrypt(
                out, nil, message, messageLength, aad, aadLength, nil, nonce, key)
        case .chacha:
            crypto_aead_chacha20poly1305_ietf_encrypt(
                out, nil, message, messageLength, aad, aadLength, nil, nonce, key)
        }
    }

    private func decrypt(
        _ out: UnsafeMutablePointer<UInt8>?, _ box: UnsafePointer<UInt8>, _ boxLength: UInt64,
        _ aad: UnsafePointer<UInt8>?, _ aadLength: UInt64, _ nonce: UnsafePointer<UInt8>, _ key: UnsafePointer<UInt8>
    ) -> Int32 {
        switch self {
        case .xchacha:
            crypto_aead_xchacha20poly1305_ietf_decrypt(
                out, nil, nil, box, boxLength, aad, aadLength, nonce, key)
        case .chacha:
            crypto_aead_chacha20poly1305_ietf_decrypt(
                out, nil, nil, box, boxLength, aad, aadLength, nonce, key)
        }
    }
}
