import CSQLite
import Synchronization

/// The embedded storage backend: one SQLite file in WAL mode.
///
/// Connections come from a small pool. Every connection, not only the first, is configured the same
/// way when it is opened (audit #46): WAL, foreign keys on, a busy timeout, and full synchronous commits
/// so that a committed transaction survives a crash of the process or the machine.
public final class SQLiteStorage: Storage {
    public static let schemaVersion = 3
    public static let busyTimeoutMilliseconds: Int32 = 10_000

    /// When a commit reaches the disk.
    public enum Durability: String, Codable, Sendable {
        /// fsync at every commit: a commit survives a crash of the machine (the default).
        case full
        /// fsync at checkpoints only: a commit survives a crash of the process, but the last few may be
        /// lost (never half-applied) if the machine loses power. Several times the write throughput.
        case normal
    }

    private let path: String
    private let pool = Locked<[SQLiteConnection]>([])
    private let maxIdle: Int
    private let durability: Durability

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    public init(path: String, durability: Durability = .full, maxIdleConnections: Int = 8) throws {
        self.path = path
        self.durability = durability
        self.maxIdle = maxIdleConnections
        let connection = try openConnection()
        try connection.migrate()
        release(connection)
    }

    public func write<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        try withConnection { try $0.transaction(immediate: true, body) }
    }

    public func read<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        try withConnection { try $0.transaction(immediate: false, body) }
    }

    public func entry(_ path: String) throws -> StoredEntry? {
        // A single SELECT runs in its own implicit transaction: BEGIN and COMMIT would only add round trips.
        try withConnection { try SQLiteTransaction(connection: $0).entry(path) }
    }

    /// The value of a PRAGMA on a fresh connection and on a pooled one, for tests of audit #46.
    public func pragmaOnEveryConnection(_ name: String, connections: Int) throws -> [String] {
        var taken: [SQLiteConnection] = []
        defer { taken.forEach(release) }
        for _ in 0..<connections { taken.append(try acquire()) }
        return try taken.map { try $0.pragma(name) }
    }

    private func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        let connection = try acquire()
        defer { release(connection) }
        return try body(connection)
    }

    private func acquire() throws -> SQLiteConnection {
        if let pooled = pool.withLock({ $0.popLast() }) { return pooled }
        return try openConnection()
    }

    private func release(_ connection: SQLiteConnection) {
        pool.withLock { idle in
            if idle.count < maxIdle { idle.append(connection) }
        }
    }

    private func openConnection() throws -> SQLiteConnection {
        let connection = try SQLiteConnection(path: path)
        try connection.exec("PRAGMA journal_mode = WAL")
        try connection.exec("PRAGMA foreign_keys = ON")
        try connection.exec(durability == .full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
        guard sqlite3_busy_timeout(connection.db, Self.busyTimeoutMilliseconds) == SQLITE_OK else {
            throw StorageError(.open, "cannot set busy_timeout on \(path)")
        }
        return connection
    }
}

/// Owns one `sqlite3` handle and its prepared statements.
final class SQLiteConnection: @unchecked Sendable {  // used by one thread at a time, via the pool
    let db: OpaquePointer
    private var statements: [String: SQLiteStatement] = [:]

    init(path: String) throws {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw StorageError(.open, "cannot open \(path): \(message)")
        }
        db = handle
        sqlite3_extended_result_codes(db, 1)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(db)
    }

    func exec(_ sql: String) throws {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql) }
    }

    func pragma(_ name: String) throws -> String {
        let statement = try prepare("PRAGMA \(name)")
        defer { statement.reset() }
        guard try statement.step() else { return "" }
        return statement.text(0) ?? ""
    }

    func prepare(_ sql: String) throws -> SQLiteStatement {
        if let cached = statements[sql] { return cached }
        var raw: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard rc == SQLITE_OK, let raw else { throw error(rc, sql) }
        let statement = SQLiteStatement(raw: raw, connection: self)
        statements[sql] = statement
        return statement
    }

    func error(_ rc: Int32, _ context: String, file: String = #fileID, line: Int = #line) -> StorageError {
        let message = String(cString: sqlite3_errmsg(db))
        let code: StorageError.Code =
            switch rc & 0xff {
            case SQLITE_BUSY, SQLITE_LOCKED: .busy
            case SQLITE_CONSTRAINT: .constraint
            case SQLITE_CORRUPT, SQLITE_NOTADB: .corrupt
            default: .query
            }
        return StorageError(code, "\(message) (sqlite \(rc)) in: \(context)", file: file, line: line)
    }

    func migrate() throws {
        try exec("BEGIN IMMEDIATE")
        do {
            // Each version's tables are created with IF NOT EXISTS, so older databases gain what they lack.
            let version = Int(try pragma("user_version")) ?? -1
            guard (0...SQLiteStorage.schemaVersion).contains(version) else {
                throw StorageError(.schema, "database schema version \(version) is not supported by this binary")
            }
            try exec(SQLiteSchema.version1)
            try exec(SQLiteSchema.version2)
            try exec(SQLiteSchema.version3)
            try exec("PRAGMA user_version = \(SQLiteStorage.schemaVersion)")
            try exec("COMMIT")
        } catch {
            try? exec("ROLLBACK")
            throw error
        }
    }

    func transaction<T>(immediate: Bool, _ body: (any StorageTransaction) throws -> T) throws -> T {
        try exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN")
        do {
            let result = try body(SQLiteTransaction(connection: self))
            try exec("COMMIT")
            return result
        } catch {
            try? exec("ROLLBACK")
            throw error
        }
    }
}

