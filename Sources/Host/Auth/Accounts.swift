import FoundationEssentials
import MetacryptCrypto
import Synchronization

/// Usernames are normalised one way everywhere (creation, login, policy subjects, tokens): ASCII
/// letters folded to lowercase, and then only [a-z0-9._-], 1-64 bytes, starting with a letter or
/// digit. Anything else (spaces, non-ASCII look-alikes, control bytes) is refused rather than
/// transformed, so two different spellings can never meet in one account.
public enum Usernames {
    public static func normalise(_ name: String) -> String? {
        var out: [UInt8] = []
        for b in name.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): out.append(b + 32)
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                out.append(b)
            default: return nil
            }
        }
        guard (1...64).contains(out.count), let first = out.first, Names.isLowerAlnum(first) else { return nil }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The fixed roles.
public enum Role: String, Codable, Sendable, CaseIterable {
    case admin, user, guest
}

/// Local accounts, kept in the barrier at `sys/accounts/<username>` with Argon2id password hashes.
public final class AccountStore: Sendable {
    static let prefix = "sys/accounts/"

    public struct Account: Codable, Sendable {
        public var username: String
        public var passwordHash: String
        public var roles: [Role]
        public var disabled: Bool
        public var createdAt: Int64

        enum CodingKeys: String, CodingKey {
            case username, roles, disabled
            case passwordHash = "password_hash"
            case createdAt = "created_at"
        }

        var caller: Caller {
            Caller(name: username, roles: roles.map(\.rawValue), isAdmin: roles.contains(.admin))
        }
    }

    /// What the API shows of an account: never the hash.
    public struct Summary: Codable, Sendable {
        public var username: String
        public var roles: [Role]
        public var disabled: Bool
        public var createdAt: Int64

        enum CodingKeys: String, CodingKey {
            case username, roles, disabled
            case createdAt = "created_at"
        }
    }

    let barrier: Barrier
    let parameters: Argon2Parameters
    let now: @Sendable () -> Int64
    /// A hash at the configured cost of a random, forgotten password: verified against when the username
    /// is unknown, so that a miss costs what a hit costs.
    private let dummyHash: String
    /// Accounts already read, so authenticating a token needs no storage read. Every change to an account
    /// goes through this store, under `changes`, so the cache is never stale; it is emptied at seal.
    private let cache = Locked<[String: Account]>([:])
    private let changes = Locked<Void>(())
    static let cacheLimit = 10_000

    init(barrier: Barrier, parameters: Argon2Parameters, now: @escaping @Sendable () -> Int64) {
        self.barrier = barrier
        self.parameters = parameters
        self.now = now
        self.dummyHash = (try? Argon2id.hashPassword(randomBytes(16), parameters: parameters)) ?? ""
    }

    static func validatePassword(_ password: String) throws {
        guard password.utf8.count >= 8, password.utf8.count <= 1024 else {
            throw APIError.badRequest("a password must be 8 to 1024 bytes long")
        }
    }

    static func username(_ raw: String) throws -> String {
        guard let name = Usernames.normalise(raw) else {
            throw APIError.badRequest(
                "invalid username: use 1-64 of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
        }
        return name
    }

    public func create(username raw: String, password: String, roles: [Role]) throws -> Summary {
        let record = try record(username: raw, password: password, roles: roles)
        try changes.withLock { _ in
            guard try barrier.put(record.path, value: record.value, keyID: Barrier.systemKeyID, createOnly: true) else {
                throw APIError(409, "exists", "an account named \(record.username) exists")
            }
            remember(record.account)
        }
        return summary(record.account)
    }

    /// A new account's barrier path and plaintext record, without writing it.
    func record(username raw: String, password: String, roles: [Role]) throws
        -> (username: String, path: String, value: [UInt8], account: Account)
    {
        let username = try Self.username(raw)
        try Self.validatePassword(password)
        guard !roles.isEmpty else { throw APIError.badRequest("an account needs at least one role") }
        let hash = try Argon2id.hashPassword(Array(password.utf8), parameters: parameters)
        let account = Account(
            username: username, passwordHash: hash,
            roles: Array(Set(roles)).sorted { $0.rawValue < $1.rawValue }, disabled: false,
            createdAt: now())
        return (username, Self.prefix + username, JSON.encode(account), account)
    }

    public func get(_ raw: String) throws -> Account? {
        guard let username = Usernames.normalise(raw) else { return nil }
        if let cached = cache.withLock({ $0[username] }) { return cached }
        return try changes.withLock { _ in
            guard let bytes = try barrier.get(Self.prefix + username) else { return nil }
            let account = try JSONDecoder().decode(Account.self, from: Data(bytes.unsafeArray()))
            remember(account)
            return account
        }
    }

    private func remember(_ account: Account) {
        cache.withLock { cache in
            if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[account.username] = account
        }
    }

    /// Forgets every cached account (at seal).
    func clearCache() { cache.withLock { $0.removeAll() } }

    public func list() throws -> [Summary] {
        try barrier.list(prefix: Self.prefix).compactMap { path in
            try get(String(path.dropFirst(Self.prefix.count))).map(summary)
        }
    }

    public func update(_ raw: String, password: String?, roles: [Role]?, disabled: Bool?) throws -> Summary {
        guard var account = try get(raw) else { throw APIError.notFound("no account named \(raw)") }
        if let password {
            try Self.validatePassword(password)
            account.passwordHash = try Argon2id.hashPassword(Array(password.utf8), parameters: parameters)
        }
        if let roles {
            guard !roles.isEmpty else { throw APIError.badRequest("an account needs at least one role") }
            account.roles = Array(Set(roles)).sorted { $0.rawValue < $1.rawValue }
        }
        if let disabled { account.disabled = disabled }
        try changes.withLock { _ in
            try barrier.put(Self.prefix + account.username, value: JSON.encode(account), keyID: Barrier.systemKeyID)
            remember(account)
        }
        return summary(account)
    }

    public func delete(_ raw: String) throws -> Bool {
        guard let username = Usernames.normalise(raw) else { return false }
        return try changes.withLock { _ in
            cache.withLock { $0[username] = nil }
            return try barrier.delete(Self.prefix + username)
        }
    }

    /// The account's caller if the password is right and the account enabled; otherwise nil. An unknown
    /// user costs the same Argon2id work as a known one, so timing does not reveal which names exist.
    public func authenticate(username raw: String, password: String) throws -> Caller? {
        let account = try get(raw)
        let hash = account?.passwordHash ?? dummyHash
        let ok = Argon2id.verifyPassword(Array(password.utf8), encoded: hash)
        guard ok, let account, !account.disabled else { return nil }
        return account.caller
    }

    func summary(_ a: Account) -> Summary {
        Summary(username: a.username, roles: a.roles, disabled: a.disabled, createdAt: a.createdAt)
    }
}
