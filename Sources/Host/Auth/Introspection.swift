import FoundationEssentials
import MetacryptJSON
import HTTPClient
import MetacryptCrypto
import Synchronization

/// Validates bearer tokens issued by an external identity provider through OAuth 2.0 token
/// introspection (RFC 7662), with a bounded cache of answers.
public final class IntrospectionProvider: Sendable {
    public struct Configuration: Codable, Sendable {
        /// The introspection endpoint (https).
        public var url: String
        public var caFile: String?
        public var clientID: String?
        public var clientSecret: String?
        /// The claim holding the username (default "username", falling back to "sub").
        public var usernameClaim: String?
        /// The claim holding roles: an array of strings or one space-separated string (default "roles").
        public var rolesClaim: String?
        /// Seconds an answer is reused: 30 by default, an accepted revocation delay.
        public var cacheTTLSeconds: Int?
        /// The most answers kept (audit #74); the oldest are evicted first.
        public var cacheSize: Int?

        enum CodingKeys: String, CodingKey {
            case url
            case caFile = "ca_file"
            case clientID = "client_id"
            case clientSecret = "client_secret"
            case usernameClaim = "username_claim"
            case rolesClaim = "roles_claim"
            case cacheTTLSeconds = "cache_ttl_seconds"
            case cacheSize = "cache_size"
        }

        public init(url: String) { self.url = url }
    }

    let configuration: Configuration
    let client: HTTPClient
    let cache: BoundedCache<TokenDigest, Caller?>
    let logger: Logger
    let now: @Sendable () -> Double

    public init(configuration: Configuration, logger: Logger,
                now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) throws {
        guard let url = URLParts(configuration.url) else {
            throw ServerError("introspection url \(configuration.url) must be https://host[:port]/path")
        }
        self.configuration = configuration
        self.client = HTTPClient(address: url.origin, caCertificate: configuration.caFile, minimumTLS13: false,
                                 timeoutSeconds: 10)
        self.cache = BoundedCache(capacity: max(1, configuration.cacheSize ?? 10_000))
        self.logger = logger
        self.now = now
    }

    /// The caller for `token`, nil if the provider says it is not active. Errors reaching the provider
    /// are not cached and deny the request.
    public func lookup(_ token: String) throws -> Caller? {
        let key = TokenDigest(token)
        let time = now()
        if let cached = cache.get(key, now: time) { return cached }
        let caller = try introspect(token)
        cache.put(key, caller, expires: time + Double(configuration.cacheTTLSeconds ?? 30), now: time)
        return caller
    }

    private func introspect(_ token: String) throws -> Caller? {
        guard let url = URLParts(configuration.url) else { return nil }
        var headers = ["Content-Type: application/x-www-form-urlencoded", "Accept: application/json"]
        if let id = configuration.clientID, let secret = configuration.clientSecret {
            let credentials = Array("\(formEncode(id)):\(formEncode(secret))".utf8)
            headers.append("Authorization: Basic \(Data(credentials).base64EncodedString())")
        }
        let body = Array("token=\(formEncode(token))&token_type_hint=access_token".utf8)
        let response: HTTPClient.Response
        do {
            response = try client.request("POST", url.path, headers: headers, body: body)
        } catch {
            logger.warning("identity provider unreachable", ["error": "\(error)"])
            throw APIError(503, "identity_provider_unavailable", "the identity provider cannot be reached")
        }
        guard response.status == 200 else {
            throw APIError(503, "identity_provider_unavailable", "the identity provider answered \(response.status)")
        }
        guard let object = try? JSONDecoder().decode([String: JSONValue].self, from: Data(response.body)) else {
            throw APIError(503, "identity_provider_unavailable", "the identity provider's answer is not JSON")
        }
        return Self.caller(from: object, now: now(), configuration: configuration, logger: logger)
    }

