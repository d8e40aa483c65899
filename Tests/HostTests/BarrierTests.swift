import Testing
@testable import Host
import MetacryptCrypto

@Suite("Barrier security properties")
struct BarrierTests {
    @Test func storedBytesDifferFromThePlaintext() throws {
        let (barrier, storage, _) = try makeBarrier()
        let secret = Array("the launch codes are 0000".utf8)
        try barrier.put("sys/test/secret", value: secret, keyID: Barrier.systemKeyID)

        let stored = try #require(try storage.read { try $0.entry("sys/test/secret") })
        #expect(!stored.value.isEmpty)
        #expect(stored.value.firstRange(of: secret) == nil)
        #expect(try barrier.get("sys/test/secret")?.unsafeArray() == secret)
    }

    @Test func aFlippedByteAnywhereFailsToOpen() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.put("sys/test/flip", value: Array("value".utf8), keyID: Barrier.systemKeyID)
        let original = try #require(try storage.read { try $0.entry("sys/test/flip") })

        for index in original.value.indices {
            var tampered = original
            tampered.value[index] ^= 0x01
            try storage.write { try $0.putEntry(tampered) }
            #expect(throws: BarrierError.self, "byte \(index) flipped") { try barrier.get("sys/test/flip") }
        }
    }

    @Test func aRecordMovedToAnotherPathFailsToOpen() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.put("sys/test/a", value: Array("for a".utf8), keyID: Barrier.systemKeyID)
        var moved = try #require(try storage.read { try $0.entry("sys/test/a") })
        moved.path = "sys/test/b"
        try storage.write { try $0.putEntry(moved) }

        let error = #expect(throws: BarrierError.self) { try barrier.get("sys/test/b") }
        #expect(error?.code == .corrupt)
    }

    @Test func aRecordWithItsKeyColumnsEditedFailsToOpen() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.createKey("mount:other")
        try barrier.put("sys/test/k", value: Array("v".utf8), keyID: Barrier.systemKeyID)
        var edited = try #require(try storage.read { try $0.entry("sys/test/k") })
        edited.keyID = "mount:other"
        try storage.write { try $0.putEntry(edited) }
        #expect(throws: BarrierError.self) { try barrier.get("sys/test/k") }
    }

    @Test func aWrongPasswordGivesTheUniformError() throws {
        let (barrier, _, path) = try makeBarrier()
        barrier.seal()
        let again = Barrier(storage: try SQLiteStorage(path: path))
        let wrong = #expect(throws: BarrierError.self) {
            try again.unseal(password: SecureBytes(copying: Array("wrong password".utf8)))
        }
        #expect(wrong?.code == .unsealFailed)
        #expect(wrong?.reason == BarrierError.unsealFailed().reason)
        try again.unseal(password: testPassword)
        #expect(!again.isSealed)
    }

    @Test func theSealedMEKMovedIntoADEKPlaceFailsTheUnseal() throws {
        let (barrier, storage, path) = try makeBarrier()
        barrier.seal()
        // Replace the system DEK's wrapped bytes with the sealed MEK: a different AAD must refuse it.
        try storage.write { tx in
            let config = try #require(try tx.sealConfig())
            var key = try #require(try tx.wrappedKeys().first)
            key.wrapped = config.sealedMEK
            try tx.putWrappedKey(key)
        }
        let again = Barrier(storage: try SQLiteStorage(path: path))
        let error = #expect(throws: BarrierError.self) { try again.unseal(password: testPassword) }
        #expect(error?.code == .keyLoadFailed)
        #expect(error?.reason.contains("system") == true, "the failure names the key (audit #41)")
        #expect(again.isSealed)
    }

    @Test func aDamagedDEKFailsTheWholeUnsealAndNamesIt() throws {
        let (barrier, storage, path) = try makeBarrier()
        try barrier.createKey("mount:broken")
        barrier.seal()
        try storage.write { tx in
            var key = try #require(try tx.wrappedKeys().first { $0.keyID == "mount:broken" })
            key.wrapped[key.wrapped.count - 1] ^= 0xff
            try tx.putWrappedKey(key)
        }
        let again = Barrier(storage: try SQLiteStorage(path: path))
        let error = #expect(throws: BarrierError.self) { try again.unseal(password: testPassword) }
        #expect(error?.reason.contains("mount:broken") == true)
        #expect(again.isSealed, "audit #41: no partial unseal")
    }

    @Test func sealedBarrierFailsClosedWithTheSealedError() throws {
        let (barrier, _, _) = try makeBarrier()
        try barrier.put("sys/x", value: [1], keyID: Barrier.systemKeyID)
        barrier.seal()
        for operation: () throws -> Void in [
            { _ = try barrier.get("sys/x") },
            { try barrier.put("sys/x", value: [2], keyID: Barrier.systemKeyID) },
            { try barrier.delete("sys/x") },
            { _ = try barrier.list(prefix: "sys/") },
            { try barrier.rotateKey(Barrier.systemKeyID) },
        ] {
            let error = #expect(throws: BarrierError.self) { try operation() }
            #expect(error?.code == .sealed)
        }
    }

    @Test func theMEKIsBoundToItsPurposeByAssociatedData() throws {
        // audit #42: the sealed MEK opens only with the MEK AAD.
        let kwk = SecureBytes(randomCount: 32)
        let mek = SecureBytes(randomCount: 32)
        let sealed = try AESGCM.seal(mek, key: kwk, aad: BarrierFormat.mekAAD(format: BarrierFormat.sealConfigV1))
        #expect(throws: CryptoError.self) { try AESGCM.open(sealed, key: kwk, aad: [UInt8]()) }
        #expect(throws: CryptoError.self) {
            try AESGCM.open(sealed, key: kwk, aad: BarrierFormat.dekAAD(keyID: "system", version: 1))
        }
        #expect(try AESGCM.open(sealed, key: kwk, aad: BarrierFormat.mekAAD(format: 1)) == mek)
    }

    @Test func anUnknownEntryFormatVersionIsRefused() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.put("sys/v", value: [1, 2, 3], keyID: Barrier.systemKeyID)
        var entry = try #require(try storage.read { try $0.entry("sys/v") })
        entry.value[0] = 2
        try storage.write { try $0.putEntry(entry) }
        let error = #expect(throws: BarrierError.self) { try barrier.get("sys/v") }
        #expect(error?.code == .corrupt)
    }

    @Test func pathsWithTraversalOrControlBytesAreRefused() throws {
        let (barrier, _, _) = try makeBarrier()
        for bad in ["", "/abs", "a//b", "a/../b", "..", "a/.", "a\u{0}b", "a b", "é", String(repeating: "a", count: 1025)] {
            #expect(throws: BarrierError.self, "path \(bad.debugDescription)") {
                try barrier.put(bad, value: [1], keyID: Barrier.systemKeyID)
            }
        }
    }
}

