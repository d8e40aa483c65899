import EngineKit
import MetacryptCrypto

// Public keys as OpenSSH writes them (RFC 4253 6.6, RFC 5656 3.1, RFC 8709 4) and the CA's signing key.

/// A subject public key, parsed strictly from an authorized_keys line.
struct SSHPublicKey: Sendable, Equatable {
    /// The key type, e.g. "ssh-ed25519".
    let type: String
    /// The public key blob: `string type` followed by the type's fields.
    let blob: [UInt8]
    /// The type's fields without the leading type string: what a certificate embeds after its nonce.
    let fields: [UInt8]

    /// Longest authorized_keys line we read: a 16384-bit RSA key is about 2.8 KiB of base64.
    static let maximumLineLength = 8192
    /// RSA moduli under this many bits are refused (NIST SP 800-131A; OpenSSH 9 refuses under 1024).
    static let minimumRSABits = 2048
    /// OpenSSH's own upper bound on RSA moduli.
    static let maximumRSABits = 16384

    /// The certificate type that certifies this key.
    var certificateType: String { "\(type)-cert-v01@openssh.com" }

    /// "SHA256:<unpadded base64>", as `ssh-keygen -l` prints it.
    var fingerprint: String {
        "SHA256:" + Base64.encode(SHA256.hash(blob)).filter { $0 != "=" }
    }

    /// Hex SHA-256 of the blob: a storage-safe name for the key.
    var storageID: String { Hex.encode(SHA256.hash(blob)) }

    /// The authorized_keys line without a comment.
    var line: String { "\(type) \(Base64.encode(blob))" }

    /// Parses "type base64 [comment]". Refused with a message naming the problem: options before the
    /// type, more than one line, non-canonical base64, a type field that differs from the blob's,
    /// unknown or unsupported types (certificates, security keys, DSA), wrong lengths, trailing bytes,
    /// invalid EC points and RSA moduli under 2048 bits.
    init(authorizedKey text: String) throws {
        var line = Substring(text)
        while let last = line.last, last == "\n" || last == "\r" || last == " " || last == "\t" {
            line = line.dropLast()
        }
        while let first = line.first, first == " " || first == "\t" { line = line.dropFirst() }
        guard !line.isEmpty else { throw EngineError.invalid("public_key is empty") }
        guard line.utf8.count <= Self.maximumLineLength else {
            throw EngineError.invalid("public_key is \(line.utf8.count) bytes, more than \(Self.maximumLineLength)")
        }
        guard !line.contains(where: { $0 == "\n" || $0 == "\r" }) else {
            throw EngineError.invalid("public_key must be one line")
        }
        let parts = line.split(maxSplits: 2, whereSeparator: { $0 == " " || $0 == "\t" })
        let declared = String(parts[0])
        try Self.checkSupported(declared)
        guard parts.count >= 2 else { throw EngineError.invalid("public_key has a type but no key") }
        guard let blob = Base64.decode(parts[1]) else {
            throw EngineError.invalid("public_key's key is not canonical base64")
        }
        try self.init(blob: blob)
        guard type == declared else {
            throw EngineError.invalid("public_key says \(declared) but the key inside is \(type)")
        }
    }

    /// Parses a public key blob.
    init(blob: [UInt8]) throws {
        var reader = SSHReader(blob, what: "public_key")
        let type = String(decoding: try reader.string("key type"), as: UTF8.self)
        try Self.checkSupported(type)
        var fields = SSHWriter()
        switch type {
        case "ssh-ed25519":
            let point = try reader.string("Ed25519 key")
            guard point.count == 32 else {
                throw EngineError.invalid("public_key: an Ed25519 key is 32 bytes, not \(point.count)")
            }
            // The all-zero and identity encodings are small-order points: no one holds a key for them.
            guard point.contains(where: { $0 != 0 }), !(point.first == 1 && point.dropFirst().allSatisfy({ $0 == 0 })) else {
                throw EngineError.invalid("public_key: the Ed25519 key is a small-order point, not a real key")
            }
            fields.string(point)
        case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384":
            let curve = try reader.text("curve name")
            let expected = type == "ecdsa-sha2-nistp256" ? "nistp256" : "nistp384"
            guard curve == expected else {
                throw EngineError.invalid("public_key: curve \(curve) does not match key type \(type)")
            }
            let point = try reader.string("EC point")
            let algorithm: SignatureAlgorithm = curve == "nistp256" ? .ecdsaP256SHA256 : .ecdsaP384SHA384
            guard point.count == algorithm.rawPublicKeySize, point.first == 0x04 else {
                throw EngineError.invalid(
                    "public_key: a \(curve) point is \(algorithm.rawPublicKeySize) bytes starting 0x04, not \(point.count) bytes"
                )
            }
            do { _ = try VerifyingKey(rawRepresentation: point, algorithm: algorithm) } catch {
                throw EngineError.invalid("public_key: the \(curve) point is not on the curve")
            }
            fields.string(curve)
            fields.string(point)
        case "ssh-rsa":
            let e = try reader.mpint("RSA exponent")
            let n = try reader.mpint("RSA modulus")
            guard e.count <= 8, let last = e.last, last & 1 == 1, e.count > 1 || last >= 3 else {
                throw EngineError.invalid("public_key: the RSA exponent must be odd, at least 3 and at most 64 bits")
            }
            let bits = n.isEmpty ? 0 : (n.count - 1) * 8 + (8 - n[0].leadingZeroBitCount)
            guard bits >= Self.minimumRSABits else {
                throw EngineError.invalid(
                    "public_key: RSA key of \(bits) bits; at least \(Self.minimumRSABits) are required")
            }
            guard bits <= Self.maximumRSABits, let low = n.last, low & 1 == 1 else {
                throw EngineError.invalid("public_key: RSA modulus of \(bits) bits is not a valid modulus")
            }
            fields.mpint(unsigned: e)
            fields.mpint(unsigned: n)
        default:
            throw EngineError.invalid("public_key: unknown key type \(type)")
        }
        try reader.finish()
        self.type = type
        self.blob = blob
        self.fields = fields.bytes
    }