/// Owns one prepared statement. Reset after every use so it holds no read lock.
final class SQLiteStatement {
    let raw: OpaquePointer
    unowned let connection: SQLiteConnection

    init(raw: OpaquePointer, connection: SQLiteConnection) {
        self.raw = raw
        self.connection = connection
    }

    deinit { sqlite3_finalize(raw) }

    func bind(_ values: [SQLiteValue]) throws {
        sqlite3_reset(raw)
        sqlite3_clear_bindings(raw)
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .int(let v): rc = sqlite3_bind_int64(raw, index, v)
            case .text(let s):
                rc =
                    s.utf8.withContiguousStorageIfAvailable { buf in
                        buf.withMemoryRebound(to: CChar.self) {
                            mc_sqlite3_bind_text_transient(raw, index, $0.baseAddress, Int32($0.count))
                        }
                    } ?? mc_sqlite3_bind_text_transient(raw, index, s, -1)
            case .blob(let b):
                rc = b.withUnsafeBytes {
                    mc_sqlite3_bind_blob_transient(
                        raw, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count))
                }
            case .null: rc = sqlite3_bind_null(raw, index)
            }
            guard rc == SQLITE_OK else { throw connection.error(rc, "bind") }
        }
    }

    /// True if a row is available.
    func step() throws -> Bool {
        let rc = sqlite3_step(raw)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = connection.error(rc, String(cString: sqlite3_sql(raw)))
            sqlite3_reset(raw)
            throw error
        }
    }

    func reset() { sqlite3_reset(raw) }

    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(raw, column) }

    func text(_ column: Int32) -> String? {
        guard let p = sqlite3_column_text(raw, column) else { return nil }
        return String(cString: p)
    }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(raw, column))
        guard count > 0, let p = sqlite3_column_blob(raw, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }
}

enum SQLiteValue {
    case int(Int64)
    case text(String)
    case blob([UInt8])
    case null
}

enum SQLiteSchema {
    static let version1 = """
        CREATE TABLE IF NOT EXISTS seal_config (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            format INTEGER NOT NULL,
            argon2_time INTEGER NOT NULL,
            argon2_memory_kib INTEGER NOT NULL,
            argon2_lanes INTEGER NOT NULL,
            salt BLOB NOT NULL,
            sealed_mek BLOB NOT NULL,
            mek_generation INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS barrier_keys (
            key_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            wrapped BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (key_id, version)
        );
        CREATE TABLE IF NOT EXISTS barrier_entries (
            path TEXT NOT NULL PRIMARY KEY,
            key_id TEXT NOT NULL,
            key_version INTEGER NOT NULL,
            value BLOB NOT NULL,
            FOREIGN KEY (key_id, key_version) REFERENCES barrier_keys (key_id, version)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS barrier_entries_by_key ON barrier_entries (key_id, key_version);
        """

    /// Re-encryption walks a key's entries in path order from a cursor: an index on (key_id, path) makes
    /// each batch a range scan instead of a sort of every remaining entry.
    static let version3 = """
        CREATE INDEX IF NOT EXISTS barrier_entries_by_key_path ON barrier_entries (key_id, path);
        """

    static let version2 = """
        CREATE TABLE IF NOT EXISTS public_objects (
            path TEXT NOT NULL,
            content_type TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (path, content_type)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS mount_routing (
            name TEXT NOT NULL PRIMARY KEY,
            type TEXT NOT NULL
        ) WITHOUT ROWID;
        """
}

