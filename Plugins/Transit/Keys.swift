import MetacryptJSON
import EngineABI
import EngineKit
import FoundationEssentials
import MetacryptCrypto

/// What a transit key does; fixed when the key is created.
enum KeyType: String, CaseIterable, Sendable {
    case aes256GCM = "aes256-gcm"
    case xchacha20Poly1305 = "xchacha20-poly1305"
    case ed25519 = "ed25519"
    case ecdsaP256 = "ecdsa-p256"
    case ecdsaP384 = "ecdsa-p384"
    case hmacSHA256 = "hmac-sha256"
    case hmacSHA512 = "hmac-sha512"

    static let aeadTypes = "aes256-gcm or xchacha20-poly1305"
    static let signingTypes = "ed25519, ecdsa-p256 or ecdsa-p384"
    static let hmacTypes = "hmac-sha256 or hmac-sha512"

    var isAEAD: Bool { self == .aes256GCM || self == .xchacha20Poly1305 }
    var isHMAC: Bool { hmacAlgorithm != nil }

    var signatureAlgorithm: SignatureAlgorithm? {
        switch self {
        case .ed25519: .ed25519
        case .ecdsaP256: .ecdsaP256SHA256
        case .ecdsaP384: .ecdsaP384SHA384
        default: nil
        }
    }

    var hmacAlgorithm: HMAC.Algorithm? {
        switch self {
        case .hmacSHA256: .sha256
        case .hmacSHA512: .sha512
        default: nil
        }
    }

    /// Length of the stored material: the AEAD key, the HMAC key (its hash's output size, RFC 2104's
    /// recommendation), the Ed25519 seed or the EC scalar.
    var materialSize: Int {
        switch self {
        case .aes256GCM: AESGCM.keySize
        case .xchacha20Poly1305: XChaCha20Poly1305.keySize
        case .hmacSHA256: 32
        case .hmacSHA512: 64
        case .ed25519, .ecdsaP256, .ecdsaP384: signatureAlgorithm?.rawPrivateKeySize ?? 0
        }
    }
}

/// One version of a key: its material and, for signing keys, the OpenSSL key built from it.
final class KeyVersion: Sendable {
    let version: UInt32
    let createdAt: String
    let material: SecureBytes
    /// XXX: OpenSSL keeps its own copy of the private key inside the EVP_PKEY; it is cleared when the key
    /// is freed (when the last ring holding this version goes, at seal at the latest), not by our wipe.
    let signingKey: SigningKey?
    let publicKeyPEM: String?

    init(version: UInt32, createdAt: String, material: SecureBytes, type: KeyType) throws {
        guard material.count == type.materialSize else {
            throw EngineError(
                code: MC_ERR_INTERNAL,
                "stored \(type.rawValue) key version \(version) has "
                    + "\(material.count) bytes of material, not \(type.materialSize)")
        }
        self.version = version
        self.createdAt = createdAt
        self.material = material
        if let algorithm = type.signatureAlgorithm {
            let key = try SigningKey(rawRepresentation: material, algorithm: algorithm)
            signingKey = key
            publicKeyPEM = try key.verifyingKey.spkiPEM()
        } else {
            signingKey = nil
            publicKeyPEM = nil
        }
    }

    /// A new random version.
    static func generate(_ version: UInt32, type: KeyType, now: String) throws -> KeyVersion {
        let material: SecureBytes
        if let algorithm = type.signatureAlgorithm {
            material = try SigningKey.generate(algorithm).rawRepresentation()
        } else {
            material = SecureBytes(randomCount: type.materialSize)
        }
        return try KeyVersion(version: version, createdAt: now, material: material, type: type)
    }
}

/// A key with all its available versions: an immutable snapshot. Requests take one for the length of their
/// work; changes build a new one and swap it in, so a request never sees a half-changed key.
struct KeyRing: Sendable {
    let name: String
    let type: KeyType
    let exportable: Bool
    let allowDeletion: Bool
    let createdAt: String
    var latestVersion: UInt32
    var minDecryptionVersion: UInt32
    var minEncryptionVersion: UInt32
    var minAvailableVersion: UInt32
    var versions: [UInt32: KeyVersion]