    private static func checkSupported(_ type: String) throws {
        let shown = String(type.prefix(64)).filter {
            $0.isASCII && !$0.isWhitespace && $0.asciiValue.map { $0 >= 0x21 && $0 < 0x7f } == true
        }
        if type.hasSuffix("-cert-v01@openssh.com") {
            throw EngineError.invalid("public_key is a certificate (\(shown)), not a public key")
        }
        if type.hasPrefix("sk-") {
            throw EngineError.invalid("public_key: security-key type \(shown) is not supported")
        }
        guard ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa"].contains(type) else {
            throw EngineError.invalid(
                "public_key: unknown key type \(shown); use ssh-ed25519, ecdsa-sha2-nistp256/384 or ssh-rsa (2048 bits or more)"
            )
        }
    }
}

/// The CA's key types. RSA is not offered: smaller keys and signatures, and no SHA-1 signature trap.
enum CAKeyType: String, Codable, Sendable {
    case ed25519
    case ecdsaP256 = "ecdsa-p256"
    case ecdsaP384 = "ecdsa-p384"

    var algorithm: SignatureAlgorithm {
        switch self {
        case .ed25519: .ed25519
        case .ecdsaP256: .ecdsaP256SHA256
        case .ecdsaP384: .ecdsaP384SHA384
        }
    }

    init?(_ algorithm: SignatureAlgorithm) {
        switch algorithm {
        case .ed25519: self = .ed25519
        case .ecdsaP256SHA256: self = .ecdsaP256
        case .ecdsaP384SHA384: self = .ecdsaP384
        }
    }

    /// The SSH key and signature type name.
    var sshName: String {
        switch self {
        case .ed25519: "ssh-ed25519"
        case .ecdsaP256: "ecdsa-sha2-nistp256"
        case .ecdsaP384: "ecdsa-sha2-nistp384"
        }
    }
}

/// The CA key: signs certificate bodies, KRL signatures. Held only while unsealed.
struct CAKey: Sendable {
    let type: CAKeyType
    let signer: SigningKey

    init(_ signer: SigningKey) throws {
        guard let type = CAKeyType(signer.algorithm) else { throw EngineError.invalid("unsupported CA key") }
        self.type = type
        self.signer = signer
    }

    /// The public key blob, as it appears in certificates' signature key and in the KRL.
    var publicBlob: [UInt8] {
        var w = SSHWriter()
        w.string(type.sshName)
        switch type {
        case .ed25519:
            w.string(signer.verifyingKey.rawRepresentation)
        case .ecdsaP256:
            w.string("nistp256")
            w.string(signer.verifyingKey.rawRepresentation)
        case .ecdsaP384:
            w.string("nistp384")
            w.string(signer.verifyingKey.rawRepresentation)
        }
        return w.bytes
    }

    /// The authorized_keys line for TrustedUserCAKeys and @cert-authority.
    var publicLine: String { "\(type.sshName) \(Base64.encode(publicBlob))" }

    /// An SSH signature blob over `data`: `string type, string signature`, where an ECDSA signature is
    /// `mpint r, mpint s` (RFC 5656 3.1.2) and Ed25519's is the 64 bytes R || S (RFC 8709 6).
    func sign(_ data: [UInt8]) throws -> [UInt8] {
        var w = SSHWriter()
        w.string(type.sshName)
        switch type {
        case .ed25519:
            w.string(try signer.signature(for: data))
        case .ecdsaP256, .ecdsaP384:
            let signature = try ECDSASignature(derRepresentation: try signer.signature(for: data, format: .der))
            var inner = SSHWriter()
            inner.mpint(unsigned: signature.r)
            inner.mpint(unsigned: signature.s)
            w.string(inner.bytes)
        }
        return w.bytes
    }
}
