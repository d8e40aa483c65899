import COpenSSL

/// AES-256-GCM with 12-byte random nonces and 16-byte tags.
///
/// Sealed form: nonce (12) || ciphertext || tag (16). Random 96-bit nonces are safe for well over
/// 2^32 messages per key, far beyond what one barrier key encrypts between rotations.
public enum AESGCM {
    public static let keySize = 32
    public static let nonceSize = 12
    public static let tagSize = 16
    public static let overhead = nonceSize + tagSize

    /// Encrypts `plaintext` under `key`, binding `aad`, with a fresh random nonce.
    public static func seal(
        _ plaintext: some ByteView, key: SecureBytes, aad: some ByteView
    ) throws -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: nonceSize)
        nonce.withUnsafeMutableBytes { randomFill($0) }
        return try seal(plaintext, key: key, nonce: nonce, aad: aad)
    }

    /// Encrypts with a caller-chosen nonce. Only for known-answer tests: reusing a nonce under one key
    /// destroys confidentiality and authenticity.
    public static func seal(
        _ plaintext: some ByteView, key: SecureBytes, nonce: [UInt8], aad: some ByteView
    ) throws -> [UInt8] {
        precondition(nonce.count == nonceSize, "AES-GCM nonce must be 12 bytes")
        guard key.count == keySize else { throw CryptoError(.invalidInput, "AES-256 key is \(key.count) bytes") }
        let ctx = try CipherContext()

        let length = plaintext.withUnsafeBytes { $0.count }
        var out = [UInt8](repeating: 0, count: nonceSize + length + tagSize)
        try out.withUnsafeMutableBufferPointer { outBuf in
            let base = outBuf.baseAddress!
            for i in 0..<nonceSize { base[i] = nonce[i] }
            try key.withUnsafeBytes { k in
                try check(EVP_EncryptInit_ex(ctx.raw, EVP_aes_256_gcm(), nil, nil, nil), "EncryptInit")
                try check(mc_evp_cipher_ctx_set_ivlen(ctx.raw, Int32(nonceSize)), "set IV length")
                try check(
                    EVP_EncryptInit_ex(ctx.raw, nil, nil, k.bindMemory(to: UInt8.self).baseAddress, base),
                    "EncryptInit key")
            }
            var written: Int32 = 0
            try aad.withUnsafeBytes { a in
                if a.count > 0 {
                    try check(
                        EVP_EncryptUpdate(ctx.raw, nil, &written, a.bindMemory(to: UInt8.self).baseAddress,
                                          Int32(a.count)), "AAD")
                }
            }
            try plaintext.withUnsafeBytes { p in
                if p.count > 0 {
                    try check(
                        EVP_EncryptUpdate(ctx.raw, base + nonceSize, &written,
                                          p.bindMemory(to: UInt8.self).baseAddress, Int32(p.count)), "EncryptUpdate")
                }
            }
            try check(EVP_EncryptFinal_ex(ctx.raw, base + nonceSize + length, &written), "EncryptFinal")
            try check(mc_evp_cipher_ctx_get_tag(ctx.raw, Int32(tagSize), base + nonceSize + length), "get tag")
        }
        return out
    }

    /// Decrypts a sealed box. Any failure (wrong key, modified bytes, other AAD, too short) throws the
    /// uniform ``CryptoError/authenticationFailed(file:line:)``.
    public static func open(
        _ sealed: some ByteView, key: SecureBytes, aad: some ByteView
    ) throws -> SecureBytes {
        guard key.count == keySize else { throw CryptoError(.invalidInput, "AES-256 key is \(key.count) bytes") }
        return try sealed.withUnsafeBytes { box in
            guard box.count >= overhead else { throw CryptoError.authenticationFailed() }
            let input = box.bindMemory(to: UInt8.self).baseAddress!
            let length = box.count - overhead
            let ctx = try CipherContext()
            var plaintext = SecureBytes(zeroes: length)
            var tag = Array(UnsafeBufferPointer(start: input + nonceSize + length, count: tagSize))

            let ok: Bool = try key.withUnsafeBytes { k in
                try check(EVP_DecryptInit_ex(ctx.raw, EVP_aes_256_gcm(), nil, nil, nil), "DecryptInit")
                try check(mc_evp_cipher_ctx_set_ivlen(ctx.raw, Int32(nonceSize)), "set IV length")
                try check(
                    EVP_DecryptInit_ex(ctx.raw, nil, nil, k.bindMemory(to: UInt8.self).baseAddress, input),
                    "DecryptInit key")
                var written: Int32 = 0
                let aadOK: Bool = aad.withUnsafeBytes { a in
                    a.count == 0
                        || EVP_DecryptUpdate(ctx.raw, nil, &written, a.bindMemory(to: UInt8.self).baseAddress,
                                             Int32(a.count)) == 1
                }
                guard aadOK else { return false }
                let bodyOK: Bool = plaintext.withUnsafeMutableBytes { p in
                    length == 0
                        || EVP_DecryptUpdate(ctx.raw, p.bindMemory(to: UInt8.self).baseAddress, &written,
                                             input + nonceSize, Int32(length)) == 1
                }
                guard bodyOK, mc_evp_cipher_ctx_set_tag(ctx.raw, Int32(tagSize), &tag) == 1 else { return false }
                var finalLength: Int32 = 0
                return plaintext.withUnsafeMutableBytes { p in
                    EVP_DecryptFinal_ex(ctx.raw, p.bindMemory(to: UInt8.self).baseAddress.map { $0 + length },
                                        &finalLength) == 1
                }
            }
            guard ok else {
                // `plaintext` holds unauthenticated bytes; it is wiped when it goes out of scope.
                throw CryptoError.authenticationFailed()
            }
            return plaintext
        }
    }
}

/// Owns an `EVP_CIPHER_CTX`.
final class CipherContext {
    let raw: OpaquePointer

    init() throws {
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError(.library, "EVP_CIPHER_CTX_new failed") }
        raw = ctx
    }

    deinit { EVP_CIPHER_CTX_free(raw) }
}

func check(_ result: Int32, _ what: String, file: String = #fileID, line: Int = #line) throws {
    guard result == 1 else {
        let code = ERR_get_error()
        ERR_clear_error()
        throw CryptoError(.library, "OpenSSL \(what) failed (error \(code))", file: file, line: line)
    }
}
