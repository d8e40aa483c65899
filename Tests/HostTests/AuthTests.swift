import Glibc
import MetacryptCrypto
import MetacryptJSON
import Testing

@testable import Host

@Suite("Accounts and tokens")
struct AccountTests {
    func stores() throws -> (AccountStore, TokenStore, Barrier) {
        let (barrier, _, _) = try makeBarrier()
        let accounts = AccountStore(barrier: barrier, parameters: .minimum, now: { 1_000 })
        return (accounts, TokenStore(barrier: barrier, accounts: accounts, ttlSeconds: 60, now: { 1_000 }), barrier)
    }

    @Test func anotherSpellingCannotShadowAnAccount() throws {
        let (accounts, _, _) = try stores()
        _ = try accounts.create(username: "Alice", password: "first password", roles: [.user])
        #expect(throws: APIError.self) {
            try accounts.create(username: "ALICE", password: "second password", roles: [.admin])
        }
        #expect(throws: APIError.self) {
            try accounts.create(username: "\u{430}lice", password: "second password", roles: [.admin])
        }
        #expect(try accounts.get("alice")?.roles == [.user])
        #expect(try accounts.authenticate(username: "aLiCe", password: "first password")?.name == "alice")
        #expect(try accounts.authenticate(username: "alice", password: "second password") == nil)
    }

    @Test func passwordsAreStoredOnlyAsArgon2idHashes() throws {
        let (accounts, _, barrier) = try stores()
        _ = try accounts.create(username: "carol", password: "hunter2hunter2", roles: [.user])
        let raw = try #require(try barrier.get("sys/accounts/carol")).unsafeArray()
        #expect(String(decoding: raw, as: UTF8.self).contains("$argon2id$"))
        #expect(raw.firstRange(of: Array("hunter2hunter2".utf8)) == nil)
    }

    @Test func tokensAreStoredAsHashesAndFollowTheirAccount() throws {
        let (accounts, tokens, barrier) = try stores()
        _ = try accounts.create(username: "dave", password: "password123", roles: [.user])
        let (token, _) = try tokens.create(for: "dave")
        #expect(try barrier.list(prefix: "sys/tokens/").allSatisfy { !$0.contains(token) })
        #expect(try tokens.lookup(token)?.roles == ["user"])

        _ = try accounts.update("dave", password: nil, roles: [.guest], disabled: nil)
        #expect(try tokens.lookup(token)?.roles == ["guest"], "role changes apply at once")
        _ = try accounts.update("dave", password: nil, roles: nil, disabled: true)
        #expect(try tokens.lookup(token) == nil, "a disabled account's tokens stop working")
    }

    @Test func expiredAndRevokedTokensAreRefused() throws {
        let (barrier, _, _) = try makeBarrier()
        let accounts = AccountStore(barrier: barrier, parameters: .minimum, now: { 1_000 })
        _ = try accounts.create(username: "erin", password: "password123", roles: [.user])
        let early = TokenStore(barrier: barrier, accounts: accounts, ttlSeconds: 60, now: { 1_000 })
        let late = TokenStore(barrier: barrier, accounts: accounts, ttlSeconds: 60, now: { 1_061 })
        let (token, expiry) = try early.create(for: "erin")
        #expect(expiry == 1_060)
        #expect(try late.lookup(token) == nil)

        let (other, _) = try early.create(for: "erin")
        try early.revoke(other)
        #expect(try early.lookup(other) == nil)
    }
}

