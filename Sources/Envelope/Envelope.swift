import MetacryptCrypto

// The user engine's envelope: one payload encrypted once under a random DEK, and the DEK wrapped for
// each recipient by ECDH with a fresh ephemeral key. The byte format is specified in docs/user.md,
// section "Envelope format"; this file and that section must change together.
//
// Shared by the engine (Plugins/User) and the client (`metacrypt user open-envelope`), so that the
// server and a user who keeps their own key parse and open envelopes with the same code.

/// Constants of the envelope format. Every persisted number is named here.
public enum EnvelopeFormat {
    /// "MCUE": Metacrypt User Envelope.
    public static let magic: [UInt8] = [0x4d, 0x43, 0x55, 0x45]
    /// The only version written and accepted today. Unknown versions are refused.
    public static let version1: UInt8 = 1
    /// Payload algorithm identifier: AES-256-GCM with a 12-byte nonce and a 16-byte tag.
    public static let payloadAES256GCM: UInt8 = 1
    /// Bytes before the AAD: magic (4), version (1), payload algorithm (1), recipient count (2), AAD length (4).
    public static let fixedHeaderSize = 12
    /// A format ceiling; a mount's configured limit (default 16) is usually far lower.
    public static let maximumRecipients = 1024
    /// Caller-supplied associated data: carried in clear, authenticated.
    public static let maximumAADSize = 4096
    /// Largest payload plaintext: it must fit, base64-encoded, in one request body.
    public static let maximumPlaintextSize = 512 * 1024
    /// Usernames as the host normalises them: 1–64 bytes.
    public static let maximumUsernameSize = 64
    /// Per-recipient HKDF salt. 32 bytes: the hash length of SHA-256, as RFC 5869 suggests.
    public static let saltSize = 32
    /// A wrapped DEK: nonce (12) || AES-256-GCM ciphertext of the 32-byte DEK (32) || tag (16).
    public static let wrappedKeySize = AESGCM.nonceSize + AESGCM.keySize + AESGCM.tagSize
    /// The DEK and every KEK are AES-256 keys.
    public static let keySize = AESGCM.keySize
    /// Prefix of every HKDF info string; names the format version so v2 keys can never collide with v1's.
    public static let wrapInfoLabel: [UInt8] = Array("metacrypt/user-envelope/v1/wrap".utf8)
}

/// The key agreement function of one recipient stanza.
public enum RecipientAlgorithm: UInt8, Sendable, CaseIterable {
    case x25519 = 1
    case p256 = 2

    /// As the API and key files name it.
    public var name: String { self == .x25519 ? "x25519" : "p256" }

    public init?(name: String) {
        switch name {
        case "x25519": self = .x25519
        case "p256": self = .p256
        default: return nil
        }
    }

    public init(_ algorithm: KeyAgreementAlgorithm) {
        self = algorithm == .x25519 ? .x25519 : .p256
    }

    public var keyAgreement: KeyAgreementAlgorithm { self == .x25519 ? .x25519 : .p256 }
    /// 32 bytes for X25519, 65 (uncompressed point) for P-256.
    public var publicKeySize: Int { keyAgreement.rawPublicKeySize }
}

/// Why an envelope could not be made or opened.
public enum EnvelopeError: Error, Equatable, CustomStringConvertible {
    /// Any failure to open: malformed bytes, unknown version, not a recipient, wrong key, a modified byte.
    /// Deliberately one case with one message, so that no caller learns which check failed.
    case cannotOpen
    /// A mistake in what the caller asked to seal, with the offending value.
    case invalid(String)

    public static let cannotOpenMessage = "the envelope cannot be opened"

    public var description: String {
        switch self {
        case .cannotOpen: Self.cannotOpenMessage
        case .invalid(let reason): reason
        }
    }
}

/// One recipient to seal for: a username, the version of their key and its public half.
public struct EnvelopeRecipient: Sendable {
    public let username: String
    public let keyVersion: UInt32
    public let publicKey: KeyAgreementPublicKey

    public init(username: String, keyVersion: UInt32, publicKey: KeyAgreementPublicKey) {
        self.username = username
        self.keyVersion = keyVersion
        self.publicKey = publicKey
    }
}

/// One parsed recipient stanza.
public struct RecipientStanza: Sendable {
    public let algorithm: RecipientAlgorithm
    public let username: String
    public let keyVersion: UInt32
    public let ephemeralPublicKey: [UInt8]
    public let salt: [UInt8]
    public let wrappedKey: [UInt8]
    /// The stanza's bytes from its algorithm byte through its salt: the wrap's associated data.
    public let prefix: [UInt8]
}

/// A parsed envelope. Parsing checks the structure only; ``open(username:privateKey:)`` checks the rest.
public struct Envelope: Sendable {
    public let aad: [UInt8]
    public let stanzas: [RecipientStanza]
    /// Every byte before the payload: the payload's associated data, so the header, the AAD and every
    /// stanza are authenticated by the payload tag.
    public let header: [UInt8]
    /// nonce (12) || ciphertext || tag (16).
    public let payload: [UInt8]