/// The SQLite implementation of a transaction's operations.
struct SQLiteTransaction: StorageTransaction {
    let connection: SQLiteConnection

    private func run(_ sql: String, _ values: [SQLiteValue] = []) throws {
        let statement = try connection.prepare(sql)
        defer { statement.reset() }
        try statement.bind(values)
        while try statement.step() {}
    }

    private func rows<T>(_ sql: String, _ values: [SQLiteValue], _ row: (SQLiteStatement) -> T) throws -> [T] {
        let statement = try connection.prepare(sql)
        defer { statement.reset() }
        try statement.bind(values)
        var out: [T] = []
        while try statement.step() { out.append(row(statement)) }
        return out
    }

    private var changes: Int { Int(sqlite3_changes(connection.db)) }

    func sealConfig() throws -> SealConfigRecord? {
        try rows(
            """
            SELECT format, argon2_time, argon2_memory_kib, argon2_lanes, salt, sealed_mek, mek_generation
            FROM seal_config WHERE id = 1
            """, []
        ) { s in
            SealConfigRecord(
                format: UInt32(truncatingIfNeeded: s.int(0)), argon2Time: UInt32(truncatingIfNeeded: s.int(1)),
                argon2MemoryKiB: UInt32(truncatingIfNeeded: s.int(2)),
                argon2Lanes: UInt32(truncatingIfNeeded: s.int(3)),
                salt: s.blob(4), sealedMEK: s.blob(5), mekGeneration: UInt32(truncatingIfNeeded: s.int(6)))
        }.first
    }

