import Testing
@testable import Host

@Suite("SQLite storage")
struct StorageTests {
    @Test func everyPooledConnectionHasTheSamePragmas() throws {
        // audit #46: the settings hold on every connection, not only the first one opened.
        let storage = try SQLiteStorage(path: temporaryDatabasePath())
        #expect(try storage.pragmaOnEveryConnection("journal_mode", connections: 5) == Array(repeating: "wal", count: 5))
        #expect(try storage.pragmaOnEveryConnection("foreign_keys", connections: 5) == Array(repeating: "1", count: 5))
        #expect(try storage.pragmaOnEveryConnection("busy_timeout", connections: 5)
            == Array(repeating: String(SQLiteStorage.busyTimeoutMilliseconds), count: 5))
        #expect(try storage.pragmaOnEveryConnection("synchronous", connections: 5) == Array(repeating: "2", count: 5))
    }

    @Test func prefixListingTreatsPercentAndUnderscoreAsPlainCharacters() throws {
        // audit #43: a LIKE pattern would let 'a%' or 'a_' match far more than the prefix.
        let (barrier, _, _) = try makeBarrier()
        for path in ["sys/a%/1", "sys/a%/2", "sys/ab/1", "sys/a_/1", "sys/aX/1", "sys/a%b/1"] {
            try barrier.put(path, value: [1], keyID: Barrier.systemKeyID)
        }
        #expect(try barrier.list(prefix: "sys/a%/") == ["sys/a%/1", "sys/a%/2"])
        #expect(try barrier.list(prefix: "sys/a_/") == ["sys/a_/1"])
        #expect(try barrier.list(prefix: "sys/a") == ["sys/a%/1", "sys/a%/2", "sys/a%b/1", "sys/aX/1", "sys/a_/1", "sys/ab/1"])
    }

    @Test func prefixUpperBoundIsTheNextStringAfterThePrefix() {
        #expect(prefixUpperBound("a/") == "a0")
        #expect(prefixUpperBound("") == nil)
        #expect(prefixUpperBound("a\u{7f}") == "b")
    }

    @Test func aFailedTransactionLeavesNothingBehind() throws {
        let storage = try SQLiteStorage(path: temporaryDatabasePath())
        struct Stop: Error {}
        #expect(throws: Stop.self) {
            try storage.write { tx in
                try tx.putWrappedKey(WrappedKey(keyID: "k", version: 1, wrapped: [1], createdAt: 0))
                throw Stop()
            }
        }
        #expect(try storage.read { try $0.wrappedKeys() }.isEmpty)
    }

    @Test func anEntryCannotReferToAMissingKeyVersion() throws {
        let storage = try SQLiteStorage(path: temporaryDatabasePath())
        let error = #expect(throws: StorageError.self) {
            try storage.write { try $0.putEntry(StoredEntry(path: "p", keyID: "nope", keyVersion: 1, value: [1])) }
        }
        #expect(error?.code == .constraint)
    }
}

@Suite("Storage durability")
struct DurabilityTests {
    @Test func normalDurabilityIsSetOnEveryConnection() throws {
        let storage = try SQLiteStorage(path: temporaryDatabasePath(), durability: .normal)
        #expect(try storage.pragmaOnEveryConnection("synchronous", connections: 3) == ["1", "1", "1"])
    }
}
