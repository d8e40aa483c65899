import Glibc
@testable import Host
import MetacryptCrypto

/// A fresh SQLite database in its own temporary folder.
func temporaryDatabasePath() -> String {
    var template = Array("/tmp/metacrypt-test-XXXXXX".utf8CString)
    let dir = String(cString: mkdtemp(&template)!)
    return dir + "/test.db"
}

/// The cheapest Argon2id cost the barrier accepts, so tests unseal in milliseconds.
let fastArgon2 = Argon2Parameters.minimum

let testPassword = SecureBytes(copying: Array("correct horse battery staple".utf8))

func makeBarrier(path: String = temporaryDatabasePath()) throws -> (Barrier, SQLiteStorage, String) {
    let storage = try SQLiteStorage(path: path)
    let barrier = Barrier(storage: storage)
    try barrier.initialize(password: testPassword, parameters: fastArgon2)
    return (barrier, storage, path)
}

/// Reads every raw row of barrier_entries, bypassing the barrier.
func rawEntries(_ storage: SQLiteStorage) throws -> [StoredEntry] {
    try storage.read { try $0.entries(keyID: Barrier.systemKeyID, below: UInt32.max, after: nil, limit: 1_000_000) }
}
