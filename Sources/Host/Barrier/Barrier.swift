import FoundationEssentials
import MetacryptCrypto
import Synchronization

/// The cryptographic barrier: everything written to storage passes through it and is sealed with
/// AES-256-GCM under a per-key-id DEK, bound to its path.
///
/// Key hierarchy: password --Argon2id--> KWK --seals--> MEK --wraps--> DEK (one per key id and
/// version) --seals--> entries. docs/barrier.md specifies the formats.
public final class Barrier: Sendable {
    /// The key id of the host's own entries.
    public static let systemKeyID = "system"

    public struct Status: Sendable, Equatable {
        public var initialized: Bool
        public var sealed: Bool
    }

    /// Where a key id stands: its versions and how many entries still use an older one.
    public struct KeyStatus: Sendable, Equatable, Codable {
        public var keyID: String
        public var currentVersion: UInt32
        public var versions: [UInt32]
        public var entriesOnOlderVersions: Int

        enum CodingKeys: String, CodingKey {
            case keyID = "key_id"
            case currentVersion = "current_version"
            case versions
            case entriesOnOlderVersions = "entries_on_older_versions"
        }
    }

    let storage: any Storage
    private let ring = Locked<KeyRing?>(nil)
    private let initializedSeen = Atomic<Bool>(false)
    /// Serialises initialize, unseal, seal and key management. Reads and writes never take it.
    private let management = Locked<Void>(())
    private let now: @Sendable () -> Int64

    public init(storage: any Storage, now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.storage = storage
        self.now = now
    }

    // MARK: - Lifecycle

    public func status() throws -> Status {
        // Once initialised, always initialised: only the first answers need storage.
        if !initializedSeen.load(ordering: .acquiring), try storage.read({ try $0.sealConfig() }) != nil {
            initializedSeen.store(true, ordering: .releasing)
        }
        return Status(initialized: initializedSeen.load(ordering: .acquiring), sealed: ring.withLock { $0 == nil })
    }

    public var isSealed: Bool { ring.withLock { $0 == nil } }

    /// Creates the seal configuration, the MEK and the system DEK, and leaves the barrier unsealed.
    /// `entries` (path and plaintext) are sealed under the system key and written in the same
    /// transaction, so a crash cannot leave an initialised barrier without them (the first account).
    public func initialize(
        password: SecureBytes, parameters: Argon2Parameters, entries: [(path: String, value: [UInt8])] = []
    ) throws {
        for entry in entries { try Self.validatePath(entry.path) }
        if let problem = parameters.problem() { throw BarrierError(.invalidArgument, problem) }
        guard password.count >= 8 else {
            throw BarrierError(.invalidArgument, "the password must be at least 8 bytes long")
        }
        try management.withLock { _ in
            // Derive the KWK from a fresh salt.
            let salt = randomBytes(BarrierFormat.saltSize)
            let kwk = try Argon2id.deriveKey(password: password, salt: salt, parameters: parameters)

            // Create the MEK and the system DEK.
            let mek = SecureBytes(randomCount: AESGCM.keySize)
            let systemKey = SecureBytes(randomCount: AESGCM.keySize)
            let sealedMEK = try AESGCM.seal(
                mek, key: kwk, aad: BarrierFormat.mekAAD(format: BarrierFormat.sealConfigV1))
            let wrapped = try AESGCM.seal(
                systemKey, key: mek, aad: BarrierFormat.dekAAD(keyID: Self.systemKeyID, version: 1))

            let sealedEntries = try entries.map {
                try sealEntry(path: $0.path, plaintext: $0.value, keyID: Self.systemKeyID, version: 1, key: systemKey)
            }

            // Persist everything in one transaction, refusing if another initialize got there first.
            try storage.write { tx in
                guard try tx.sealConfig() == nil else {
                    throw BarrierError(.alreadyInitialized, "the barrier is already initialized")
                }
                try tx.putSealConfig(
                    SealConfigRecord(
                        format: BarrierFormat.sealConfigV1, argon2Time: parameters.time,
                        argon2MemoryKiB: parameters.memoryKiB, argon2Lanes: parameters.lanes, salt: salt,
                        sealedMEK: sealedMEK, mekGeneration: 1))
                try tx.putWrappedKey(
                    WrappedKey(keyID: Self.systemKeyID, version: 1, wrapped: wrapped, createdAt: now()))
                for entry in sealedEntries { try tx.putEntry(entry) }
            }

            ring.withLock {
                $0 = KeyRing(
                    mek: mek, mekGeneration: 1,
                    keys: [
                        Self.systemKeyID: .init(current: 1, versions: [1: systemKey])
                    ])
            }
        }
    }