    /// True if `name` is a valid username: `[a-z0-9][a-z0-9._-]{0,63}`, the host's normalised form.
    public static func isValidUsername(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...EnvelopeFormat.maximumUsernameSize).contains(bytes.count) else { return false }
        func ok(_ c: UInt8, first: Bool) -> Bool {
            (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || (!first && (c == 0x2e || c == 0x5f || c == 0x2d))
        }
        return bytes.enumerated().allSatisfy { ok($0.element, first: $0.offset == 0) }
    }

    // MARK: Parsing

    /// Parses an envelope strictly: every length checked before it is read, nothing left over, no
    /// duplicate recipient. Any problem is ``EnvelopeError/cannotOpen``.
    public init(parsing bytes: [UInt8]) throws(EnvelopeError) {
        var reader = Reader(bytes)
        guard let magic = reader.take(4), magic == EnvelopeFormat.magic,
              let version = reader.byte(), version == EnvelopeFormat.version1,
              let payloadAlgorithm = reader.byte(), payloadAlgorithm == EnvelopeFormat.payloadAES256GCM,
              let count = reader.uint16(), count >= 1, Int(count) <= EnvelopeFormat.maximumRecipients,
              let aadLength = reader.uint32(), aadLength <= EnvelopeFormat.maximumAADSize,
              let aad = reader.take(Int(aadLength))
        else { throw .cannotOpen }

        var stanzas: [RecipientStanza] = []
        var seen = Set<String>()
        for _ in 0..<count {
            let start = reader.offset
            guard let algorithmByte = reader.byte(), let algorithm = RecipientAlgorithm(rawValue: algorithmByte),
                  let nameLength = reader.byte(), let nameBytes = reader.take(Int(nameLength)),
                  case let username = String(decoding: nameBytes, as: UTF8.self), Self.isValidUsername(username),
                  let keyVersion = reader.uint32(), keyVersion >= 1,
                  let ephemeral = reader.take(algorithm.publicKeySize),
                  let salt = reader.take(EnvelopeFormat.saltSize)
            else { throw .cannotOpen }
            let prefix = Array(bytes[start..<reader.offset])
            guard let wrapped = reader.take(EnvelopeFormat.wrappedKeySize), seen.insert(username).inserted
            else { throw .cannotOpen }
            stanzas.append(RecipientStanza(
                algorithm: algorithm, username: username, keyVersion: keyVersion, ephemeralPublicKey: ephemeral,
                salt: salt, wrappedKey: wrapped, prefix: prefix))
        }

        let header = Array(bytes[0..<reader.offset])
        let payload = reader.rest()
        guard payload.count >= AESGCM.overhead,
              payload.count - AESGCM.overhead <= EnvelopeFormat.maximumPlaintextSize
        else { throw .cannotOpen }
        self.aad = aad
        self.stanzas = stanzas
        self.header = header
        self.payload = payload
    }

    /// The recipients, in envelope order.
    public var recipients: [(username: String, keyVersion: UInt32)] {
        stanzas.map { ($0.username, $0.keyVersion) }
    }

    // MARK: Opening

    /// Unwraps the DEK with `privateKey` for the stanza addressed to `username` and decrypts the payload.
    ///
    /// - Returns: the plaintext, in a self-wiping buffer.
    /// - Throws: ``EnvelopeError/cannotOpen`` for every failure, whatever the cause.
    public func open(username: String, privateKey: KeyAgreementPrivateKey) throws(EnvelopeError) -> SecureBytes {
        do {
            guard let stanza = stanzas.first(where: { $0.username == username }),
                  stanza.algorithm == RecipientAlgorithm(privateKey.algorithm)
            else { throw EnvelopeError.cannotOpen }
            let ephemeral = try KeyAgreementPublicKey(
                rawRepresentation: stanza.ephemeralPublicKey, algorithm: stanza.algorithm.keyAgreement)
            let shared = try privateKey.sharedSecret(with: ephemeral)
            let info = Self.wrapInfo(
                algorithm: stanza.algorithm, username: username, keyVersion: stanza.keyVersion,
                ephemeralPublicKey: stanza.ephemeralPublicKey, recipientPublicKey: privateKey.publicKey.rawRepresentation)
            let kek = try HKDF.deriveKey(
                inputKeyMaterial: shared, salt: stanza.salt, info: info, outputCount: EnvelopeFormat.keySize)
            let dek = try AESGCM.open(stanza.wrappedKey, key: kek, aad: stanza.prefix)
            guard dek.count == EnvelopeFormat.keySize else { throw EnvelopeError.cannotOpen }
            return try AESGCM.open(payload, key: dek, aad: header)
        } catch {
            // `shared`, `kek` and `dek` are SecureBytes: wiped as they go out of scope, on every path.
            throw .cannotOpen
        }
    }

    // MARK: Sealing

