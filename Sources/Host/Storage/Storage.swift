/// Persistent storage under the barrier. Two backends implement it: SQLite (embedded) and, later,
/// PostgreSQL. Everything stored through it is either ciphertext or non-secret metadata.
public protocol Storage: Sendable {
    /// Runs `body` in a write transaction: it commits when `body` returns and rolls back when it throws.
    func write<T>(_ body: (any StorageTransaction) throws -> T) throws -> T
    /// Runs `body` against a consistent read snapshot.
    func read<T>(_ body: (any StorageTransaction) throws -> T) throws -> T
    /// One entry, read on its own: the hot path of every request, without a transaction around it.
    func entry(_ path: String) throws -> StoredEntry?
}

/// A barrier entry as stored: ciphertext plus the key id and version it was sealed with, kept in
/// their own columns so that rotation finds every entry of a key by id (audit #44).
public struct StoredEntry: Sendable, Equatable {
    public var path: String
    public var keyID: String
    public var keyVersion: UInt32
    public var value: [UInt8]

    public init(path: String, keyID: String, keyVersion: UInt32, value: [UInt8]) {
        self.path = path
        self.keyID = keyID
        self.keyVersion = keyVersion
        self.value = value
    }
}

/// A data encryption key wrapped by the MEK.
public struct WrappedKey: Sendable, Equatable {
    public var keyID: String
    public var version: UInt32
    public var wrapped: [UInt8]
    public var createdAt: Int64

    public init(keyID: String, version: UInt32, wrapped: [UInt8], createdAt: Int64) {
        self.keyID = keyID
        self.version = version
        self.wrapped = wrapped
        self.createdAt = createdAt
    }
}

/// The seal configuration: how to derive the KWK from the password, and the MEK sealed under it.
public struct SealConfigRecord: Sendable, Equatable {
    public var format: UInt32
    public var argon2Time: UInt32
    public var argon2MemoryKiB: UInt32
    public var argon2Lanes: UInt32
    public var salt: [UInt8]
    public var sealedMEK: [UInt8]
    /// Counts MEK rotations (informational; the MEK's associated data binds the format only).
    public var mekGeneration: UInt32

    public init(
        format: UInt32, argon2Time: UInt32, argon2MemoryKiB: UInt32, argon2Lanes: UInt32, salt: [UInt8],
        sealedMEK: [UInt8], mekGeneration: UInt32
    ) {
        self.format = format
        self.argon2Time = argon2Time
        self.argon2MemoryKiB = argon2MemoryKiB
        self.argon2Lanes = argon2Lanes
        self.salt = salt
        self.sealedMEK = sealedMEK
        self.mekGeneration = mekGeneration
    }
}

/// The operations available inside a transaction.
public protocol StorageTransaction {
    func sealConfig() throws -> SealConfigRecord?
    func putSealConfig(_ config: SealConfigRecord) throws

    func wrappedKeys() throws -> [WrappedKey]
    func putWrappedKey(_ key: WrappedKey) throws
    /// Deletes the versions of `keyID` below `version` (all versions if nil). Fails if an entry still
    /// uses one of them.
    func deleteWrappedKeys(keyID: String, below version: UInt32?) throws

    func entry(_ path: String) throws -> StoredEntry?
    /// Inserts or replaces.
    func putEntry(_ entry: StoredEntry) throws
    /// Inserts only if absent; false if the path exists.
    func insertEntry(_ entry: StoredEntry) throws -> Bool
    /// Replaces `entry.path` only if it still holds exactly `expected` (compare and swap).
    func replaceEntry(_ entry: StoredEntry, expected: StoredEntry) throws -> Bool
    /// True if something was deleted.
    func deleteEntry(_ path: String) throws -> Bool
    /// Deletes every entry whose path starts with `prefix`; returns how many.
    func deleteEntries(prefix: String) throws -> Int
    /// Deletes every entry sealed under any version of `keyID`; returns how many.
    func deleteEntries(keyID: String) throws -> Int
    /// Paths starting with `prefix`, sorted bytewise. `%` and `_` are ordinary characters (audit #43).
    func listEntries(prefix: String, limit: Int?) throws -> [String]
    /// Entries of `keyID` sealed with a version below `version`, in path order, after `path` if given.
    func entries(keyID: String, below version: UInt32, after path: String?, limit: Int) throws -> [StoredEntry]
    func countEntries(keyID: String, below version: UInt32?) throws -> Int

    /// Public objects: non-secret bytes in plaintext (CRLs, KRLs, CA certificates), one per path and
    /// content type, served even while sealed.
    func putPublicObject(path: String, contentType: String, value: [UInt8]) throws
    /// Every content type stored at `path`, in content-type order.
    func publicObjects(path: String) throws -> [(contentType: String, value: [UInt8])]
    func deletePublicObjects(path: String) throws
    func deletePublicObjects(prefix: String) throws

    /// The plaintext copy of the mount table (name to engine type), for routing public objects while
    /// sealed. The authoritative table is in the barrier.
    func mountRouting() throws -> [String: String]
    func putMountRouting(name: String, type: String) throws
    func deleteMountRouting(name: String) throws
}

/// The one error type of the storage layer.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case open, schema, query, busy, constraint, corrupt
    }

    public let code: Code
    public let reason: String
    public let location: String

    public init(_ code: Code, _ reason: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.location = "\(file):\(line)"
    }

    public var description: String { "storage \(code.rawValue): \(reason)" }
}

/// The smallest string greater than every string that starts with `prefix`, for a range scan.
/// Nil when there is none (an empty prefix, or one of only 0x7f bytes, which validated paths never hold).
func prefixUpperBound(_ prefix: String) -> String? {
    var bytes = Array(prefix.utf8)
    precondition(bytes.allSatisfy { $0 < 0x80 }, "storage paths are ASCII")
    while let last = bytes.last {
        if last < 0x7f {
            bytes[bytes.count - 1] = last + 1
            return String(decoding: bytes, as: UTF8.self)
        }
        bytes.removeLast()
    }
    return nil
}
