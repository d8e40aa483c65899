import Testing

@testable import Host

/// One row of the policy table: who asks, for what, under which rules, and the expected decision.
struct PolicyCase: CustomTestStringConvertible, Sendable {
    let name: String
    let rules: [PolicyRule]
    let caller: Caller
    let action: String
    let resource: String
    let allowed: Bool

    var testDescription: String { name }
}

private let alice = Caller(name: "alice", roles: ["user"], isAdmin: false)
private let bob = Caller(name: "bob", roles: ["guest"], isAdmin: false)
private let root = Caller(name: "root", roles: ["admin"], isAdmin: true)

private func allow(
    _ resources: [String], _ actions: [String] = ["encrypt"], id: String = "a", priority: Int = 10,
    users: [String] = ["alice"], roles: [String] = []
) -> PolicyRule {
    PolicyRule(
        id: id, priority: priority, effect: .allow, users: users, roles: roles, resources: resources, actions: actions)
}

private func deny(
    _ resources: [String], _ actions: [String] = ["encrypt"], id: String = "d", priority: Int = 10,
    users: [String] = ["alice"], roles: [String] = []
) -> PolicyRule {
    PolicyRule(
        id: id, priority: priority, effect: .deny, users: users, roles: roles, resources: resources, actions: actions)
}

