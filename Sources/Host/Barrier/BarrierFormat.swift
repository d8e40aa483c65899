import MetacryptCrypto

/// The persisted formats of the barrier. docs/barrier.md specifies them.
enum BarrierFormat {
    /// seal_config.format: Argon2id-derived KWK, AES-256-GCM sealed MEK.
    static let sealConfigV1: UInt32 = 1
    /// The first byte of every barrier entry.
    static let entryV1: UInt8 = 1

    static let saltSize = 16
    /// Key ids are "system" or "mount:<name>" with names of up to 64 bytes.
    static let maxKeyIDLength = 96

    /// Binds the sealed MEK to its purpose, so no other ciphertext can stand in for it (audit #42).
    static func mekAAD(format: UInt32) -> [UInt8] {
        Array("metacrypt/mek".utf8) + [0] + bigEndian(format)
    }

    /// Binds a wrapped DEK to its key id and version: a DEK row copied to another id fails to unwrap.
    static func dekAAD(keyID: String, version: UInt32) -> [UInt8] {
        Array("metacrypt/dek".utf8) + [0] + Array(keyID.utf8) + [0] + bigEndian(version)
    }

    /// The entry header: format, key id, key version.
    static func entryHeader(keyID: String, version: UInt32) -> [UInt8] {
        let id = Array(keyID.utf8)
        precondition(!id.isEmpty && id.count <= maxKeyIDLength, "key id length")
        return [entryV1, UInt8(id.count)] + id + bigEndian(version)
    }

    /// Binds an entry's ciphertext to its header and its path: a record moved to another path, or with
    /// its header edited, fails to open.
    static func entryAAD(header: [UInt8], path: String) -> [UInt8] {
        Array("metacrypt/entry".utf8) + [0] + header + Array(path.utf8)
    }

    /// Splits a stored value into header fields and the AEAD box. Nil if malformed or of unknown version.
    static func parseEntry(_ value: [UInt8]) -> (keyID: String, version: UInt32, headerLength: Int)? {
        guard value.count >= 2, value[0] == entryV1 else { return nil }
        let idLength = Int(value[1])
        let headerLength = 2 + idLength + 4
        guard idLength > 0, idLength <= maxKeyIDLength, value.count >= headerLength + AESGCM.overhead else {
            return nil
        }
        let id = value[2..<(2 + idLength)]
        guard id.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
        var version: UInt32 = 0
        for b in value[(2 + idLength)..<headerLength] { version = version << 8 | UInt32(b) }
        return (String(decoding: id, as: UTF8.self), version, headerLength)
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
    }
}
