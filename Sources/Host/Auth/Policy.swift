import FoundationEssentials
import Synchronization

/// One policy rule. The highest-priority matching rule decides; deny wins a tie; no match denies.
public struct PolicyRule: Codable, Sendable, Equatable {
    public enum Effect: String, Codable, Sendable {
        case allow, deny
    }

    public var id: String
    public var priority: Int
    public var effect: Effect
    /// Usernames (normalised) the rule applies to.
    public var users: [String]
    /// Roles the rule applies to.
    public var roles: [String]
    /// Resource patterns: '*' matches within one segment, '**' matches any number of whole segments.
    public var resources: [String]
    /// Actions; "*" matches every action.
    public var actions: [String]

    public init(id: String, priority: Int, effect: Effect, users: [String] = [], roles: [String] = [],
                resources: [String], actions: [String]) {
        self.id = id
        self.priority = priority
        self.effect = effect
        self.users = users
        self.roles = roles
        self.resources = resources
        self.actions = actions
    }

    enum CodingKeys: String, CodingKey {
        case id, priority, effect, users, roles, resources, actions
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(String.self, forKey: .id) ?? ""
        priority = try c.decodeIfPresent(Int.self, forKey: .priority) ?? 0
        effect = try c.decode(Effect.self, forKey: .effect)
        users = try c.decodeIfPresent([String].self, forKey: .users) ?? []
        roles = try c.decodeIfPresent([String].self, forKey: .roles) ?? []
        resources = try c.decode([String].self, forKey: .resources)
        actions = try c.decode([String].self, forKey: .actions)
    }

    /// Rule ids: 1-64 of [a-z0-9_-], so that an id can never become a storage path (audit #72).
    public static func isValidID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        return (1...64).contains(bytes.count) && bytes.allSatisfy {
            Names.isLowerAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }
    }

    /// Nil if the rule is well formed, else why not.
    func problem() -> String? {
        guard Self.isValidID(id) else { return "rule id \(id) is invalid: use 1-64 of a-z, 0-9, '-' and '_'" }
        guard abs(priority) <= 1_000_000 else { return "priority must be within ±1000000" }
        guard !users.isEmpty || !roles.isEmpty else { return "a rule needs at least one user or role" }
        guard !resources.isEmpty, !actions.isEmpty else { return "a rule needs resources and actions" }
        for user in users where Usernames.normalise(user) != user {
            return "user \(user) is not a normalised username"
        }
        for pattern in resources {
            if let problem = ResourcePattern.problem(pattern) { return problem }
        }
        for action in actions where action != "*" && !(action.utf8.allSatisfy { Names.isNameByte($0) } && !action.isEmpty) {
            return "action \(action) is invalid"
        }
        return nil
    }

    func applies(to caller: Caller) -> Bool {
        users.contains(caller.name) || roles.contains { caller.roles.contains($0) }
    }

    func matches(action: String, resource: [Substring]) -> Bool {
        (actions.contains("*") || actions.contains(action))
            && resources.contains { ResourcePattern.matches($0, resource) }
    }
}

/// Resource glob patterns over '/'-separated segments.
enum ResourcePattern {
    static func problem(_ pattern: String) -> String? {
        let bytes = Array(pattern.utf8)
        guard !bytes.isEmpty, bytes.count <= 512, bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "%") })
        else { return "resource pattern \(pattern) has invalid characters" }
        for segment in pattern.split(separator: "/", omittingEmptySubsequences: false) {
            if segment.isEmpty || segment == "." || segment == ".." {
                return "resource pattern \(pattern) has an empty, '.' or '..' segment"
            }
            if segment.contains("**") && segment != "**" { return "'**' must be a whole segment in \(pattern)" }
        }
        return nil
    }

    /// Splits a concrete resource; nil if it could escape its place (refused before any matching).
    static func segments(_ resource: String) -> [Substring]? {
        let bytes = Array(resource.utf8)
        guard !bytes.isEmpty, bytes.count <= 1024, bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f }),
              !resource.contains("%")
        else { return nil }
        let parts = resource.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else { return nil }
        return parts
    }

    static func matches(_ pattern: String, _ resource: [Substring]) -> Bool {
        let p = pattern.split(separator: "/", omittingEmptySubsequences: false)
        return matchSegments(p[...], resource[...])
    }

    private static func matchSegments(_ p: ArraySlice<Substring>, _ r: ArraySlice<Substring>) -> Bool {
        guard let first = p.first else { return r.isEmpty }
        if first == "**" {
            // '**' takes zero or more whole segments.
            var rest = r
            while true {
                if matchSegments(p.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let segment = r.first, matchSegment(Array(first.utf8)[...], Array(segment.utf8)[...]) else { return false }
        return matchSegments(p.dropFirst(), r.dropFirst())
    }

    /// '*' matches any run of bytes inside one segment.
    private static func matchSegment(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>) -> Bool {
        guard let first = p.first else { return s.isEmpty }
        if first == UInt8(ascii: "*") {
            var rest = s
            while true {
                if matchSegment(p.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let c = s.first, c == first else { return false }
        return matchSegment(p.dropFirst(), s.dropFirst())
    }
}

/// The policy engine: rules kept in the barrier, evaluated from memory.
public final class Policy: Authorizer {
    static let prefix = "sys/policy/rules/"

    let barrier: Barrier
    private let rules = Locked<[String: PolicyRule]>([:])

    init(barrier: Barrier) { self.barrier = barrier }

    /// Evaluates a request. Administrators bypass policy (an accepted design decision).
    public func allows(_ caller: Caller, action: String, resource: String) -> Bool {
        if caller.isAdmin { return true }
        return Self.evaluate(rules.withLock { Array($0.values) }, caller: caller, action: action, resource: resource)
    }

    /// The decision procedure, on its own for table tests.
    static func evaluate(_ rules: [PolicyRule], caller: Caller, action: String, resource: String) -> Bool {
        if caller.isAdmin { return true }
        guard let segments = ResourcePattern.segments(resource) else { return false }
        var best: PolicyRule?
        for rule in rules where rule.applies(to: caller) && rule.matches(action: action, resource: segments) {
            if let current = best {
                if rule.priority > current.priority || (rule.priority == current.priority && rule.effect == .deny) {
                    best = rule
                }
            } else {
                best = rule
            }
        }
        return best?.effect == .allow
    }

    /// Loads every rule from the barrier (at unseal).
    func load() throws {
        var loaded: [String: PolicyRule] = [:]
        for path in try barrier.list(prefix: Self.prefix) {
            guard let bytes = try barrier.get(path) else { continue }
            let rule = try JSONDecoder().decode(PolicyRule.self, from: Data(bytes.unsafeArray()))
            loaded[rule.id] = rule
        }
        rules.withLock { $0 = loaded }
    }

    func clear() { rules.withLock { $0 = [:] } }

    public func list() -> [PolicyRule] { rules.withLock { Array($0.values) }.sorted { $0.id < $1.id } }

    public func get(_ id: String) -> PolicyRule? { rules.withLock { $0[id] } }

    public func put(_ rule: PolicyRule) throws {
        if let problem = rule.problem() { throw APIError.badRequest(problem) }
        try barrier.put(Self.prefix + rule.id, value: JSON.encode(rule), keyID: Barrier.systemKeyID)
        rules.withLock { $0[rule.id] = rule }
    }

    public func delete(_ id: String) throws -> Bool {
        guard PolicyRule.isValidID(id) else { throw APIError.badRequest("rule id \(id) is invalid") }
        let deleted = try barrier.delete(Self.prefix + id)
        rules.withLock { $0[id] = nil }
        return deleted
    }
}
