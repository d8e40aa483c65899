import COpenSSL

/// The signature schemes Metacrypt issues and verifies with.
public enum SignatureAlgorithm: String, Sendable, Hashable, CaseIterable {
    /// Ed25519 (RFC 8032), pure: deterministic, no hash choice to get wrong, the OpenSSH default.
    case ed25519 = "ed25519"
    /// ECDSA on P-256 with SHA-256: the curve every X.509 and TLS peer supports.
    case ecdsaP256SHA256 = "ecdsa-p256-sha256"
    /// ECDSA on P-384 with SHA-384: for CAs that want the larger curve; the hash matches its strength.
    case ecdsaP384SHA384 = "ecdsa-p384-sha384"

    var curve: ECCurve? {
        switch self {
        case .ed25519: nil
        case .ecdsaP256SHA256: .p256
        case .ecdsaP384SHA384: .p384
        }
    }

    /// The hash ECDSA signs; Ed25519 hashes internally and takes none.
    var digest: OpaquePointer? {
        switch self {
        case .ed25519: nil
        case .ecdsaP256SHA256: EVP_sha256()
        case .ecdsaP384SHA384: EVP_sha384()
        }
    }

    /// Length of a raw signature: Ed25519's R || S, or ECDSA's zero-padded r || s.
    public var rawSignatureSize: Int {
        switch self {
        case .ed25519: 64
        case .ecdsaP256SHA256: 64
        case .ecdsaP384SHA384: 96
        }
    }

    /// Length of a raw private key: the Ed25519 seed or the EC scalar.
    public var rawPrivateKeySize: Int { curve?.scalarSize ?? 32 }

    /// Length of a raw public key: the Ed25519 point or an uncompressed EC point.
    public var rawPublicKeySize: Int { curve?.pointSize ?? 32 }

    /// The algorithm of a key OpenSSL decoded, if it is one we support.
    static func of(_ key: PKey) -> SignatureAlgorithm? {
        if key.isA("ED25519") { return .ed25519 }
        switch ECCurve.of(key) {
        case .p256: return .ecdsaP256SHA256
        case .p384: return .ecdsaP384SHA384
        case nil: return nil
        }
    }
}

/// How an ECDSA signature is encoded. Ed25519 signatures have one encoding (R || S, 64 bytes), which
/// both cases produce and accept.
public enum SignatureFormat: Sendable, Hashable {
    /// DER `ECDSA-Sig-Value`, as X.509 and TLS carry it.
    case der
    /// Fixed-width r || s, each zero-padded to the curve size; see ``ECDSASignature`` for SSH's mpints.
    case raw
}

/// A private key that signs: Ed25519, ECDSA P-256 or ECDSA P-384.
public struct SigningKey: Sendable {
    /// What this key signs with.
    public let algorithm: SignatureAlgorithm
    /// The matching public key.
    public let verifyingKey: VerifyingKey
    let key: PKey

    private init(key: PKey, algorithm: SignatureAlgorithm) throws {
        self.key = key
        self.algorithm = algorithm
        // A separate public-only EVP_PKEY, so the verifying key never carries private material.
        self.verifyingKey = try VerifyingKey(rawRepresentation: Self.publicBytes(key, algorithm), algorithm: algorithm)
    }

    /// A new random key.
    public static func generate(_ algorithm: SignatureAlgorithm) throws -> SigningKey {
        let key =
            switch algorithm.curve {
            case nil: try KeyCodec.generate(named: "ED25519")
            case let curve?: try KeyCodec.generate(curve)
            }
        return try SigningKey(key: key, algorithm: algorithm)
    }

    /// Imports a raw private key: the 32-byte Ed25519 seed, or the big-endian EC scalar (32 bytes for
    /// P-256, 48 for P-384).
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for a wrong length or a scalar outside 1 ..< order.
    public init(rawRepresentation: SecureBytes, algorithm: SignatureAlgorithm) throws {
        let key =
            switch algorithm.curve {
            case nil: try KeyCodec.rawPrivateKey(rawRepresentation, type: EVP_PKEY_ED25519, name: "Ed25519")
            case let curve?: try KeyCodec.ecPrivateKey(scalar: rawRepresentation, curve: curve)
            }
        try self.init(key: key, algorithm: algorithm)
    }