    /// Derives the KWK, opens the MEK and unwraps every DEK. Any DEK that fails makes the whole unseal
    /// fail, naming it (audit #41). A wrong password gives one uniform error.
    public func unseal(password: SecureBytes) throws {
        try management.withLock { _ in
            if ring.withLock({ $0 != nil }) { return }

            // Open the MEK.
            let (config, mek) = try openMEK(password: password)

            // Unwrap every DEK; one failure fails the unseal.
            let wrappedKeys = try storage.read { try $0.wrappedKeys() }
            var keys: [String: KeyRing.DataKeys] = [:]
            for wrapped in wrappedKeys {
                let dek: SecureBytes
                do {
                    dek = try AESGCM.open(
                        wrapped.wrapped, key: mek,
                        aad: BarrierFormat.dekAAD(keyID: wrapped.keyID, version: wrapped.version))
                } catch {
                    throw BarrierError(
                        .keyLoadFailed, "data key \(wrapped.keyID) version \(wrapped.version) failed to unwrap")
                }
                guard dek.count == AESGCM.keySize else {
                    throw BarrierError(
                        .keyLoadFailed, "data key \(wrapped.keyID) version \(wrapped.version) has the wrong length")
                }
                let existing = keys[wrapped.keyID]
                var versions = existing?.versions ?? [:]
                versions[wrapped.version] = dek
                keys[wrapped.keyID] = .init(current: max(existing?.current ?? 0, wrapped.version), versions: versions)
            }
            guard keys[Self.systemKeyID] != nil else {
                throw BarrierError(.keyLoadFailed, "the system data key is missing")
            }

            ring.withLock { $0 = KeyRing(mek: mek, mekGeneration: config.mekGeneration, keys: keys) }
        }
    }

    /// Drops the key ring. Requests already holding it finish; every key is wiped when the last
    /// reference goes. New requests get the sealed error.
    public func seal() {
        management.withLock { _ in
            ring.withLock { $0 = nil }
        }
    }

    /// Verifies the password and returns the seal configuration and the MEK.
    private func openMEK(password: SecureBytes) throws -> (SealConfigRecord, SecureBytes) {
        guard let config = try storage.read({ try $0.sealConfig() }) else {
            throw BarrierError(.notInitialized, "the barrier is not initialized")
        }
        guard config.format == BarrierFormat.sealConfigV1 else {
            throw BarrierError(.unsealFailed, "seal configuration format \(config.format) is not supported")
        }
        let parameters = Argon2Parameters(
            time: config.argon2Time, memoryKiB: config.argon2MemoryKiB, lanes: config.argon2Lanes)
        guard parameters.problem() == nil, config.salt.count == BarrierFormat.saltSize else {
            throw BarrierError.unsealFailed()
        }
        let kwk = try Argon2id.deriveKey(password: password, salt: config.salt, parameters: parameters)
        do {
            let mek = try AESGCM.open(config.sealedMEK, key: kwk, aad: BarrierFormat.mekAAD(format: config.format))
            guard mek.count == AESGCM.keySize else { throw BarrierError.unsealFailed() }
            return (config, mek)
        } catch {
            throw BarrierError.unsealFailed()
        }
    }

    // MARK: - Key management

