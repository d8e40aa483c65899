import MetacryptCrypto

/// The unsealed key material: the MEK and every DEK version, in one immutable object.
///
/// A request takes a reference to the ring for the length of its crypto work. Sealing drops the
/// barrier's reference; every key is wiped when the last reference goes (each ``SecureBytes`` wipes
/// itself). So a request can never observe a wiped key (audit #39): it either got the ring before the
/// seal and finishes with intact keys, or it gets the sealed error.
final class KeyRing: Sendable {
    struct DataKeys: Sendable {
        let current: UInt32
        let versions: [UInt32: SecureBytes]
    }

    let mek: SecureBytes
    let mekGeneration: UInt32
    let keys: [String: DataKeys]

    init(mek: SecureBytes, mekGeneration: UInt32, keys: [String: DataKeys]) {
        self.mek = mek
        self.mekGeneration = mekGeneration
        self.keys = keys
    }

    func key(_ keyID: String, version: UInt32) -> SecureBytes? {
        keys[keyID]?.versions[version]
    }

    func current(_ keyID: String) -> (version: UInt32, key: SecureBytes)? {
        guard let set = keys[keyID], let key = set.versions[set.current] else { return nil }
        return (set.current, key)
    }

    /// A ring with `version` of `keyID` added and made current.
    func adding(_ keyID: String, version: UInt32, key: SecureBytes) -> KeyRing {
        var versions = keys[keyID]?.versions ?? [:]
        versions[version] = key
        var all = keys
        all[keyID] = DataKeys(current: Swift.max(version, keys[keyID]?.current ?? 0), versions: versions)
        return KeyRing(mek: mek, mekGeneration: mekGeneration, keys: all)
    }

    /// A ring without the versions of `keyID` below `version`.
    func dropping(_ keyID: String, below version: UInt32) -> KeyRing {
        guard let set = keys[keyID] else { return self }
        var all = keys
        all[keyID] = DataKeys(current: set.current, versions: set.versions.filter { $0.key >= version })
        return KeyRing(mek: mek, mekGeneration: mekGeneration, keys: all)
    }

    /// A ring without `keyID` at all.
    func removing(_ keyID: String) -> KeyRing {
        var all = keys
        all[keyID] = nil
        return KeyRing(mek: mek, mekGeneration: mekGeneration, keys: all)
    }

    /// The same DEKs under a new MEK.
    func replacingMEK(_ newMEK: SecureBytes, generation: UInt32) -> KeyRing {
        KeyRing(mek: newMEK, mekGeneration: generation, keys: keys)
    }
}