    /// Imports an unencrypted PKCS#8 `PrivateKeyInfo` (DER); the algorithm comes from the key.
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for malformed DER, trailing bytes, an inconsistent key,
    ///   explicit curve parameters, or an algorithm other than the three supported.
    public init(pkcs8DER: some ByteView) throws {
        try self.init(decoded: KeyCodec.privateKey(pkcs8DER: pkcs8DER))
    }

    /// Imports an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Encrypted keys are refused.
    public init(pkcs8PEM: some ByteView) throws {
        try self.init(decoded: KeyCodec.privateKey(pkcs8PEM: pkcs8PEM))
    }

    private init(decoded key: PKey) throws {
        guard let algorithm = SignatureAlgorithm.of(key) else {
            throw CryptoError(.invalidInput, "private key is not Ed25519, P-256 or P-384 with a named curve")
        }
        try self.init(key: key, algorithm: algorithm)
    }

    /// The raw private key (Ed25519 seed or EC scalar).
    public func rawRepresentation() throws -> SecureBytes {
        switch algorithm.curve {
        case nil: try KeyCodec.rawPrivateBytes(key)
        case let curve?: try KeyCodec.ecScalar(key, curve: curve)
        }
    }

    /// Unencrypted PKCS#8 DER.
    ///
    /// - Warning: the result is the private key; keep it in the barrier, never in a log or a response.
    public func pkcs8DER() throws -> SecureBytes { try KeyCodec.pkcs8DER(key) }

    /// Unencrypted PKCS#8 PEM.
    ///
    /// - Warning: the result is the private key; keep it in the barrier, never in a log or a response.
    public func pkcs8PEM() throws -> SecureBytes { try KeyCodec.pkcs8PEM(key) }

    /// Signs `message`.
    ///
    /// Ed25519 signs the message itself (pure Ed25519, deterministic). ECDSA hashes it with SHA-256 (P-256)
    /// or SHA-384 (P-384); OpenSSL derives each nonce from fresh randomness mixed with the key and the
    /// digest, so a weak random generator alone does not leak the key.
    ///
    /// - Parameter format: for ECDSA, DER (default) or fixed-width r || s; ignored for Ed25519.
    public func signature(for message: some ByteView, format: SignatureFormat = .der) throws -> [UInt8] {
        let ctx = try DigestContext()
        try check(EVP_DigestSignInit(ctx.raw, nil, algorithm.digest, nil, key.raw), "EVP_DigestSignInit")

        var length = Int(EVP_PKEY_get_size(key.raw))
        guard length > 0 else { throw CryptoError(.library, "EVP_PKEY_get_size failed") }
        var signature = [UInt8](repeating: 0, count: length)
        try message.withUnsafeBytes { m in
            try check(
                EVP_DigestSign(ctx.raw, &signature, &length, m.bindMemory(to: UInt8.self).baseAddress, m.count),
                "EVP_DigestSign")
        }
        signature.removeLast(signature.count - length)

        guard format == .raw, let curve = algorithm.curve else { return signature }
        return try ECDSASignature(derRepresentation: signature).rawRepresentation(componentSize: curve.scalarSize)
    }

    private static func publicBytes(_ key: PKey, _ algorithm: SignatureAlgorithm) throws -> [UInt8] {
        switch algorithm.curve {
        case nil: try KeyCodec.rawPublicBytes(key)
        case let curve?: try KeyCodec.ecPoint(key, curve: curve)
        }
    }
}

/// A public key that verifies signatures: Ed25519, ECDSA P-256 or ECDSA P-384.
public struct VerifyingKey: Sendable {
    /// What this key verifies.
    public let algorithm: SignatureAlgorithm
    /// The raw public key: Ed25519's 32 bytes, or the uncompressed EC point 0x04 || X || Y.
    public let rawRepresentation: [UInt8]
    let key: PKey