    /// The version used to encrypt, sign or MAC: the latest, or `requested` if it is allowed.
    func encryptionVersion(_ requested: UInt32?, place: String = "") throws -> KeyVersion {
        guard let requested else { return try available(latestVersion) }
        let floor = max(minEncryptionVersion, minDecryptionVersion)
        guard requested >= floor, requested <= latestVersion else {
            throw EngineError.invalid(
                "\(place)key_version \(requested) of key \(name) cannot be used: allowed versions are "
                    + "\(floor) to \(latestVersion)")
        }
        return try available(requested)
    }

    /// The version a ciphertext, signature or MAC names, if it may still be used to decrypt or verify.
    func decryptionVersion(_ version: UInt32, what: String) throws -> KeyVersion {
        guard version <= latestVersion else {
            throw EngineError.invalid(
                "\(what) names version \(version) of key \(name), whose latest is \(latestVersion)")
        }
        guard version >= minDecryptionVersion else {
            throw EngineError.invalid(
                "\(what) names version \(version) of key \(name), below its min_decryption_version \(minDecryptionVersion)"
            )
        }
        return try available(version)
    }

    private func available(_ version: UInt32) throws -> KeyVersion {
        guard let key = versions[version] else {
            throw EngineError.invalid("version \(version) of key \(name) has been trimmed")
        }
        return key
    }
}

// MARK: - The stored record

/// A key as stored in the mount (the host encrypts it with the mount's DEK and binds it to its path):
///
///     "MCTK" | format (1 byte) | metadata length (u32 BE) | metadata JSON
///            | version count (u32 BE) | { version (u32 BE) | length (u32 BE) | material } ...
///
/// The metadata holds no secret; the material is read straight into self-wiping buffers, never through
/// JSON strings that could not be wiped.
enum KeyRecord {
    static let magic: [UInt8] = Array("MCTK".utf8)
    static let formatVersion: UInt8 = 1

    struct Metadata: Codable {
        struct Version: Codable {
            var version: UInt32
            var createdAt: String
            enum CodingKeys: String, CodingKey {
                case version
                case createdAt = "created_at"
            }
        }

        var name: String
        var type: String
        var exportable: Bool
        var allowDeletion: Bool
        var createdAt: String
        var latestVersion: UInt32
        var minDecryptionVersion: UInt32
        var minEncryptionVersion: UInt32
        var minAvailableVersion: UInt32
        var versions: [Version]

        enum CodingKeys: String, CodingKey {
            case name, type, exportable, versions
            case allowDeletion = "allow_deletion"
            case createdAt = "created_at"
            case latestVersion = "latest_version"
            case minDecryptionVersion = "min_decryption_version"
            case minEncryptionVersion = "min_encryption_version"
            case minAvailableVersion = "min_available_version"
        }
    }

    static func encode(_ ring: KeyRing) throws -> SecureBytes {
        let ordered = ring.versions.values.sorted { $0.version < $1.version }
        let metadata = Metadata(
            name: ring.name, type: ring.type.rawValue, exportable: ring.exportable, allowDeletion: ring.allowDeletion,
            createdAt: ring.createdAt, latestVersion: ring.latestVersion,
            minDecryptionVersion: ring.minDecryptionVersion, minEncryptionVersion: ring.minEncryptionVersion,
            minAvailableVersion: ring.minAvailableVersion,
            versions: ordered.map { Metadata.Version(version: $0.version, createdAt: $0.createdAt) })
        let json = Array(try JSONEncoder().encode(metadata))

        let total = magic.count + 1 + 4 + json.count + 4 + ordered.reduce(0) { $0 + 8 + $1.material.count }
        var out = SecureBytes(zeroes: total)
        out.withUnsafeMutableBytes { buffer in
            var offset = 0
            func put(_ bytes: UnsafeRawBufferPointer) {
                if let base = bytes.baseAddress, bytes.count > 0 {
                    (buffer.baseAddress! + offset).copyMemory(from: base, byteCount: bytes.count)
                }
                offset += bytes.count
            }
            func putU32(_ value: UInt32) { withUnsafeBytes(of: value.bigEndian) { put($0) } }
            magic.withUnsafeBytes { put($0) }
            withUnsafeBytes(of: formatVersion) { put($0) }
            putU32(UInt32(json.count))
            json.withUnsafeBytes { put($0) }
            putU32(UInt32(ordered.count))
            for version in ordered {
                putU32(version.version)
                putU32(UInt32(version.material.count))
                version.material.withUnsafeBytes { put($0) }
            }
            precondition(offset == total, "key record size mismatch")
        }
        return out
    }