    /// Seals `plaintext` for `recipients`, binding `aad`.
    ///
    /// - Throws: ``EnvelopeError/invalid(_:)`` naming the offending value (count, size, duplicate, name).
    public static func seal(
        plaintext: SecureBytes, aad: [UInt8], recipients: [EnvelopeRecipient]
    ) throws(EnvelopeError) -> [UInt8] {
        guard !recipients.isEmpty else { throw .invalid("an envelope needs at least one recipient") }
        guard recipients.count <= EnvelopeFormat.maximumRecipients else {
            throw .invalid("\(recipients.count) recipients exceed the format's \(EnvelopeFormat.maximumRecipients)")
        }
        guard aad.count <= EnvelopeFormat.maximumAADSize else {
            throw .invalid("aad is \(aad.count) bytes, more than \(EnvelopeFormat.maximumAADSize)")
        }
        guard plaintext.count <= EnvelopeFormat.maximumPlaintextSize else {
            throw .invalid("plaintext is \(plaintext.count) bytes, more than \(EnvelopeFormat.maximumPlaintextSize)")
        }
        var seen = Set<String>()
        for recipient in recipients {
            guard isValidUsername(recipient.username) else { throw .invalid("invalid recipient name \(recipient.username)") }
            guard recipient.keyVersion >= 1 else { throw .invalid("key version 0 for \(recipient.username)") }
            guard seen.insert(recipient.username).inserted else {
                throw .invalid("recipient \(recipient.username) is listed twice")
            }
        }

        do {
            // A fresh DEK per envelope: one payload, one key, so a random nonce can never repeat under it.
            let dek = SecureBytes(randomCount: EnvelopeFormat.keySize)
            var out = EnvelopeFormat.magic
            out.append(EnvelopeFormat.version1)
            out.append(EnvelopeFormat.payloadAES256GCM)
            appendUInt16(&out, UInt16(recipients.count))
            appendUInt32(&out, UInt32(aad.count))
            out += aad

            for recipient in recipients {
                let algorithm = RecipientAlgorithm(recipient.publicKey.algorithm)
                // A fresh ephemeral key per recipient: no two stanzas share a Diffie-Hellman output.
                // XXX: the ephemeral scalar lives only inside OpenSSL's key object, which clears it when freed
                // at the end of this iteration; it cannot be wiped sooner.
                let ephemeral = try KeyAgreementPrivateKey.generate(algorithm.keyAgreement)
                let shared = try ephemeral.sharedSecret(with: recipient.publicKey)
                let ephemeralPublic = ephemeral.publicKey.rawRepresentation
                let salt = randomBytes(EnvelopeFormat.saltSize)
                let info = wrapInfo(
                    algorithm: algorithm, username: recipient.username, keyVersion: recipient.keyVersion,
                    ephemeralPublicKey: ephemeralPublic, recipientPublicKey: recipient.publicKey.rawRepresentation)
                let kek = try HKDF.deriveKey(
                    inputKeyMaterial: shared, salt: salt, info: info, outputCount: EnvelopeFormat.keySize)

                var prefix: [UInt8] = [algorithm.rawValue, UInt8(recipient.username.utf8.count)]
                prefix += Array(recipient.username.utf8)
                appendUInt32(&prefix, recipient.keyVersion)
                prefix += ephemeralPublic
                prefix += salt
                let wrapped = try AESGCM.seal(dek, key: kek, aad: prefix)
                out += prefix
                out += wrapped
            }

            out += try AESGCM.seal(plaintext, key: dek, aad: out)
            return out
        } catch {
            throw .invalid("sealing failed: \(error)")
        }
    }

    /// The HKDF info string: label || algorithm || len(username) || username || key version (u32 BE) ||
    /// ephemeral public key || recipient public key. Public key lengths are fixed by the algorithm, the
    /// username is length-prefixed, so the encoding is unambiguous.
    public static func wrapInfo(
        algorithm: RecipientAlgorithm, username: String, keyVersion: UInt32,
        ephemeralPublicKey: [UInt8], recipientPublicKey: [UInt8]
    ) -> [UInt8] {
        var info = EnvelopeFormat.wrapInfoLabel
        info.append(algorithm.rawValue)
        info.append(UInt8(truncatingIfNeeded: username.utf8.count))
        info += Array(username.utf8)
        appendUInt32(&info, keyVersion)
        info += ephemeralPublicKey
        info += recipientPublicKey
        return info
    }
}

private func appendUInt16(_ out: inout [UInt8], _ value: UInt16) {
    out += [UInt8(value >> 8), UInt8(value & 0xff)]
}

private func appendUInt32(_ out: inout [UInt8], _ value: UInt32) {
    out += [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
}

/// A bounds-checked cursor: every read returns nil rather than run past the end.
private struct Reader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func take(_ count: Int) -> [UInt8]? {
        guard count >= 0, count <= bytes.count - offset else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func byte() -> UInt8? { take(1)?.first }

    mutating func uint16() -> UInt16? {
        guard let b = take(2) else { return nil }
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    mutating func uint32() -> UInt32? {
        guard let b = take(4) else { return nil }
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }

    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }
}