private let cases: [PolicyCase] = [
    // Exact matches and the default.
    .init(
        name: "exact resource and action allow", rules: [allow(["transit/t/keys/k"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "no rules deny", rules: [], caller: alice, action: "encrypt", resource: "transit/t/keys/k", allowed: false
    ),
    .init(
        name: "other action denies", rules: [allow(["transit/t/keys/k"])], caller: alice, action: "decrypt",
        resource: "transit/t/keys/k", allowed: false),
    .init(
        name: "wildcard action allows any", rules: [allow(["transit/t/keys/k"], ["*"])], caller: alice,
        action: "decrypt", resource: "transit/t/keys/k", allowed: true),
    // '*' stays inside one segment.
    .init(
        name: "star matches one segment at the end", rules: [allow(["transit/t/keys/*"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "star does not cross segments", rules: [allow(["transit/t/keys/*"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/k/extra", allowed: false),
    .init(
        name: "star in the middle", rules: [allow(["transit/*/keys/k"])], caller: alice, action: "encrypt",
        resource: "transit/prod/keys/k", allowed: true),
    .init(
        name: "star in the middle does not cross", rules: [allow(["transit/*/keys/k"])], caller: alice,
        action: "encrypt", resource: "transit/a/b/keys/k", allowed: false),
    .init(
        name: "star at the start", rules: [allow(["*/t/keys/k"])], caller: alice, action: "encrypt",
        resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "star as part of a segment", rules: [allow(["transit/t/keys/app-*"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/app-web", allowed: true),
    .init(
        name: "partial star needs its literal part", rules: [allow(["transit/t/keys/app-*"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/db-web", allowed: false),
    .init(
        name: "star does not match an empty segment's absence", rules: [allow(["transit/t/keys/*"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys", allowed: false),
    // '**' crosses segments.
    .init(
        name: "double star crosses segments", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "double star in the middle", rules: [allow(["transit/**/k"])], caller: alice, action: "encrypt",
        resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "double star matches zero segments", rules: [allow(["transit/**/keys/k"])], caller: alice,
        action: "encrypt", resource: "transit/keys/k", allowed: true),
    .init(
        name: "double star at the start", rules: [allow(["**/keys/k"])], caller: alice, action: "encrypt",
        resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "double star keeps the tail literal", rules: [allow(["transit/**/k"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/other", allowed: false),
    .init(
        name: "double star does not match another engine", rules: [allow(["transit/**"])], caller: alice,
        action: "encrypt", resource: "ca/t/keys/k", allowed: false),
    // Priority and ties.
    .init(
        name: "higher priority deny beats allow",
        rules: [allow(["transit/**"], id: "a", priority: 10), deny(["transit/**"], id: "d", priority: 20)],
        caller: alice, action: "encrypt", resource: "transit/t/keys/k", allowed: false),
    .init(
        name: "higher priority allow beats deny",
        rules: [allow(["transit/t/keys/k"], id: "a", priority: 30), deny(["transit/**"], id: "d", priority: 20)],
        caller: alice, action: "encrypt", resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "deny wins a tie",
        rules: [allow(["transit/**"], id: "a", priority: 10), deny(["transit/t/**"], id: "d", priority: 10)],
        caller: alice, action: "encrypt", resource: "transit/t/keys/k", allowed: false),
    .init(
        name: "a non-matching deny does not count",
        rules: [allow(["transit/**"], id: "a", priority: 10), deny(["ca/**"], id: "d", priority: 50)],
        caller: alice, action: "encrypt", resource: "transit/t/keys/k", allowed: true),
    // Subjects.
    .init(
        name: "rule for another user does not apply", rules: [allow(["transit/**"], users: ["carol"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/k", allowed: false),
    .init(
        name: "rule by role applies", rules: [allow(["transit/**"], users: [], roles: ["user"])], caller: alice,
        action: "encrypt", resource: "transit/t/keys/k", allowed: true),
    .init(
        name: "rule by role does not apply to other roles", rules: [allow(["transit/**"], users: [], roles: ["user"])],
        caller: bob, action: "encrypt", resource: "transit/t/keys/k", allowed: false),
    .init(
        name: "deny by role overrides allow by user at equal priority",
        rules: [
            allow(["transit/**"], id: "a", priority: 5, users: ["alice"]),
            deny(["transit/**"], id: "d", priority: 5, users: [], roles: ["user"]),
        ],
        caller: alice, action: "encrypt", resource: "transit/t/keys/k", allowed: false),
    // Administrators.
    .init(
        name: "admin bypasses with no rules", rules: [], caller: root, action: "encrypt", resource: "transit/t/keys/k",
        allowed: true),
    .init(
        name: "admin bypasses a deny", rules: [deny(["transit/**"], users: ["root"])], caller: root, action: "encrypt",
        resource: "transit/t/keys/k", allowed: true),
    // Malformed resources are refused before matching.
    .init(
        name: "trailing slash is refused", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit/t/keys/k/", allowed: false),
    .init(
        name: "double slash is refused", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit//keys/k", allowed: false),
    .init(
        name: "dot-dot segment is refused", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit/t/../ca/k", allowed: false),
    .init(
        name: "percent-encoded dot-dot is refused", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit/t/%2e%2e/k", allowed: false),
    .init(
        name: "single dot segment is refused", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit/./keys/k", allowed: false),
    .init(
        name: "control byte is refused", rules: [allow(["transit/**"])], caller: alice, action: "encrypt",
        resource: "transit/t/keys/k\u{1}", allowed: false),
    .init(
        name: "empty resource is refused", rules: [allow(["**"])], caller: alice, action: "encrypt", resource: "",
        allowed: false),
]

@Suite("Policy evaluation")
struct PolicyTests {
    @Test("decision table", arguments: cases)
    func decision(_ row: PolicyCase) {
        #expect(
            Policy.evaluate(row.rules, caller: row.caller, action: row.action, resource: row.resource) == row.allowed)
    }

    @Test func theTableHasAtLeastThirtyRows() { #expect(cases.count >= 30) }

    @Test func ruleIDsThatCouldBecomePathsAreRefused() {
        // audit #72
        for bad in ["", "../x", "a/b", "A", "a b", "a.b", "%2e", String(repeating: "a", count: 65)] {
            #expect(!PolicyRule.isValidID(bad), "\(bad)")
        }
        #expect(PolicyRule.isValidID("team-a_1"))
    }

    @Test func malformedPatternsAreRefusedAtWriteTime() {
        for pattern in ["", "a//b", "a/../b", "a/**b", "a/%2e%2e", "/abs", "a/"] {
            let rule = allow([pattern])
            #expect(rule.problem() != nil, "\(pattern)")
        }
        #expect(allow(["transit/*/keys/**"]).problem() == nil)
    }
}

@Suite("Usernames")
struct UsernameTests {
    @Test func asciiLettersFoldToLowercase() {
        #expect(Usernames.normalise("Alice") == "alice")
        #expect(Usernames.normalise("ALICE") == "alice")
        #expect(Usernames.normalise("a.l-i_c3") == "a.l-i_c3")
    }

    @Test func lookAlikesAndOddSpellingsAreRefusedNotTransformed() {
        // Cyrillic 'а', a fullwidth letter, a trailing space, a NUL, an empty name, a leading dot.
        for bad in [
            "\u{430}lice", "ａlice", "alice ", "al\u{0}ice", "", ".alice", "-alice", "al/ice", "alice\u{301}",
            String(repeating: "a", count: 65),
        ] {
            #expect(Usernames.normalise(bad) == nil, "\(bad.debugDescription)")
        }
    }
}
