import COpenSSL
import CSodium

/// The Diffie-Hellman functions Metacrypt agrees keys with.
public enum KeyAgreementAlgorithm: String, Sendable, Hashable, CaseIterable {
    /// X25519 (RFC 7748): fast, constant-time by construction, every input is a valid public key.
    case x25519 = "x25519"
    /// ECDH on P-256: for peers (browsers' WebCrypto, HSMs) that only speak the NIST curves.
    case p256 = "ecdh-p256"

    /// Length of a raw private key (the scalar).
    public var rawPrivateKeySize: Int { 32 }
    /// Length of a raw public key: X25519's u-coordinate or P-256's uncompressed point.
    public var rawPublicKeySize: Int { self == .x25519 ? 32 : ECCurve.p256.pointSize }
    /// Length of the shared secret.
    public var sharedSecretSize: Int { 32 }
}

/// A Diffie-Hellman private key.
public struct KeyAgreementPrivateKey: Sendable {
    /// Which function this key belongs to.
    public let algorithm: KeyAgreementAlgorithm
    /// The matching public key, to hand to the peer.
    public let publicKey: KeyAgreementPublicKey
    let key: PKey

    private init(key: PKey, algorithm: KeyAgreementAlgorithm) throws {
        self.key = key
        self.algorithm = algorithm
        let raw =
            switch algorithm {
            case .x25519: try KeyCodec.rawPublicBytes(key)
            case .p256: try KeyCodec.ecPoint(key, curve: .p256)
            }
        // A separate public-only EVP_PKEY, so the public key never carries private material.
        self.publicKey = try KeyAgreementPublicKey(rawRepresentation: raw, algorithm: algorithm)
    }

    /// A new random key.
    public static func generate(_ algorithm: KeyAgreementAlgorithm) throws -> KeyAgreementPrivateKey {
        let key =
            switch algorithm {
            case .x25519: try KeyCodec.generate(named: "X25519")
            case .p256: try KeyCodec.generate(.p256)
            }
        return try KeyAgreementPrivateKey(key: key, algorithm: algorithm)
    }

    /// Imports a raw private key: X25519's 32-byte scalar (clamped on use, as RFC 7748 says), or P-256's
    /// 32-byte big-endian scalar in 1 ..< order.
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for a wrong length or a P-256 scalar out of range.
    public init(rawRepresentation: SecureBytes, algorithm: KeyAgreementAlgorithm) throws {
        let key =
            switch algorithm {
            case .x25519: try KeyCodec.rawPrivateKey(rawRepresentation, type: EVP_PKEY_X25519, name: "X25519")
            case .p256: try KeyCodec.ecPrivateKey(scalar: rawRepresentation, curve: .p256)
            }
        try self.init(key: key, algorithm: algorithm)
    }

    /// The raw private scalar.
    ///
    /// - Warning: the result is the private key; keep it in the barrier, never in a log or a response.
    public func rawRepresentation() throws -> SecureBytes {
        switch algorithm {
        case .x25519: try KeyCodec.rawPrivateBytes(key)
        case .p256: try KeyCodec.ecScalar(key, curve: .p256)
        }
    }

    /// The raw Diffie-Hellman output with `peer`: X25519's 32 bytes, or P-256's x-coordinate.
    ///
    /// - Warning: this is not yet a key. Feed it to ``HKDF`` together with both public keys and a label.
    /// - Throws: ``CryptoError/Code/invalidInput`` if `peer` uses another algorithm, if the P-256 point is
    ///   invalid, or if the X25519 result is all zeros (the peer sent a small-order point, which would make
    ///   the "secret" predictable).
    public func sharedSecret(with peer: KeyAgreementPublicKey) throws -> SecureBytes {
        guard peer.algorithm == algorithm else {
            throw CryptoError(
                .invalidInput, "cannot agree a \(algorithm.rawValue) key with a \(peer.algorithm.rawValue) key")
        }
        let ctx = try PKeyContext(key: key)
        try check(EVP_PKEY_derive_init(ctx.raw), "EVP_PKEY_derive_init")
        // validate_peer = 1: OpenSSL checks the peer's point once more before using it.
        guard EVP_PKEY_derive_set_peer_ex(ctx.raw, peer.key.raw, 1) == 1 else {
            ERR_clear_error()
            throw CryptoError(.invalidInput, "\(algorithm.rawValue) peer public key rejected")
        }

        var length = algorithm.sharedSecretSize
        var secret = SecureBytes(zeroes: length)
        let rc = secret.withUnsafeMutableBytes { s in
            EVP_PKEY_derive(ctx.raw, s.bindMemory(to: UInt8.self).baseAddress, &length)
        }
        // OpenSSL already fails X25519 with an all-zero output; the check below does not rely on that.
        guard rc == 1 else {
            ERR_clear_error()
            throw CryptoError(
                .invalidInput, "\(algorithm.rawValue) key agreement failed (small-order or invalid peer key)")
        }
        guard length == algorithm.sharedSecretSize else {
            throw CryptoError(.library, "\(algorithm.rawValue) shared secret is \(length) bytes")
        }
        let allZero = secret.withUnsafeBytes {
            sodium_is_zero($0.bindMemory(to: UInt8.self).baseAddress, $0.count) == 1
        }
        guard !allZero else {
            throw CryptoError(.invalidInput, "\(algorithm.rawValue) shared secret is all zeros (small-order peer key)")
        }
        return secret
    }
}

/// A Diffie-Hellman public key.
public struct KeyAgreementPublicKey: Sendable {
    /// Which function this key belongs to.
    public let algorithm: KeyAgreementAlgorithm
    /// X25519's 32-byte u-coordinate, or P-256's uncompressed point 0x04 || X || Y.
    public let rawRepresentation: [UInt8]
    let key: PKey

    /// Imports a raw public key.
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for a wrong length, or a P-256 point that is compressed,
    ///   the identity, or not on the curve (invalid-curve attacks would otherwise leak the private key).
    public init(rawRepresentation: some ByteView, algorithm: KeyAgreementAlgorithm) throws {
        let key =
            switch algorithm {
            case .x25519: try KeyCodec.rawPublicKey(rawRepresentation, type: EVP_PKEY_X25519, name: "X25519")
            case .p256: try KeyCodec.ecPublicKey(point: rawRepresentation, curve: .p256)
            }
        self.key = key
        self.algorithm = algorithm
        self.rawRepresentation = rawRepresentation.withUnsafeBytes { Array($0) }
    }
}