    /// Replaces the MEK: every DEK is re-wrapped and the sealed MEK replaced in one transaction, so a
    /// crash leaves either the old state or the new one, whole (audit #40). With `newPassword`, the KWK
    /// changes too (fresh salt).
    public func rotateMEK(password: SecureBytes, newPassword: SecureBytes? = nil) throws {
        if let newPassword, newPassword.count < 8 {
            throw BarrierError(.invalidArgument, "the new password must be at least 8 bytes long")
        }
        try management.withLock { _ in
            guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }

            // Prove possession of the password; it also yields the KWK parameters.
            let (config, oldMEK) = try openMEK(password: password)
            guard oldMEK == current.mek else { throw BarrierError.unsealFailed() }
            let parameters = Argon2Parameters(
                time: config.argon2Time, memoryKiB: config.argon2MemoryKiB, lanes: config.argon2Lanes)
            let salt = newPassword == nil ? config.salt : randomBytes(BarrierFormat.saltSize)
            let kwk = try Argon2id.deriveKey(password: newPassword ?? password, salt: salt, parameters: parameters)

            // Seal a fresh MEK, and re-wrap every DEK under it, inside one write transaction.
            let newMEK = SecureBytes(randomCount: AESGCM.keySize)
            let generation = config.mekGeneration &+ 1
            try storage.write { tx in
                for wrapped in try tx.wrappedKeys() {
                    let aad = BarrierFormat.dekAAD(keyID: wrapped.keyID, version: wrapped.version)
                    let dek: SecureBytes
                    do {
                        dek = try AESGCM.open(wrapped.wrapped, key: oldMEK, aad: aad)
                    } catch {
                        throw BarrierError(
                            .keyLoadFailed, "data key \(wrapped.keyID) v\(wrapped.version) failed to unwrap")
                    }
                    var rewrapped = wrapped
                    rewrapped.wrapped = try AESGCM.seal(dek, key: newMEK, aad: aad)
                    try tx.putWrappedKey(rewrapped)
                }
                var updated = config
                updated.salt = salt
                updated.sealedMEK = try AESGCM.seal(newMEK, key: kwk, aad: BarrierFormat.mekAAD(format: config.format))
                updated.mekGeneration = generation
                try tx.putSealConfig(updated)
            }

            // Swap in the new MEK; the old one is wiped once no request holds the old ring.
            ring.withLock { $0 = $0?.replacingMEK(newMEK, generation: generation) }
        }
    }

    /// Creates version 1 of a new key id (for a new mount). With `record`, also writes that entry under the
    /// system key in the same transaction, so a key never exists without the record that explains it.
    public func createKey(_ keyID: String, record: (path: String, value: [UInt8])? = nil) throws {
        try Self.validateKeyID(keyID)
        if let record { try Self.validatePath(record.path) }
        try management.withLock { _ in
            guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
            guard current.keys[keyID] == nil else { throw BarrierError(.keyExists, "key id \(keyID) exists") }
            try addVersion(keyID, version: 1, ring: current, record: record)
        }
    }

    /// Adds a new version of `keyID` and makes it current. Existing entries keep their version until
    /// ``reencrypt(_:batchSize:)`` moves them.
    @discardableResult
    public func rotateKey(_ keyID: String) throws -> UInt32 {
        try management.withLock { _ in
            guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
            guard let (version, _) = current.current(keyID) else {
                throw BarrierError(.unknownKey, "no data key with id \(keyID)")
            }
            try addVersion(keyID, version: version + 1, ring: current)
            return version + 1
        }
    }

    private func addVersion(
        _ keyID: String, version: UInt32, ring current: KeyRing, record: (path: String, value: [UInt8])? = nil
    ) throws {
        let dek = SecureBytes(randomCount: AESGCM.keySize)
        let wrapped = try AESGCM.seal(dek, key: current.mek, aad: BarrierFormat.dekAAD(keyID: keyID, version: version))
        let entry = try record.map { record -> StoredEntry in
            guard let (systemVersion, systemKey) = current.current(Self.systemKeyID) else {
                throw BarrierError(.unknownKey, "no system key")
            }
            return try sealEntry(
                path: record.path, plaintext: record.value, keyID: Self.systemKeyID,
                version: systemVersion, key: systemKey)
        }
        try storage.write { tx in
            try tx.putWrappedKey(WrappedKey(keyID: keyID, version: version, wrapped: wrapped, createdAt: now()))
            if let entry {
                guard try tx.insertEntry(entry) else { throw BarrierError(.keyExists, "\(entry.path) exists") }
            }
        }
        ring.withLock { $0 = $0?.adding(keyID, version: version, key: dek) }
    }

    /// Deletes every entry sealed under `keyID`, every version of the key, and the entries at `paths`
    /// (the record that named the key), in one transaction.
    public func destroyKey(
        _ keyID: String, deleting paths: [String] = [],
        alsoInTransaction more: ((any StorageTransaction) throws -> Void)? = nil
    ) throws {
        guard keyID != Self.systemKeyID else {
            throw BarrierError(.invalidArgument, "the system key cannot be destroyed")
        }
        for path in paths { try Self.validatePath(path) }
        try management.withLock { _ in
            guard ring.withLock({ $0 }) != nil else { throw BarrierError.sealed() }
            try storage.write { tx in
                _ = try tx.deleteEntries(keyID: keyID)
                for path in paths { _ = try tx.deleteEntry(path) }
                try tx.deleteWrappedKeys(keyID: keyID, below: nil)
                try more?(tx)
            }
            ring.withLock { $0 = $0?.removing(keyID) }
        }
    }

    /// The key ids currently loaded.
    public func keyIDs() -> [String] {
        ring.withLock { $0.map { Array($0.keys.keys).sorted() } ?? [] }
    }

    /// Re-encrypts every entry of `keyID` still on an older version under the current one, then deletes
    /// the old versions. Each plaintext is wiped as soon as it is re-sealed (audit #47). Entries written
    /// concurrently are never overwritten: each update is a compare-and-swap. An entry that fails to open
    /// is skipped and reported, and the old version then stays (the foreign key would refuse to drop a
    /// version still in use anyway). Returns how many entries it moved. Safe to call again after a crash:
    /// it starts over from what storage holds.
    @discardableResult
    public func reencrypt(_ keyID: String, batchSize: Int = 256, progress: ((Int) -> Void)? = nil) throws -> Int {
        var moved = 0
        var unreadable: [String] = []
        var cursor: String?
        while true {
            guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
            guard let (version, key) = current.current(keyID) else {
                throw BarrierError(.unknownKey, "no data key with id \(keyID)")
            }
            let batch = try storage.read {
                try $0.entries(keyID: keyID, below: version, after: cursor, limit: batchSize)
            }
            guard let last = batch.last else { break }
            cursor = last.path
            var updates: [(StoredEntry, StoredEntry)] = []
            for stored in batch {
                do {
                    let plaintext = try open(stored, ring: current)
                    updates.append(
                        (
                            try sealEntry(
                                path: stored.path, plaintext: plaintext, keyID: keyID,
                                version: version, key: key), stored
                        ))
                    // `plaintext` is wiped here, as it goes out of scope.
                } catch let error as BarrierError where error.code == .corrupt {
                    unreadable.append(stored.path)
                }
            }
            moved += try storage.write { tx in
                try updates.reduce(0) { count, pair in try tx.replaceEntry(pair.0, expected: pair.1) ? count + 1 : count
                }
            }
            progress?(moved)
        }
        guard unreadable.isEmpty else {
            throw BarrierError(
                .corrupt,
                "\(unreadable.count) entries of \(keyID) failed to open and keep the old key "
                    + "version: \(unreadable.prefix(5).joined(separator: ", "))")
        }
        // Entries written on an old ring while this ran, if any, are picked up by a fresh pass.
        guard let current = ring.withLock({ $0 }), let (version, _) = current.current(keyID) else {
            throw BarrierError.sealed()
        }
        if try storage.read({ try $0.countEntries(keyID: keyID, below: version) }) > 0 {
            return moved + (try reencrypt(keyID, batchSize: batchSize, progress: progress))
        }
        try retireOldVersions(keyID, below: version)
        return moved
    }

    private func retireOldVersions(_ keyID: String, below version: UInt32) throws {
        try management.withLock { _ in
            let retired = try storage.write { tx -> Bool in
                guard try tx.countEntries(keyID: keyID, below: version) == 0 else { return false }
                try tx.deleteWrappedKeys(keyID: keyID, below: version)
                return true
            }
            // Only keys that are gone from storage leave the ring; an entry that slipped in keeps its key.
            if retired { ring.withLock { $0 = $0?.dropping(keyID, below: version) } }
        }
    }

    /// The versions of every key id and how many entries await re-encryption.
    public func keyStatus() throws -> [KeyStatus] {
        guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
        return try storage.read { tx in
            try current.keys.keys.sorted().map { id in
                let set = current.keys[id]!
                return KeyStatus(
                    keyID: id, currentVersion: set.current, versions: set.versions.keys.sorted(),
                    entriesOnOlderVersions: try tx.countEntries(keyID: id, below: set.current))
            }
        }
    }

    /// Key ids with entries on an older version, for resuming re-encryption after a restart.
    public func keysNeedingReencryption() throws -> [String] {
        try keyStatus().filter { $0.entriesOnOlderVersions > 0 || $0.versions.count > 1 }.map(\.keyID)
    }

    // MARK: - Entries

    /// Reads and opens the entry at `path`; nil if absent.
    public func get(_ path: String) throws -> SecureBytes? {
        try Self.validatePath(path)
        guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
        guard let stored = try storage.entry(path) else { return nil }
        return try open(stored, ring: current)
    }

    /// Seals `value` under the current version of `keyID` and stores it at `path`.
    /// With `createOnly`, returns false instead of replacing an existing entry.
    @discardableResult
    public func put(_ path: String, value: some ByteView, keyID: String, createOnly: Bool = false) throws -> Bool {
        try Self.validatePath(path)
        for attempt in 0..<2 {
            guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
            guard let (version, key) = current.current(keyID) else {
                throw BarrierError(.unknownKey, "no data key with id \(keyID)")
            }
            let entry = try sealEntry(path: path, plaintext: value, keyID: keyID, version: version, key: key)
            do {
                return try storage.write { tx in
                    if createOnly { return try tx.insertEntry(entry) }
                    try tx.putEntry(entry)
                    return true
                }
            } catch let error as StorageError where error.code == .constraint && attempt == 0 {
                // The version was retired between taking the ring and writing: take the new ring, once.
                continue
            }
        }
        throw BarrierError(.busy, "key \(keyID) changed during the write; try again")
    }

    /// Seals and stores many entries under the current version of `keyID` in one transaction.
    public func putMany(_ items: [(path: String, value: [UInt8])], keyID: String) throws {
        for item in items { try Self.validatePath(item.path) }
        guard let current = ring.withLock({ $0 }) else { throw BarrierError.sealed() }
        guard let (version, key) = current.current(keyID) else {
            throw BarrierError(.unknownKey, "no data key with id \(keyID)")
        }
        let entries = try items.map {
            try sealEntry(path: $0.path, plaintext: $0.value, keyID: keyID, version: version, key: key)
        }
        try storage.write { tx in
            for entry in entries { try tx.putEntry(entry) }
        }
    }

    /// True if an entry was deleted.
    @discardableResult
    public func delete(_ path: String) throws -> Bool {
        try Self.validatePath(path)
        guard !isSealed else { throw BarrierError.sealed() }
        return try storage.write { try $0.deleteEntry(path) }
    }

    /// Paths under `prefix`, sorted.
    public func list(prefix: String, limit: Int? = nil) throws -> [String] {
        if !prefix.isEmpty { try Self.validatePath(prefix, allowTrailingSlash: true) }
        guard !isSealed else { throw BarrierError.sealed() }
        return try storage.read { try $0.listEntries(prefix: prefix, limit: limit) }
    }

    private func sealEntry(
        path: String, plaintext: some ByteView, keyID: String, version: UInt32, key: SecureBytes
    ) throws -> StoredEntry {
        let header = BarrierFormat.entryHeader(keyID: keyID, version: version)
        let box = try AESGCM.seal(plaintext, key: key, aad: BarrierFormat.entryAAD(header: header, path: path))
        return StoredEntry(path: path, keyID: keyID, keyVersion: version, value: header + box)
    }

    private func open(_ stored: StoredEntry, ring current: KeyRing) throws -> SecureBytes {
        guard let (keyID, version, headerLength) = BarrierFormat.parseEntry(stored.value),
            keyID == stored.keyID, version == stored.keyVersion
        else {
            throw BarrierError(.corrupt, "entry \(stored.path) has a malformed or unknown header")
        }
        guard let key = current.key(keyID, version: version) else {
            throw BarrierError(.corrupt, "entry \(stored.path) needs key \(keyID) v\(version), which is not loaded")
        }
        let header = Array(stored.value[0..<headerLength])
        do {
            return try AESGCM.open(
                stored.value[headerLength...], key: key, aad: BarrierFormat.entryAAD(header: header, path: stored.path))
        } catch {
            throw BarrierError(.corrupt, "entry \(stored.path) failed to open")
        }
    }

    // MARK: - Validation

    /// Barrier paths: printable ASCII without spaces, at most 1024 bytes, '/'-separated segments that are
    /// neither empty, "." nor "..".
    static func validatePath(_ path: String, allowTrailingSlash: Bool = false) throws {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= 1024 else {
            throw BarrierError(.invalidPath, "barrier path length \(bytes.count) is outside 1...1024")
        }
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw BarrierError(.invalidPath, "barrier path contains a byte outside printable ASCII")
        }
        var segments = path.split(separator: "/", omittingEmptySubsequences: false)
        if allowTrailingSlash, segments.count > 1, segments.last == "" { segments.removeLast() }
        for segment in segments where segment.isEmpty || segment == "." || segment == ".." {
            throw BarrierError(.invalidPath, "barrier path has an empty, '.' or '..' segment")
        }
    }

    static func validateKeyID(_ keyID: String) throws {
        let bytes = Array(keyID.utf8)
        guard !bytes.isEmpty, bytes.count <= BarrierFormat.maxKeyIDLength,
            bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f })
        else { throw BarrierError(.invalidArgument, "invalid key id") }
    }
}