    /// Parses a stored record. Damage is an internal error (500): storage is ours, not the caller's.
    static func decode(_ record: SecureBytes, name: String) throws -> KeyRing {
        func damaged(_ why: String) -> EngineError {
            EngineError(code: MC_ERR_INTERNAL, "stored key \(name) is damaged: \(why)")
        }
        // Parse the framing, copying each version's material straight into a self-wiping buffer.
        let (metadataBytes, materials): ([UInt8], [(UInt32, SecureBytes)]) = try record.withUnsafeBytes { raw in
            var offset = 0
            func take(_ count: Int) throws -> UnsafeRawBufferPointer {
                guard count >= 0, raw.count - offset >= count else { throw damaged("truncated at byte \(offset)") }
                defer { offset += count }
                return UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + count)])
            }
            func u32() throws -> UInt32 {
                try take(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            }
            guard Array(try take(magic.count)) == magic else { throw damaged("bad magic") }
            let format = try take(1)[0]
            guard format == formatVersion else { throw damaged("unknown format version \(format)") }
            let metadata = Array(try take(Int(try u32())))
            let count = try u32()
            guard count <= 1_000_000 else { throw damaged("\(count) versions") }
            var materials: [(UInt32, SecureBytes)] = []
            for _ in 0..<count {
                let version = try u32()
                let bytes = try take(Int(try u32()))
                var material = SecureBytes(zeroes: bytes.count)
                material.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
                materials.append((version, material))
            }
            guard offset == raw.count else { throw damaged("\(raw.count - offset) bytes after the last version") }
            return (metadata, materials)
        }

        let metadata: Metadata
        do {
            metadata = try JSONDecoder().decode(Metadata.self, from: Data(metadataBytes))
        } catch {
            throw damaged("metadata is not valid JSON")
        }
        guard metadata.name == name, let type = KeyType(rawValue: metadata.type) else {
            throw damaged("metadata names key \(metadata.name) of type \(metadata.type)")
        }
        guard metadata.minAvailableVersion >= 1, metadata.latestVersion >= metadata.minAvailableVersion,
            metadata.latestVersion - metadata.minAvailableVersion < UInt32(materials.count),
            metadata.minDecryptionVersion >= metadata.minAvailableVersion,
            metadata.minDecryptionVersion <= metadata.latestVersion
        else { throw damaged("inconsistent versions") }
        let expected = Array(metadata.minAvailableVersion...metadata.latestVersion)
        guard metadata.versions.map(\.version) == expected, materials.map(\.0) == expected else {
            throw damaged("inconsistent versions")
        }

        var versions: [UInt32: KeyVersion] = [:]
        for (entry, (number, material)) in zip(metadata.versions, materials) {
            versions[number] = try KeyVersion(
                version: number, createdAt: entry.createdAt, material: material, type: type)
        }
        return KeyRing(
            name: name, type: type, exportable: metadata.exportable, allowDeletion: metadata.allowDeletion,
            createdAt: metadata.createdAt, latestVersion: metadata.latestVersion,
            minDecryptionVersion: metadata.minDecryptionVersion, minEncryptionVersion: metadata.minEncryptionVersion,
            minAvailableVersion: metadata.minAvailableVersion, versions: versions)
    }
}
