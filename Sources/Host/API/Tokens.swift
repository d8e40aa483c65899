import FoundationEssentials
import MetacryptCrypto

/// The identity behind a request.
public struct Caller: Sendable, Equatable {
    public var name: String
    public var roles: [String]
    public var isAdmin: Bool

    public static let anonymous = Caller(name: "", roles: [], isAdmin: false)
}

/// Opaque bearer tokens, kept in the barrier only as their SHA-256 (a token is 256 random bits, so a
/// fast hash suffices: there is nothing to brute-force).
public final class TokenStore: Sendable {
    static let prefix = "sys/tokens/"
    static let tokenPrefix = "mct."

    struct Record: Codable {
        var name: String
        var roles: [String]
        var admin: Bool
        var createdAt: Int64
        /// Unix seconds; nil never expires.
        var expiresAt: Int64?

        enum CodingKeys: String, CodingKey {
            case name, roles, admin
            case createdAt = "created_at"
            case expiresAt = "expires_at"
        }
    }

    let barrier: Barrier
    let now: @Sendable () -> Int64

    init(barrier: Barrier, now: @escaping @Sendable () -> Int64) {
        self.barrier = barrier
        self.now = now
    }

    /// Creates a token; returns it. Only its hash is stored.
    public func create(for caller: Caller, ttlSeconds: Int64?) throws -> String {
        let token = Self.tokenPrefix + Base64URL.encode(randomBytes(32))
        let record = Record(name: caller.name, roles: caller.roles, admin: caller.isAdmin, createdAt: now(),
                            expiresAt: ttlSeconds.map { now() + $0 })
        try barrier.put(Self.path(token), value: JSON.encode(record), keyID: Barrier.systemKeyID)
        return token
    }

    /// The caller a token stands for, or nil if it is unknown or expired.
    public func lookup(_ token: String) throws -> Caller? {
        guard token.hasPrefix(Self.tokenPrefix), token.utf8.count < 200 else { return nil }
        guard let bytes = try barrier.get(Self.path(token)) else { return nil }
        guard let record = try? JSONDecoder().decode(Record.self, from: Data(bytes.unsafeArray())) else { return nil }
        if let expiry = record.expiresAt, expiry <= now() { return nil }
        return Caller(name: record.name, roles: record.roles, isAdmin: record.admin)
    }

    public func revoke(_ token: String) throws {
        try barrier.delete(Self.path(token))
    }

    static func path(_ token: String) -> String { prefix + Hex.encode(SHA256.hash(Array(token.utf8))) }
}

/// Unpadded base64url (RFC 4648 §5), for tokens and ids.
public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)]]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
