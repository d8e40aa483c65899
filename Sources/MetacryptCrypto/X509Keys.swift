import COpenSSL

// Keys for X.509: what a CA signs with and what certificates certify. Unlike `SigningKey`, these include
// RSA, because TLS peers and CSRs from the outside world still use it.

/// The key types a CA generates: for issuers and for the keys of the `issue` route.
public enum X509KeyType: String, Sendable, CaseIterable, Codable {
    case ecdsaP256 = "ecdsa-p256"
    case ecdsaP384 = "ecdsa-p384"
    case ed25519 = "ed25519"
    case rsa2048 = "rsa-2048"
    case rsa3072 = "rsa-3072"
    case rsa4096 = "rsa-4096"
}

/// The algorithm of a key found in a certificate, CSR or PKCS#8 file.
public enum X509KeyAlgorithm: Sendable, Equatable, CustomStringConvertible {
    case rsa(bits: Int)
    case ecdsaP256
    case ecdsaP384
    case ed25519
    /// Anything else (DSA, RSA-PSS, Ed448, other curves, explicit curve parameters): named for messages.
    case unsupported(String)

    /// The family name a profile's `key_type` uses: `rsa`, `ecdsa-p256`, `ecdsa-p384`, `ed25519`.
    public var family: String {
        switch self {
        case .rsa: "rsa"
        case .ecdsaP256: "ecdsa-p256"
        case .ecdsaP384: "ecdsa-p384"
        case .ed25519: "ed25519"
        case .unsupported(let name): name
        }
    }

    public var description: String {
        if case .rsa(let bits) = self { return "rsa-\(bits)" }
        return family
    }

    static func of(_ key: PKey) -> X509KeyAlgorithm {
        if key.isA("RSA") { return .rsa(bits: Int(EVP_PKEY_get_bits(key.raw))) }
        if key.isA("ED25519") { return .ed25519 }
        switch ECCurve.of(key) {
        case .p256: return .ecdsaP256
        case .p384: return .ecdsaP384
        case nil: break
        }
        if key.isA("EC") { return .unsupported("ec (unsupported curve)") }
        let name = EVP_PKEY_get0_type_name(key.raw).map { String(cString: $0) } ?? "unknown"
        return .unsupported(name.lowercased())
    }

    /// The digest X.509 signatures by this key use: SHA-384 for P-384 to match its strength, none for
    /// Ed25519 (it hashes internally), SHA-256 otherwise (what every verifier supports).
    var signatureDigest: OpaquePointer? {
        switch self {
        case .ed25519: nil
        case .ecdsaP384: EVP_sha384()
        default: EVP_sha256()
        }
    }
}

/// A private key of an issuer or of a generated leaf, held by OpenSSL.
///
/// - Warning: see the note in PKey.swift: the key lives in OpenSSL's memory, cleared only when freed.
public final class X509PrivateKey: @unchecked Sendable {  // immutable after construction, see PKey
    let key: PKey
    public let algorithm: X509KeyAlgorithm

    init(key: PKey) {
        self.key = key
        self.algorithm = X509KeyAlgorithm.of(key)
    }

    /// A new random key.
    public static func generate(_ type: X509KeyType) throws -> X509PrivateKey {
        let key: PKey =
            switch type {
            case .ecdsaP256: try KeyCodec.generate(.p256)
            case .ecdsaP384: try KeyCodec.generate(.p384)
            case .ed25519: try KeyCodec.generate(named: "ED25519")
            case .rsa2048: try generateRSA(bits: 2048)
            case .rsa3072: try generateRSA(bits: 3072)
            case .rsa4096: try generateRSA(bits: 4096)
            }
        return X509PrivateKey(key: key)
    }

    private static func generateRSA(bits: Int) throws -> PKey {
        guard let key = mc_evp_pkey_generate_rsa(bits) else {
            throw CryptoError(.library, "RSA-\(bits) key generation failed")
        }
        return PKey(taking: key)
    }

    /// Imports an unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`); the key must pass OpenSSL's consistency check.
    public init(pkcs8PEM: some ByteView) throws {
        key = try KeyCodec.privateKey(pkcs8PEM: pkcs8PEM)
        algorithm = X509KeyAlgorithm.of(key)
    }

    /// Unencrypted PKCS#8 PEM, in a wiped buffer.
    public func pkcs8PEM() throws -> SecureBytes { try KeyCodec.pkcs8PEM(key) }

    /// The public half, as a separate public-only key.
    public func publicKey() throws -> X509PublicKey {
        try X509PublicKey(spkiDER: KeyCodec.spkiDER(key))
    }
}

/// A public key: the subject key of a certificate or CSR.
public struct X509PublicKey: Sendable {
    let key: PKey
    public let algorithm: X509KeyAlgorithm

    init(key: PKey) {
        self.key = key
        self.algorithm = X509KeyAlgorithm.of(key)
    }

    /// From a DER SubjectPublicKeyInfo (canonical DER only).
    public init(spkiDER: [UInt8]) throws {
        let key = try KeyCodec.publicKey(spkiDER: spkiDER)
        self.init(key: key)
    }

    /// The DER SubjectPublicKeyInfo.
    public func spkiDER() throws -> [UInt8] { try KeyCodec.spkiDER(key) }
}