    func putSealConfig(_ c: SealConfigRecord) throws {
        try run(
            """
            INSERT OR REPLACE INTO seal_config
            (id, format, argon2_time, argon2_memory_kib, argon2_lanes, salt, sealed_mek, mek_generation)
            VALUES (1, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .int(Int64(c.format)), .int(Int64(c.argon2Time)), .int(Int64(c.argon2MemoryKiB)),
                .int(Int64(c.argon2Lanes)), .blob(c.salt), .blob(c.sealedMEK), .int(Int64(c.mekGeneration)),
            ])
    }

    func wrappedKeys() throws -> [WrappedKey] {
        try rows("SELECT key_id, version, wrapped, created_at FROM barrier_keys ORDER BY key_id, version", []) { s in
            WrappedKey(
                keyID: s.text(0) ?? "", version: UInt32(truncatingIfNeeded: s.int(1)), wrapped: s.blob(2),
                createdAt: s.int(3))
        }
    }

    func putWrappedKey(_ key: WrappedKey) throws {
        try run(
            "INSERT OR REPLACE INTO barrier_keys (key_id, version, wrapped, created_at) VALUES (?, ?, ?, ?)",
            [.text(key.keyID), .int(Int64(key.version)), .blob(key.wrapped), .int(key.createdAt)])
    }

    func deleteWrappedKeys(keyID: String, below version: UInt32?) throws {
        if let version {
            try run("DELETE FROM barrier_keys WHERE key_id = ? AND version < ?", [.text(keyID), .int(Int64(version))])
        } else {
            try run("DELETE FROM barrier_keys WHERE key_id = ?", [.text(keyID)])
        }
    }

    private static func entry(_ s: SQLiteStatement) -> StoredEntry {
        StoredEntry(
            path: s.text(0) ?? "", keyID: s.text(1) ?? "", keyVersion: UInt32(truncatingIfNeeded: s.int(2)),
            value: s.blob(3))
    }

    func entry(_ path: String) throws -> StoredEntry? {
        try rows(
            "SELECT path, key_id, key_version, value FROM barrier_entries WHERE path = ?", [.text(path)],
            Self.entry
        ).first
    }

    func putEntry(_ e: StoredEntry) throws {
        try run(
            "INSERT OR REPLACE INTO barrier_entries (path, key_id, key_version, value) VALUES (?, ?, ?, ?)",
            [.text(e.path), .text(e.keyID), .int(Int64(e.keyVersion)), .blob(e.value)])
    }

    func insertEntry(_ e: StoredEntry) throws -> Bool {
        try run(
            "INSERT OR IGNORE INTO barrier_entries (path, key_id, key_version, value) VALUES (?, ?, ?, ?)",
            [.text(e.path), .text(e.keyID), .int(Int64(e.keyVersion)), .blob(e.value)])
        return changes == 1
    }

    func replaceEntry(_ e: StoredEntry, expected: StoredEntry) throws -> Bool {
        precondition(e.path == expected.path, "compare-and-swap across paths")
        try run(
            """
            UPDATE barrier_entries SET key_id = ?, key_version = ?, value = ?
            WHERE path = ? AND key_id = ? AND key_version = ? AND value = ?
            """,
            [
                .text(e.keyID), .int(Int64(e.keyVersion)), .blob(e.value), .text(e.path), .text(expected.keyID),
                .int(Int64(expected.keyVersion)), .blob(expected.value),
            ])
        return changes == 1
    }

    func deleteEntry(_ path: String) throws -> Bool {
        try run("DELETE FROM barrier_entries WHERE path = ?", [.text(path)])
        return changes == 1
    }

    func deleteEntries(prefix: String) throws -> Int {
        if let upper = prefixUpperBound(prefix) {
            try run("DELETE FROM barrier_entries WHERE path >= ? AND path < ?", [.text(prefix), .text(upper)])
        } else {
            try run("DELETE FROM barrier_entries WHERE path >= ?", [.text(prefix)])
        }
        return changes
    }

    func deleteEntries(keyID: String) throws -> Int {
        try run("DELETE FROM barrier_entries WHERE key_id = ?", [.text(keyID)])
        return changes
    }

    func listEntries(prefix: String, limit: Int?) throws -> [String] {
        let limitValue = SQLiteValue.int(Int64(limit ?? -1))
        // A range scan, not LIKE: '%' and '_' in a prefix are plain characters here (audit #43).
        if let upper = prefixUpperBound(prefix) {
            return try rows(
                "SELECT path FROM barrier_entries WHERE path >= ? AND path < ? ORDER BY path LIMIT ?",
                [.text(prefix), .text(upper), limitValue]
            ) { $0.text(0) ?? "" }
        }
        return try rows(
            "SELECT path FROM barrier_entries WHERE path >= ? ORDER BY path LIMIT ?",
            [.text(prefix), limitValue]
        ) { $0.text(0) ?? "" }
    }

    func putPublicObject(path: String, contentType: String, value: [UInt8]) throws {
        try run(
            "INSERT OR REPLACE INTO public_objects (path, content_type, value) VALUES (?, ?, ?)",
            [.text(path), .text(contentType), .blob(value)])
    }

    func publicObjects(path: String) throws -> [(contentType: String, value: [UInt8])] {
        try rows("SELECT content_type, value FROM public_objects WHERE path = ? ORDER BY content_type", [.text(path)]) {
            (contentType: $0.text(0) ?? "", value: $0.blob(1))
        }
    }

    func deletePublicObjects(path: String) throws {
        try run("DELETE FROM public_objects WHERE path = ?", [.text(path)])
    }

    func deletePublicObjects(prefix: String) throws {
        if let upper = prefixUpperBound(prefix) {
            try run("DELETE FROM public_objects WHERE path >= ? AND path < ?", [.text(prefix), .text(upper)])
        } else {
            try run("DELETE FROM public_objects WHERE path >= ?", [.text(prefix)])
        }
    }

    func mountRouting() throws -> [String: String] {
        Dictionary(
            try rows("SELECT name, type FROM mount_routing", []) { ($0.text(0) ?? "", $0.text(1) ?? "") },
            uniquingKeysWith: { a, _ in a })
    }

    func putMountRouting(name: String, type: String) throws {
        try run("INSERT OR REPLACE INTO mount_routing (name, type) VALUES (?, ?)", [.text(name), .text(type)])
    }

    func deleteMountRouting(name: String) throws {
        try run("DELETE FROM mount_routing WHERE name = ?", [.text(name)])
    }

    func entries(keyID: String, below version: UInt32, after path: String?, limit: Int) throws -> [StoredEntry] {
        try rows(
            """
            SELECT path, key_id, key_version, value FROM barrier_entries INDEXED BY barrier_entries_by_key_path
            WHERE key_id = ? AND path > ? AND key_version < ? ORDER BY path LIMIT ?
            """, [.text(keyID), .text(path ?? ""), .int(Int64(version)), .int(Int64(limit))], Self.entry)
    }

    func countEntries(keyID: String, below version: UInt32?) throws -> Int {
        let counts = try rows(
            "SELECT count(*) FROM barrier_entries WHERE key_id = ? AND key_version < ?",
            [.text(keyID), .int(Int64(version ?? UInt32.max) + (version == nil ? 1 : 0))]
        ) { Int($0.int(0)) }
        return counts.first ?? 0
    }
}
