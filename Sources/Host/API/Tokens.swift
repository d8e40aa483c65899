import FoundationEssentials
import MetacryptCrypto
import Synchronization

/// The identity behind a request.
public struct Caller: Sendable, Equatable {
    public var name: String
    public var roles: [String]
    public var isAdmin: Bool

    public init(name: String, roles: [String], isAdmin: Bool) {
        self.name = name
        self.roles = roles
        self.isAdmin = isAdmin
    }

    public static let anonymous = Caller(name: "", roles: [], isAdmin: false)
}

/// Opaque bearer tokens for local accounts, kept in the barrier only as their SHA-256 (a token is 256
/// random bits, so a fast hash suffices: there is nothing to guess). A token names its account; the
/// account's current roles and state apply at every use, so disabling an account or changing its roles
/// takes effect at once.
public final class TokenStore: Sendable {
    static let prefix = "sys/tokens/"
    static let tokenPrefix = "mct."

    struct Record: Codable, Sendable {
        var username: String
        var createdAt: Int64
        /// Unix seconds.
        var expiresAt: Int64

        enum CodingKeys: String, CodingKey {
            case username
            case createdAt = "created_at"
            case expiresAt = "expires_at"
        }
    }

    let barrier: Barrier
    let accounts: AccountStore
    let ttlSeconds: Int64
    let now: @Sendable () -> Int64
    /// Token records already read, by digest (never the token itself). Revocation goes through this store,
    /// so the cache is exact; it is bounded and emptied at seal.
    private let cache = BoundedCache<TokenDigest, Record>(capacity: 100_000)
    /// Orders a cache fill against a revocation, so a revoked token can never be cached again.
    private let changes = Locked<Void>(())

    init(barrier: Barrier, accounts: AccountStore, ttlSeconds: Int64, now: @escaping @Sendable () -> Int64) {
        self.barrier = barrier
        self.accounts = accounts
        self.ttlSeconds = ttlSeconds
        self.now = now
    }

    /// Creates a token for `username`; returns it and its expiry. Only its hash is stored.
    public func create(for username: String) throws -> (token: String, expiresAt: Int64) {
        let made = record(for: username)
        try barrier.put(made.path, value: made.value, keyID: Barrier.systemKeyID)
        return (made.token, made.expiresAt)
    }

    /// A new token and its barrier path and record, without writing it.
    func record(for username: String) -> (token: String, expiresAt: Int64, path: String, value: [UInt8]) {
        let token = Self.tokenPrefix + Base64URL.encode(randomBytes(32))
        let record = Record(username: username, createdAt: now(), expiresAt: now() + ttlSeconds)
        return (token, record.expiresAt, Self.path(token), JSON.encode(record))
    }

    /// The caller a token stands for, or nil if it is unknown, expired, or its account is gone or disabled.
    public func lookup(_ token: String) throws -> Caller? {
        guard token.hasPrefix(Self.tokenPrefix), token.utf8.count < 200 else { return nil }
        let digest = TokenDigest(token)
        let time = now()
        var found = cache.get(digest, now: Double(time))
        if found == nil {
            found = try changes.withLock { _ -> Record? in
                guard let bytes = try barrier.get(Self.path(token)),
                      let record = try? JSONDecoder().decode(Record.self, from: Data(bytes.unsafeArray()))
                else { return nil }
                cache.put(digest, record, expires: Double(record.expiresAt), now: Double(time))
                return record
            }
            if found == nil { return nil }
        }
        guard let record = found, record.expiresAt > time else {
            _ = try? barrier.delete(Self.path(token))
            return nil
        }
        guard let account = try accounts.get(record.username), !account.disabled else { return nil }
        return account.caller
    }

    public func revoke(_ token: String) throws {
        guard token.hasPrefix(Self.tokenPrefix) else { return }
        try changes.withLock { _ in
            try barrier.delete(Self.path(token))
            cache.remove(TokenDigest(token))
        }
    }

    /// Forgets every cached token record (at seal).
    func clearCache() { cache.removeAll() }

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
