import EngineKit
import MetacryptCrypto

// The three OpenSSH formats this engine writes: certificates (PROTOCOL.certkeys), key revocation lists
// (PROTOCOL.krl) and detached signatures (PROTOCOL.sshsig). docs/sshca.md has their field tables.

/// Certificate types (PROTOCOL.certkeys: SSH2_CERT_TYPE_USER / _HOST).
enum CertificateType: UInt32, Sendable {
    case user = 1
    case host = 2

    var name: String { self == .user ? "user" : "host" }
}

/// What goes into one certificate. Options and extensions map a name to a value; nil is a flag
/// (empty data), a string is encoded as a nested string, as OpenSSH does.
struct CertificateTemplate {
    var subject: SSHPublicKey
    var serial: UInt64
    var type: CertificateType
    var keyID: String
    var principals: [String]
    var validAfter: UInt64
    var validBefore: UInt64
    var criticalOptions: [String: String?]
    var extensions: [String: String?]

    /// Signs the certificate and returns its blob.
    func sign(with ca: CAKey) throws -> [UInt8] {
        var w = SSHWriter()
        w.string(subject.certificateType)
        // A random nonce makes the signed data unpredictable to the requester (hash-collision defence).
        w.string(randomBytes(32))
        w.raw(subject.fields)
        w.uint64(serial)
        w.uint32(type.rawValue)
        w.string(keyID)
        var packed = SSHWriter()
        for principal in principals { packed.string(principal) }
        w.string(packed.bytes)
        w.uint64(validAfter)
        w.uint64(validBefore)
        w.string(Self.options(criticalOptions))
        w.string(Self.options(extensions))
        w.string([UInt8]())  // reserved
        w.string(ca.publicBlob)
        let signature = try ca.sign(w.bytes)
        w.string(signature)
        return w.bytes
    }

    /// Options in lexical order of their names, each once (PROTOCOL.certkeys requires both).
    static func options(_ options: [String: String?]) -> [UInt8] {
        var w = SSHWriter()
        for name in options.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            w.string(name)
            if let value = options[name] ?? nil {
                var inner = SSHWriter()
                inner.string(value)
                w.string(inner.bytes)
            } else {
                w.string([UInt8]())
            }
        }
        return w.bytes
    }
}

/// A key revocation list in OpenSSH's binary format, without a signature section (OpenSSH 9.4 and later
/// refuse KRLs that carry one; ours is signed by a detached SSHSIG instead).
enum KRL {
    static let magic: UInt64 = 0x5353_484B_524C_0A00  // "SSHKRL\n\0"
    static let formatVersion: UInt32 = 1
    static let sectionCertificates: UInt8 = 1
    static let sectionExplicitKey: UInt8 = 2
    static let certSerialList: UInt8 = 0x20
    static let certSerialRange: UInt8 = 0x21
    /// Runs of at least this many consecutive serials are written as one range (16 bytes) rather than
    /// as list entries (8 bytes each).
    static let minimumRange = 3

    /// Encodes a KRL revoking `serials` of certificates signed by `caBlob` and every certificate of the
    /// plain keys in `keys`.
    static func encode(version: UInt64, generated: UInt64, caBlob: [UInt8], serials: [UInt64], keys: [[UInt8]],
                       comment: String) -> [UInt8] {
        var w = SSHWriter()
        w.uint64(magic)
        w.uint32(formatVersion)
        w.uint64(version)
        w.uint64(generated)
        w.uint64(0)  // flags
        w.string([UInt8]())  // reserved
        w.string(comment)

        let sorted = Array(Set(serials.filter { $0 != 0 })).sorted()
        if !sorted.isEmpty {
            var section = SSHWriter()
            section.string(caBlob)
            section.string([UInt8]())  // reserved
            var singles = SSHWriter()
            var i = 0
            while i < sorted.count {
                var j = i
                while j + 1 < sorted.count, sorted[j + 1] == sorted[j] + 1 { j += 1 }
                if j - i + 1 >= minimumRange {
                    var range = SSHWriter()
                    range.uint64(sorted[i])
                    range.uint64(sorted[j])
                    section.byte(certSerialRange)
                    section.string(range.bytes)
                } else {
                    for k in i...j { singles.uint64(sorted[k]) }
                }
                i = j + 1
            }
            if !singles.bytes.isEmpty {
                section.byte(certSerialList)
                section.string(singles.bytes)
            }
            w.byte(sectionCertificates)
            w.string(section.bytes)
        }

        let blobs = keys.sorted { $0.lexicographicallyPrecedes($1) }
        if !blobs.isEmpty {
            var section = SSHWriter()
            for blob in blobs { section.string(blob) }
            w.byte(sectionExplicitKey)
            w.string(section.bytes)
        }
        return w.bytes
    }
}

/// Detached signatures in OpenSSH's SSHSIG format, armored as `ssh-keygen -Y sign` writes them.
enum SSHSIG {
    static let preamble = Array("SSHSIG".utf8)
    static let version: UInt32 = 1
    /// SHA-256 is one of the two hashes PROTOCOL.sshsig allows (with SHA-512).
    static let hashAlgorithm = "sha256"

    static func sign(_ message: [UInt8], namespace: String, with ca: CAKey) throws -> String {
        var signed = SSHWriter()
        signed.raw(preamble)
        signed.string(namespace)
        signed.string([UInt8]())  // reserved
        signed.string(hashAlgorithm)
        signed.string(SHA256.hash(message))
        let signature = try ca.sign(signed.bytes)

        var blob = SSHWriter()
        blob.raw(preamble)
        blob.uint32(version)
        blob.string(ca.publicBlob)
        blob.string(namespace)
        blob.string([UInt8]())  // reserved
        blob.string(hashAlgorithm)
        blob.string(signature)

        let text = Array(Base64.encode(blob.bytes).utf8)
        var lines: [String] = ["-----BEGIN SSH SIGNATURE-----"]
        var start = 0
        while start < text.count {
            let end = min(start + 70, text.count)
            lines.append(String(decoding: text[start..<end], as: UTF8.self))
            start = end
        }
        lines.append("-----END SSH SIGNATURE-----")
        return lines.joined(separator: "\n") + "\n"
    }
}