    /// Imports a raw public key: Ed25519's 32 bytes, or an uncompressed EC point (65 bytes for P-256,
    /// 97 for P-384).
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for a wrong length, a compressed or identity point, or
    ///   a point not on the curve.
    public init(rawRepresentation: some ByteView, algorithm: SignatureAlgorithm) throws {
        let key =
            switch algorithm.curve {
            case nil: try KeyCodec.rawPublicKey(rawRepresentation, type: EVP_PKEY_ED25519, name: "Ed25519")
            case let curve?: try KeyCodec.ecPublicKey(point: rawRepresentation, curve: curve)
            }
        self.key = key
        self.algorithm = algorithm
        self.rawRepresentation = rawRepresentation.withUnsafeBytes { Array($0) }
    }

    /// Imports a DER `SubjectPublicKeyInfo`; the algorithm comes from the key.
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for malformed or non-canonical DER, trailing bytes, an
    ///   invalid point, explicit curve parameters, or an unsupported algorithm.
    public init(spkiDER: some ByteView) throws {
        try self.init(decoded: KeyCodec.publicKey(spkiDER: spkiDER))
    }

    /// Imports a PEM `SubjectPublicKeyInfo` (`-----BEGIN PUBLIC KEY-----`).
    public init(spkiPEM: some ByteView) throws {
        try self.init(decoded: KeyCodec.publicKey(spkiPEM: spkiPEM))
    }

    private init(decoded key: PKey) throws {
        guard let algorithm = SignatureAlgorithm.of(key) else {
            throw CryptoError(.invalidInput, "public key is not Ed25519, P-256 or P-384 with a named curve")
        }
        self.key = key
        self.algorithm = algorithm
        self.rawRepresentation =
            switch algorithm.curve {
            case nil: try KeyCodec.rawPublicBytes(key)
            case let curve?: try KeyCodec.ecPoint(key, curve: curve)
            }
    }

    /// DER `SubjectPublicKeyInfo`.
    public func spkiDER() throws -> [UInt8] { try KeyCodec.spkiDER(key) }

    /// PEM `SubjectPublicKeyInfo` (`-----BEGIN PUBLIC KEY-----`).
    public func spkiPEM() throws -> String { try KeyCodec.spkiPEM(key) }

    /// True if `signature` is a valid signature of `message` by this key.
    ///
    /// Ed25519 signatures must be 64 bytes with S below the group order (OpenSSL refuses non-canonical S,
    /// so signatures are not malleable). ECDSA signatures must be strict DER (`.der`) or exactly two
    /// curve-size halves (`.raw`); anything malformed is simply invalid.
    public func isValidSignature(
        _ signature: some ByteView, for message: some ByteView, format: SignatureFormat = .der
    ) -> Bool {
        let der: [UInt8]
        if let curve = algorithm.curve {
            let bytes = signature.withUnsafeBytes { Array($0) }
            switch format {
            case .der:
                // Our own strict parse first, so acceptance never rests on OpenSSL's leniency alone.
                guard let parsed = try? ECDSASignature(derRepresentation: bytes),
                    parsed.r.count <= curve.scalarSize, parsed.s.count <= curve.scalarSize
                else { return false }
                der = bytes
            case .raw:
                guard bytes.count == 2 * curve.scalarSize,
                    let encoded = try? ECDSASignature(rawRepresentation: bytes).derRepresentation()
                else { return false }
                der = encoded
            }
        } else {
            der = signature.withUnsafeBytes { Array($0) }
            guard der.count == algorithm.rawSignatureSize else { return false }
        }

        guard let ctx = try? DigestContext() else { return false }
        defer { ERR_clear_error() }
        guard EVP_DigestVerifyInit(ctx.raw, nil, algorithm.digest, nil, key.raw) == 1 else { return false }
        return message.withUnsafeBytes { m in
            EVP_DigestVerify(ctx.raw, der, der.count, m.bindMemory(to: UInt8.self).baseAddress, m.count) == 1
        }
    }
}