@Suite("Bounded token cache")
struct CacheTests {
    /// audit #74: 200,000 distinct tokens never grow the cache past its bound.
    @Test func twoHundredThousandDistinctTokensKeepTheCacheAtItsBound() {
        let cache = BoundedCache<TokenDigest, Caller?>(capacity: 10_000)
        let before = residentKiB()
        for i in 0..<200_000 {
            cache.put(TokenDigest("token-\(i)"), nil, expires: 1e12, now: 0)
            if i % 50_000 == 0 { #expect(cache.count <= 10_000) }
        }
        #expect(cache.count == 10_000)
        print(
            "token cache: 200000 tokens, \(cache.count) kept; resident \(before) KiB before, \(residentKiB()) KiB after"
        )
        // The newest survive, the oldest were evicted.
        #expect(cache.get(TokenDigest("token-199999"), now: 1) != nil)
        #expect(cache.get(TokenDigest("token-0"), now: 1) == nil)
    }

    @Test func expiredEntriesAreNotServed() {
        let cache = BoundedCache<TokenDigest, Caller?>(capacity: 10)
        cache.put(TokenDigest("t"), Caller(name: "x", roles: [], isAdmin: false), expires: 30, now: 0)
        #expect(cache.get(TokenDigest("t"), now: 29)??.name == "x")
        #expect(cache.get(TokenDigest("t"), now: 30) == nil)
    }
}

@Suite("Rate limits")
struct RateLimitTests {
    @Test func aBurstOverTheLimitIsRefusedWithAWaitAndOthersAreUnaffected() {
        let limiter = RateLimiter(limit: .init(rate: 10, burst: 5))
        for _ in 0..<5 { #expect(limiter.take("alice", now: 100) == nil) }
        let wait = limiter.take("alice", now: 100)
        #expect(wait != nil && wait! > 0 && wait! <= 0.1 + 1e-9)
        #expect(limiter.take("bob", now: 100) == nil, "another identity keeps its own bucket")
        #expect(limiter.take("alice", now: 100.2) == nil, "the bucket refills at the rate")
    }

    @Test func unsealBacksOffAfterThreeFailuresAndResetsOnSuccess() {
        let backoff = UnsealBackoff()
        for _ in 0..<3 { backoff.failed(now: 0) }
        #expect(backoff.check(now: 0) == nil)
        backoff.failed(now: 0)
        #expect(backoff.check(now: 0.5) != nil)
        #expect(backoff.check(now: 1.01) == nil)
        backoff.failed(now: 2)
        #expect(backoff.check(now: 3.5) != nil, "the wait doubles")
        backoff.succeeded()
        #expect(backoff.check(now: 3.5) == nil)
    }
}

func residentKiB() -> Int {
    guard let status = try? readFile("/proc/self/status") else { return 0 }
    for line in String(decoding: status, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
    }
    return 0
}

@Suite("Introspection answers")
struct IntrospectionAnswerTests {
    let configuration = IntrospectionProvider.Configuration(url: "https://idp.example/introspect")
    let logger = Logger(label: "test", level: .error)

    func decode(_ json: String) throws -> [String: JSONValue] {
        try JSON.decode([String: JSONValue].self, from: Array(json.utf8))
    }

    @Test func anExpiryInThePastRefusesTheTokenWhetherIntegerOrFraction() throws {
        for exp in ["999", "999.5"] {
            let answer = try decode(#"{"active": true, "username": "alice", "exp": \#(exp)}"#)
            #expect(
                IntrospectionProvider.caller(from: answer, now: 1_000, configuration: configuration, logger: logger)
                    == nil)
        }
        let live = try decode(#"{"active": true, "username": "alice", "exp": 2000, "roles": ["user", "root"]}"#)
        let caller = IntrospectionProvider.caller(from: live, now: 1_000, configuration: configuration, logger: logger)
        #expect(caller == Caller(name: "alice", roles: ["user"], isAdmin: false), "unknown roles are dropped")
    }

    @Test func inactiveOrNamelessAnswersAreRefused() throws {
        for json in [
            #"{"active": false, "username": "alice"}"#, #"{"username": "alice"}"#,
            #"{"active": true}"#, #"{"active": true, "username": "\u0430lice"}"#,
        ] {
            #expect(
                IntrospectionProvider.caller(
                    from: try decode(json), now: 0, configuration: configuration,
                    logger: logger) == nil, "\(json)")
        }
    }
}
