import MetacryptJSON
import EngineKit
import MetacryptCrypto

/// The text form of transit ciphertexts, signatures and MACs: `metacrypt:v<N>:<base64>` (docs/transit.md §3).
///
/// The parser is strict (audit #59): exactly three `:`-separated parts; the literal `metacrypt`; `v`
/// followed by a positive decimal version with no sign, no leading zero and at most 2^32 - 1; canonical
/// standard base64 that is not empty. Every refusal is an `invalid` error (400) saying what is wrong.
enum Envelope {
    static let prefix = "metacrypt"
    /// Longest envelope accepted: base64 of 16 MiB (the largest storable value) plus the header.
    static let maximumLength = 22_369_700

    static func format(version: UInt32, payload: some ByteView) -> String {
        "\(prefix):v\(version):\(Base64.encode(payload))"
    }

    /// The version and decoded payload of `text`; `what` names it in messages ("ciphertext", "signature").
    static func parse(_ text: String, what: String) throws -> (version: UInt32, payload: [UInt8]) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { throw EngineError.invalid("\(what) is empty") }
        guard bytes.count <= maximumLength else {
            throw EngineError.invalid("\(what) is \(bytes.count) bytes, longer than any valid one")
        }

        let parts = bytes.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw EngineError.invalid(
                "\(what) must have the form metacrypt:v<N>:<base64>; it has \(parts.count) colon-separated parts, not 3"
            )
        }
        guard parts[0].elementsEqual(prefix.utf8) else {
            throw EngineError.invalid("\(what) must start with \"metacrypt:\"")
        }

        let version = try parseVersion(parts[1], what: what)

        guard !parts[2].isEmpty else { throw EngineError.invalid("\(what) has no data after the version") }
        guard let payload = Base64.decode(String(decoding: parts[2], as: UTF8.self)) else {
            throw EngineError.invalid(
                "\(what) data is not canonical standard base64 (RFC 4648 alphabet with + and /, padded with =, "
                    + "no whitespace)")
        }
        return (version, payload)
    }

    /// `v` then 1–10 ASCII digits, the first not `0`, with a value that fits in 32 bits.
    static func parseVersion(_ part: ArraySlice<UInt8>, what: String) throws -> UInt32 {
        guard part.first == UInt8(ascii: "v") else {
            throw EngineError.invalid("\(what) version must be \"v\" followed by a number, as in metacrypt:v1:...")
        }
        let digits = part.dropFirst()
        guard !digits.isEmpty else { throw EngineError.invalid("\(what) has no version number after \"v\"") }
        guard digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw EngineError.invalid(
                "\(what) version \(quoted(part)) is not a plain decimal number (no sign, spaces or other characters)")
        }
        guard digits.first != UInt8(ascii: "0") else {
            throw EngineError.invalid(
                digits.count == 1
                    ? "\(what) version v0 is not valid: versions start at 1"
                    : "\(what) version \(quoted(part)) has a leading zero")
        }
        guard digits.count <= 10, let value = UInt64(String(decoding: digits, as: UTF8.self)), value <= UInt32.max
        else {
            throw EngineError.invalid("\(what) version is larger than \(UInt32.max)")
        }
        return UInt32(value)
    }

    /// A short, printable rendering of a header part for messages.
    private static func quoted(_ part: ArraySlice<UInt8>) -> String {
        let shown = part.prefix(16).map { $0 >= 0x21 && $0 <= 0x7e ? Character(UnicodeScalar($0)) : "?" }
        return "\"" + String(shown) + (part.count > 16 ? "...\"" : "\"")
    }
}

/// The associated data bound into every transit AEAD ciphertext (docs/transit.md §3.2):
/// `metacrypt-transit:<key name>:v<version>:` followed by the context bytes (empty without a context).
///
/// Binding the key name and version makes every byte of the envelope authenticated: a ciphertext relabelled
/// with another version, or replayed under a key that shares material (an import, a restore), fails.
enum AssociatedData {
    static let label = "metacrypt-transit"

    static func make(key: String, version: UInt32, context: [UInt8]) -> [UInt8] {
        Array("\(label):\(key):v\(version):".utf8) + context
    }
}