@Suite("Key rotation")
struct RotationTests {
    @Test func mekRotationKeepsEveryEntryReadableAndReplacesTheSealedMEK() throws {
        let (barrier, storage, path) = try makeBarrier()
        try barrier.createKey("mount:m")
        for i in 0..<20 {
            try barrier.put("engine/kv/m/\(i)", value: Array("value \(i)".utf8), keyID: "mount:m")
        }
        let before = try #require(try storage.read { try $0.sealConfig() })
        let wrappedBefore = try storage.read { try $0.wrappedKeys() }

        try barrier.rotateMEK(password: testPassword)

        let after = try #require(try storage.read { try $0.sealConfig() })
        #expect(after.sealedMEK != before.sealedMEK)
        #expect(after.mekGeneration == before.mekGeneration + 1)
        let wrappedAfter = try storage.read { try $0.wrappedKeys() }
        #expect(wrappedAfter.count == wrappedBefore.count)
        for (a, b) in zip(wrappedBefore, wrappedAfter) { #expect(a.wrapped != b.wrapped, "\(a.keyID) re-wrapped") }

        // A fresh process unseals with the same password and reads everything.
        let again = Barrier(storage: try SQLiteStorage(path: path))
        try again.unseal(password: testPassword)
        for i in 0..<20 { #expect(try again.get("engine/kv/m/\(i)")?.unsafeArray() == Array("value \(i)".utf8)) }
    }

    @Test func mekRotationWithANewPasswordRetiresTheOldOne() throws {
        let (barrier, _, path) = try makeBarrier()
        let newPassword = SecureBytes(copying: Array("a brand new password".utf8))
        try barrier.rotateMEK(password: testPassword, newPassword: newPassword)
        let again = Barrier(storage: try SQLiteStorage(path: path))
        #expect(throws: BarrierError.self) { try again.unseal(password: testPassword) }
        try again.unseal(password: newPassword)
    }

    @Test func mekRotationRefusesAWrongPasswordAndChangesNothing() throws {
        let (barrier, storage, _) = try makeBarrier()
        let before = try storage.read { try $0.sealConfig() }
        #expect(throws: BarrierError.self) {
            try barrier.rotateMEK(password: SecureBytes(copying: Array("not the password".utf8)))
        }
        #expect(try storage.read { try $0.sealConfig() } == before)
    }

    @Test func dekRotationReencryptsEveryEntryFoundByKeyIDAndRetiresTheOldVersion() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.createKey("mount:m")
        // Entries of one key id under unusual paths are found by the key id column, not by path (audit #44).
        let paths = ["engine/kv/m/a", "engine/kv/m/deep/b", "sys/odd/c"]
        for path in paths { try barrier.put(path, value: Array(path.utf8), keyID: "mount:m") }
        try barrier.put("sys/other", value: [9], keyID: Barrier.systemKeyID)

        #expect(try barrier.rotateKey("mount:m") == 2)
        #expect(try storage.read { try $0.countEntries(keyID: "mount:m", below: 2) } == 3)
        #expect(try barrier.reencrypt("mount:m") == 3)

        #expect(try storage.read { try $0.countEntries(keyID: "mount:m", below: 2) } == 0)
        let versions = try storage.read { try $0.wrappedKeys() }.filter { $0.keyID == "mount:m" }.map(\.version)
        #expect(versions == [2])
        for path in paths { #expect(try barrier.get(path)?.unsafeArray() == Array(path.utf8)) }
        #expect(try barrier.get("sys/other")?.unsafeArray() == [9])
        #expect(try storage.read { try $0.entry("sys/other") }?.keyVersion == 1)
    }

    @Test func anUnreadableEntryIsReportedWithoutBlockingTheOthers() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.createKey("mount:m")
        for name in ["a", "b", "c"] { try barrier.put("engine/kv/m/\(name)", value: Array(name.utf8), keyID: "mount:m") }
        var damaged = try #require(try storage.read { try $0.entry("engine/kv/m/b") })
        damaged.value[damaged.value.count - 1] ^= 1
        try storage.write { try $0.putEntry(damaged) }

        try barrier.rotateKey("mount:m")
        let error = #expect(throws: BarrierError.self) { try barrier.reencrypt("mount:m") }
        #expect(error?.reason.contains("engine/kv/m/b") == true)
        #expect(try storage.read { try $0.entry("engine/kv/m/a") }?.keyVersion == 2)
        #expect(try storage.read { try $0.entry("engine/kv/m/c") }?.keyVersion == 2)
        #expect(try storage.read { try $0.wrappedKeys() }.filter { $0.keyID == "mount:m" }.count == 2,
                "the old version stays while an entry needs it")
    }

    @Test func reencryptionNeverOverwritesAConcurrentWrite() throws {
        let (barrier, storage, _) = try makeBarrier()
        try barrier.createKey("mount:m")
        try barrier.put("engine/kv/m/x", value: Array("old".utf8), keyID: "mount:m")
        try barrier.rotateKey("mount:m")
        let stale = try #require(try storage.read { try $0.entry("engine/kv/m/x") })
        try barrier.put("engine/kv/m/x", value: Array("new".utf8), keyID: "mount:m")
        // A compare-and-swap against the stale row must not apply.
        var resealed = stale
        resealed.keyVersion = 2
        #expect(try storage.write { try $0.replaceEntry(resealed, expected: stale) } == false)
        try barrier.reencrypt("mount:m")
        #expect(try barrier.get("engine/kv/m/x")?.unsafeArray() == Array("new".utf8))
    }
}