    /// The caller an RFC 7662 answer describes, or nil if it is inactive, expired or names no usable user.
    static func caller(from object: [String: JSONValue], now: Double, configuration: Configuration, logger: Logger)
        -> Caller?
    {
        guard case .bool(true) = object["active"] else { return nil }
        switch object["exp"] {
        case .integer(let exp)?: if Double(exp) <= now { return nil }
        case .number(let exp)?: if exp <= now { return nil }
        default: break
        }

        let usernameValue = object[configuration.usernameClaim ?? "username"] ?? object["sub"]
        guard case .string(let rawName) = usernameValue, let name = Usernames.normalise(rawName) else {
            logger.warning("introspection answer without a usable username claim")
            return nil
        }
        var roles: [String] = []
        switch object[configuration.rolesClaim ?? "roles"] {
        case .array(let values)?:
            for case .string(let role) in values { roles.append(role) }
        case .string(let list)?:
            roles = list.split(separator: " ").map(String.init)
        default: break
        }
        let known = Set(Role.allCases.map(\.rawValue))
        roles = roles.filter { known.contains($0) }
        return Caller(name: name, roles: roles, isAdmin: roles.contains(Role.admin.rawValue))
    }

    private func formEncode(_ text: String) -> String {
        var out = ""
        for b in text.utf8 {
            if Names.isLowerAlnum(b) || (b >= 0x41 && b <= 0x5a) || b == 0x2d || b == 0x2e || b == 0x5f || b == 0x7e {
                out.append(Character(Unicode.Scalar(b)))
            } else {
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// The SHA-256 of a token: the cache never keeps the token itself.
struct TokenDigest: Hashable, Sendable {
    let a: UInt64, b: UInt64, c: UInt64, d: UInt64

    init(_ token: String) {
        let h = SHA256.hash(Array(token.utf8))
        func word(_ i: Int) -> UInt64 { h[i..<(i + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        a = word(0); b = word(8); c = word(16); d = word(24)
    }
}

/// Splits an https URL into its origin and path.
struct URLParts {
    let origin: String
    let path: String

    init?(_ url: String) {
        guard url.hasPrefix("https://") else { return nil }
        let rest = url.dropFirst("https://".count)
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex else { return nil }
        origin = "https://" + rest[..<slash]
        path = String(rest[slash...])
    }
}

/// A cache with a hard bound on its size and a time to live for each entry (audit #74).
///
/// When full, expired entries go first, then the oldest insertions.
final class BoundedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct State {
        var entries: [Key: (value: Value, expires: Double, sequence: UInt64)] = [:]
        var order: [(key: Key, sequence: UInt64)] = []
        var head = 0
        var sequence: UInt64 = 0
    }

    let capacity: Int
    private let state = Locked(State())

    init(capacity: Int) {
        precondition(capacity > 0, "cache capacity")
        self.capacity = capacity
    }

    var count: Int { state.withLock { $0.entries.count } }

    /// The value if present and not expired. A cached nil comes back as `.some(nil)`.
    func get(_ key: Key, now: Double) -> Value? {
        state.withLock { s in
            guard let entry = s.entries[key] else { return nil }
            guard entry.expires > now else {
                s.entries[key] = nil
                return nil
            }
            return entry.value
        }
    }

    func put(_ key: Key, _ value: Value, expires: Double, now: Double) {
        state.withLock { s in
            s.sequence += 1
            if s.entries[key] == nil {
                while s.entries.count >= capacity { Self.evictOne(&s) }
            }
            s.entries[key] = (value, expires, s.sequence)
            s.order.append((key, s.sequence))
            // Keep the order queue compact: it never holds more than twice the capacity.
            if s.head > capacity || s.order.count - s.head > 2 * capacity {
                s.order = s.order[s.head...].filter { s.entries[$0.key]?.sequence == $0.sequence }
                s.head = 0
            }
        }
    }

    func remove(_ key: Key) { state.withLock { _ = $0.entries.removeValue(forKey: key) } }

    func removeAll() {
        state.withLock { s in
            s.entries.removeAll()
            s.order.removeAll()
            s.head = 0
        }
    }

    private static func evictOne(_ s: inout State) {
        while s.head < s.order.count {
            let candidate = s.order[s.head]
            s.head += 1
            if s.entries[candidate.key]?.sequence == candidate.sequence {
                s.entries[candidate.key] = nil
                return
            }
        }
        // The queue lost track (cannot happen while every insertion is queued); drop anything.
        if let any = s.entries.keys.first { s.entries[any] = nil }
    }
}
