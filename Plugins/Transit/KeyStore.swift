import MetacryptJSON
import EngineKit
import MetacryptCrypto
import Synchronization

/// The keys of one mount: stored in the mount's storage (the source of truth), cached unsealed in memory.
///
/// Locking, chosen so that operations on different keys never wait on each other and reading a key never
/// waits on reading it elsewhere:
/// - `entries` (reader-writer) maps names to per-key entries; lookups share it, only inserting a new name
///   takes it exclusively, briefly, and never across storage or crypto work.
/// - each entry's `ring` (reader-writer) holds the key's current immutable snapshot; readers copy the
///   reference out and do their crypto without any lock.
/// - each entry's `writer` mutex serialises the changes of that one key (create, rotate, config, trim,
///   delete, first load), which read-modify-write its stored record and then swap the snapshot.
final class KeyStore: Sendable {
    final class Entry: Sendable {
        let ring = ReadWriteLock<KeyRing?>(nil)
        let writer = Mutex<Void>(())
    }

    static let prefix = "keys/"

    private let storage: MountStorage
    private let entries = ReadWriteLock<[String: Entry]>([:])
    private let sealed = Atomic<Bool>(true)

    init(storage: MountStorage) { self.storage = storage }

    func unseal() { sealed.store(false, ordering: .sequentiallyConsistent) }

    /// Drops every cached key, so that its material is wiped as soon as no request holds it (the host never
    /// seals a mount while a request on it runs, so that is at once).
    func seal() {
        sealed.store(true, ordering: .sequentiallyConsistent)
        entries.write { map in
            for entry in map.values { entry.ring.write { $0 = nil } }
            map.removeAll()
        }
    }

    private func checkUnsealed() throws {
        guard !sealed.load(ordering: .sequentiallyConsistent) else { throw EngineError.sealed }
    }

    private static func storageKey(_ name: String) -> String { prefix + name }

    /// Names of the stored keys, sorted.
    func names() throws -> [String] {
        try checkUnsealed()
        return try storage.list(prefix: Self.prefix).map { String($0.dropFirst(Self.prefix.count)) }
    }

    /// The current snapshot of key `name`, or a 404.
    func ring(_ name: String) throws -> KeyRing {
        try checkUnsealed()
        if let ring = entries.read({ $0[name] })?.ring.read({ $0 }) { return ring }

        // Slow path, once per key after unseal: check it exists before giving it an entry, so unknown names
        // never grow the map, then load it under its writer lock so a concurrent change cannot be lost.
        guard try storage.get(Self.storageKey(name)) != nil else { throw EngineError.notFound("no key named \(name)") }
        let entry = entry(for: name)
        return try entry.writer.withLock { _ in
            if let ring = entry.ring.read({ $0 }) { return ring }
            guard let record = try storage.get(Self.storageKey(name)) else {
                throw EngineError.notFound("no key named \(name)")
            }
            let ring = try KeyRecord.decode(record, name: name)
            entry.ring.write { $0 = ring }
            return ring
        }
    }

    private func entry(for name: String) -> Entry {
        if let entry = entries.read({ $0[name] }) { return entry }
        return entries.write { map in
            if let entry = map[name] { return entry }
            let entry = Entry()
            map[name] = entry
            return entry
        }
    }

    /// Stores a new key; 409 if the name is taken.
    func create(_ ring: KeyRing) throws {
        try checkUnsealed()
        guard try storage.get(Self.storageKey(ring.name)) == nil else {
            throw EngineError.exists("a key named \(ring.name) already exists")
        }
        let entry = entry(for: ring.name)
        try entry.writer.withLock { _ in
            guard entry.ring.read({ $0 }) == nil else {
                throw EngineError.exists("a key named \(ring.name) already exists")
            }
            try storage.put(Self.storageKey(ring.name), try KeyRecord.encode(ring), createOnly: true)
            entry.ring.write { $0 = ring }
        }
    }

    /// Changes key `name`: `change` gets the current snapshot and returns the next one (stored, then swapped
    /// in) or nil to delete the key. Changes of one key run one at a time; readers keep the old snapshot
    /// until the swap.
    @discardableResult
    func update(_ name: String, _ change: (KeyRing) throws -> KeyRing?) throws -> KeyRing? {
        _ = try ring(name)
        guard let entry = entries.read({ $0[name] }) else { throw EngineError.notFound("no key named \(name)") }
        return try entry.writer.withLock { _ in
            // The key may have been deleted between the lookup and taking the lock.
            guard let current = entry.ring.read({ $0 }) else { throw EngineError.notFound("no key named \(name)") }
            guard let next = try change(current) else {
                try storage.delete(Self.storageKey(name))
                entry.ring.write { $0 = nil }
                return nil
            }
            try storage.put(Self.storageKey(name), try KeyRecord.encode(next))
            entry.ring.write { $0 = next }
            return next
        }
    }
}
