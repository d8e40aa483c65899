import EngineABI
import EngineKit
import Envelope
import FoundationEssentials
import MetacryptCrypto

// The user engine: end-to-end encryption between users. Each user has a key pair, held by the engine
// (sealed in the mount's storage, used on the user's behalf) or by the user alone (the engine stores only
// the public key). Anyone allowed to may encrypt to a set of recipients; only a recipient can decrypt.
// The envelope format lives in Sources/Envelope and is specified in docs/user.md.
//
// Concurrency (audit #64-#66): all per-mount state sits in `state`, behind `lock`. Every read happens
// inside `withReadLock`, every change inside `withWriteLock`, including the crypto that uses the state,
// so nothing is used after the lock is released; the lock offers only scoped use, so it is never left held.
// `state == nil` means sealed, and every operation checks it first (audit #67).

@_cdecl("metacrypt_engine_v1")
public func metacryptEngineEntry(_ hostABI: UInt32, _ host: UnsafePointer<mc_host>?) -> UnsafePointer<mc_engine>? {
    EngineExport.entry(UserEngine.definition, hostABI: hostABI, host: host)
}

/// Limits and storage names of the engine.
enum UserLimits {
    /// Recipients per envelope when the mount has no configuration (audit #34).
    static let defaultMaxRecipients = 16
    /// The configurable range: at most the envelope format's own ceiling.
    static let maxRecipientsRange = 1...EnvelopeFormat.maximumRecipients
    /// Format of the stored per-user record (JSON, no secrets).
    static let userRecordFormat1 = 1
    /// Format of the stored mount configuration.
    static let configFormat1 = 1
}

/// Who holds a user's private key.
enum Custody: String, Codable, Sendable {
    /// The engine keeps it in the barrier and decrypts on the user's behalf.
    case engine
    /// The user keeps it; the engine has only ever seen the public key.
    case client
}

/// One version of a user's key pair.
struct KeyVersion: Sendable {
    let version: UInt32
    let algorithm: RecipientAlgorithm
    let publicKey: [UInt8]
    let createdAt: Int64
    /// The raw private scalar, for engine custody only; wiped when the last copy goes (on seal).
    let privateKey: SecureBytes?
}

/// A user's keys: every version still able to decrypt, and the current one that new envelopes use.
struct UserKeys: Sendable {
    var custody: Custody
    var current: UInt32
    var versions: [UInt32: KeyVersion]

    var currentKey: KeyVersion? { versions[current] }
}

/// Everything a mount knows while unsealed.
struct UnsealedState {
    var users: [String: UserKeys]
    var maxRecipients: Int
}

final class UserEngine: MountedEngine, @unchecked Sendable {  // mutable state only in `state`, behind `lock`
    static let definition = EngineDefinition(
        name: "user", version: "0.1.0",
        routes: [
            // Resources are relative to the mount; the host prefixes "user/<mount name>/" (audit #62).
            RouteDeclaration("register", "POST", "register", access: .authenticated, action: "register",
                             resource: "keys"),
            RouteDeclaration("read-key", "GET", "keys/{username}", access: .authenticated, action: "read",
                             resource: "keys/{username}"),
            RouteDeclaration("delete-key", "DELETE", "keys/{username}", access: .admin),
            RouteDeclaration("rotate-key", "POST", "rotate-key", access: .authenticated, action: "rotate",
                             resource: "keys"),
            RouteDeclaration("encrypt", "POST", "encrypt", access: .authenticated, action: "encrypt",
                             resource: "envelopes"),
            RouteDeclaration("decrypt", "POST", "decrypt", access: .authenticated, action: "decrypt",
                             resource: "envelopes"),
            RouteDeclaration("re-encrypt", "POST", "re-encrypt", access: .authenticated, action: "re-encrypt",
                             resource: "envelopes"),
            RouteDeclaration("read-config", "GET", "config", access: .authenticated, action: "read",
                             resource: "config"),
            RouteDeclaration("write-config", "POST", "config", access: .admin),
        ],
        makeMount: { UserEngine(mount: $0) })

    let mount: MountInfo
    private let lock = ReadWriteLock()
    private var state: UnsealedState?  // guarded by `lock`; nil while sealed

    init(mount: MountInfo) {
        self.mount = mount
        // `state` starts nil (sealed): nothing to initialise outside the lock (audit #64).
    }

    // MARK: Lifecycle

    func unseal() throws {
        try lock.withWriteLock {
            // 1. The configuration, or the defaults.
            var maxRecipients = UserLimits.defaultMaxRecipients
            if let stored = try mount.storage.get(StorageKeys.config) {
                let config = try decodeStored(StoredConfig.self, stored, what: "the mount configuration")
                guard UserLimits.maxRecipientsRange.contains(config.maxRecipients) else {
                    throw EngineError(code: MC_ERR_INTERNAL, "stored max_recipients \(config.maxRecipients) is out of range")
                }
                maxRecipients = config.maxRecipients
            }

            // 2. Every user's record and, for engine custody, every private key version. A key that fails
            // to load fails the unseal, loudly: a silently missing key would look like a deleted user.
            var users: [String: UserKeys] = [:]
            for key in try mount.storage.list(prefix: StorageKeys.usersPrefix) where key.hasSuffix("/record") {
                let name = String(key.dropFirst(StorageKeys.usersPrefix.count).dropLast("/record".count))
                guard Envelope.isValidUsername(name) else {
                    throw EngineError(code: MC_ERR_INTERNAL, "stored user name \(name) is invalid")
                }
                users[name] = try loadUser(name)
            }

            // 3. Publish the state only when all of it loaded.
            state = UnsealedState(users: users, maxRecipients: maxRecipients)
        }
    }

    func seal() {
        lock.withWriteLock {
            // Dropping the state drops the last reference to every private key's SecureBytes, which wipes it.
            state = nil
        }
    }

    // MARK: Requests

    func handle(_ request: EngineRequest) throws -> EngineResponse {
        do {
            switch request.operation {
            case "register": return try register(request)
            case "read-key": return try readKey(request)
            case "delete-key": return try deleteKey(request)
            case "rotate-key": return try rotateKey(request)
            case "encrypt": return try encrypt(request)
            case "decrypt": return try decrypt(request)
            case "re-encrypt": return try reEncrypt(request)
            case "read-config": return try readConfig(request)
            case "write-config": return try writeConfig(request)
            default: throw EngineError(code: MC_ERR_UNSUPPORTED, "unknown operation \(request.operation)")
            }
        } catch let error as EngineError {
            throw error
        } catch let error as CryptoError {
            throw EngineError(code: MC_ERR_INTERNAL, "crypto failure: \(error.code)")
        }
    }

    /// `POST register`: a key pair for the caller (or, for an administrator, for anyone). Never implicit:
    /// encrypting to a user without a key fails instead of creating one (audit #33).
    private func register(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(KeyRequest.self)
        try refuseGuest(request, "register a key")
        let username = try targetUser(request, body.username, doing: "register a key")
        let algorithm = try parseAlgorithm(body.algorithm)
        let supplied = try parsePublicKey(body.publicKey, algorithm: algorithm)

        return try lock.withWriteLock {
            guard var current = state else { throw EngineError.sealed }
            guard current.users[username] == nil else {
                throw EngineError.exists("user \(username) already has a key; use rotate-key for a new version")
            }
            let custody: Custody = supplied == nil ? .engine : .client
            let key = try makeKeyVersion(1, algorithm: algorithm, suppliedPublicKey: supplied)
            let user = UserKeys(custody: custody, current: 1, versions: [1: key])
            try storeUser(username, user, newVersion: key)
            current.users[username] = user
            state = current
            return try .json(KeyAnswer(username, user, key), status: 201)
        }
    }

    /// `GET keys/{username}`: the current public key and version.
    private func readKey(_ request: EngineRequest) throws -> EngineResponse {
        let username = try pathUser(request)
        return try lock.withReadLock {
            guard let current = state else { throw EngineError.sealed }
            guard let user = current.users[username], let key = user.currentKey else {
                throw EngineError.notFound("no key registered for user \(username)")
            }
            return try .json(KeyAnswer(username, user, key))
        }
    }

    /// `DELETE keys/{username}` (administrators): every version goes; envelopes to it can no longer be
    /// opened by the engine.
    private func deleteKey(_ request: EngineRequest) throws -> EngineResponse {
        let username = try pathUser(request)
        return try lock.withWriteLock {
            guard var current = state else { throw EngineError.sealed }
            guard let user = current.users[username] else {
                throw EngineError.notFound("no key registered for user \(username)")
            }
            // 1. The record first: once it is gone, no unseal loads the user again, so the memory state
            // follows it at once.
            try mount.storage.delete(StorageKeys.record(username))
            current.users[username] = nil
            state = current

            // 2. The private keys. One that fails to delete stays encrypted in the barrier, unreferenced, and
            // is overwritten if the name registers again; the failure is logged, not hidden.
            for version in user.versions.keys.sorted() where user.custody == .engine {
                do {
                    try mount.storage.delete(StorageKeys.privateKey(username, version))
                } catch {
                    mount.log(MC_LOG_WARN, "user \(username) key version \(version): private key not deleted: \(error)")
                }
            }
            return EngineResponse(status: 204, body: [])
        }
    }

    /// `POST rotate-key`: a new version for the caller's key (administrators: anyone's). Old versions
    /// still decrypt until envelopes are re-encrypted.
    private func rotateKey(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(KeyRequest.self)
        try refuseGuest(request, "rotate a key")
        let username = try targetUser(request, body.username, doing: "rotate a key")

        return try lock.withWriteLock {
            guard var current = state else { throw EngineError.sealed }
            guard var user = current.users[username], let latest = user.currentKey else {
                throw EngineError.notFound("no key registered for user \(username)")
            }
            let algorithm = try body.algorithm.map { try parseAlgorithm($0) } ?? latest.algorithm
            let supplied = try parsePublicKey(body.publicKey, algorithm: algorithm)
            switch (user.custody, supplied) {
            case (.client, nil):
                throw EngineError.invalid("user \(username) holds their own key: rotate-key needs the new public_key")
            case (.engine, .some):
                throw EngineError.invalid("user \(username)'s key is held by the engine: public_key is not accepted")
            default: break
            }
            guard user.current < UInt32.max else { throw EngineError.conflict("key version space exhausted") }
            let key = try makeKeyVersion(user.current + 1, algorithm: algorithm, suppliedPublicKey: supplied)
            user.versions[key.version] = key
            user.current = key.version
            try storeUser(username, user, newVersion: key)
            current.users[username] = user
            state = current
            return try .json(KeyAnswer(username, user, key))
        }
    }

    /// `POST encrypt`: one envelope for `recipients`, each under their current key version.
    private func encrypt(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(EncryptRequest.self)
        guard var plaintextBytes = Base64.decode(body.plaintext) else {
            throw EngineError.invalid("plaintext is not canonical standard base64")
        }
        // Hand-off: the decoded array is copied into a self-wiping buffer and wiped.
        // XXX: the request body and the JSON decoder's String hold the plaintext in base64; they are not
        // ours to wipe.
        let plaintext = SecureBytes(consuming: &plaintextBytes)
        let aad = try body.aad.map { text -> [UInt8] in
            guard let bytes = Base64.decode(text) else { throw EngineError.invalid("aad is not canonical standard base64") }
            return bytes
        } ?? []
        let names = try validatedRecipients(body.recipients)

        return try lock.withReadLock {
            guard let current = state else { throw EngineError.sealed }
            guard names.count <= current.maxRecipients else {
                throw EngineError.invalid(
                    "\(names.count) recipients exceed this mount's limit of \(current.maxRecipients)")
            }
            let recipients = try names.map { try envelopeRecipient($0, in: current) }
            return try .json(["envelope": Base64.encode(try sealEnvelope(plaintext, aad: aad, for: recipients))])
        }
    }

    /// `POST decrypt`: the caller must be a recipient, with an engine-held key.
    private func decrypt(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(EnvelopeRequest.self)
        try refuseGuest(request, "decrypt")
        let caller = try callerName(request)

        return try lock.withReadLock {
            guard let current = state else { throw EngineError.sealed }
            let (envelope, plaintext) = try openEnvelope(body.envelope, as: caller, in: current)
            // XXX: the base64 String and the response body are ordinary memory, not wiped; the plaintext
            // leaves the process in them anyway. EngineKit wipes its own copy of the body on release.
            return try .json(["plaintext": Base64.encode(plaintext), "aad": Base64.encode(envelope.aad)])
        }
    }

    /// `POST re-encrypt`: opens with the caller's key and seals again for the same recipients' current key
    /// versions, under a new DEK. The plaintext never leaves the engine (audit #35).
    private func reEncrypt(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(EnvelopeRequest.self)
        try refuseGuest(request, "re-encrypt")
        let caller = try callerName(request)

        return try lock.withReadLock {
            guard let current = state else { throw EngineError.sealed }
            let (envelope, plaintext) = try openEnvelope(body.envelope, as: caller, in: current)
            let recipients = try envelope.recipients.map { try envelopeRecipient($0.username, in: current) }
            return try .json(["envelope": Base64.encode(try sealEnvelope(plaintext, aad: envelope.aad, for: recipients))])
        }
    }

    /// `GET config`.
    private func readConfig(_ request: EngineRequest) throws -> EngineResponse {
        try lock.withReadLock {
            guard let current = state else { throw EngineError.sealed }
            return try .json(StoredConfig(format: UserLimits.configFormat1, maxRecipients: current.maxRecipients))
        }
    }

    /// `POST config` (administrators): `{"max_recipients": N}`, N in 1...1024.
    private func writeConfig(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(ConfigRequest.self)
        guard UserLimits.maxRecipientsRange.contains(body.maxRecipients) else {
            throw EngineError.invalid(
                "max_recipients \(body.maxRecipients) is outside \(UserLimits.maxRecipientsRange.lowerBound)"
                    + "...\(UserLimits.maxRecipientsRange.upperBound)")
        }
        return try lock.withWriteLock {
            guard var current = state else { throw EngineError.sealed }
            let config = StoredConfig(format: UserLimits.configFormat1, maxRecipients: body.maxRecipients)
            try mount.storage.put(StorageKeys.config, try encodeStored(config))
            current.maxRecipients = body.maxRecipients
            state = current
            return try .json(config)
        }
    }

    // MARK: Envelopes (called with the lock held; `current` is the locked state)

    /// The recipient entry for `username`'s current key; no key is ever created here (audit #33).
    private func envelopeRecipient(_ username: String, in current: UnsealedState) throws -> EnvelopeRecipient {
        guard let user = current.users[username], let key = user.currentKey else {
            throw EngineError.notFound("no key registered for recipient \(username)")
        }
        let publicKey = try KeyAgreementPublicKey(rawRepresentation: key.publicKey, algorithm: key.algorithm.keyAgreement)
        return EnvelopeRecipient(username: username, keyVersion: key.version, publicKey: publicKey)
    }

    private func sealEnvelope(_ plaintext: SecureBytes, aad: [UInt8], for recipients: [EnvelopeRecipient]) throws -> [UInt8] {
        do {
            return try Envelope.seal(plaintext: plaintext, aad: aad, recipients: recipients)
        } catch {
            throw EngineError.invalid(error.description)
        }
    }

    /// Opens an envelope with the caller's engine-held key. Every failure that depends on the envelope's
    /// bytes is the one uniform error; only facts about the caller (no key, key held by the client) differ.
    private func openEnvelope(
        _ text: String, as caller: String, in current: UnsealedState
    ) throws -> (Envelope, SecureBytes) {
        guard let user = current.users[caller] else {
            throw EngineError.notFound("no key registered for user \(caller)")
        }
        guard user.custody == .engine else {
            throw EngineError.invalid(
                "user \(caller) holds their own private key: open the envelope locally (metacrypt user open-envelope)")
        }
        let uniform = EngineError.invalid(EnvelopeError.cannotOpenMessage)
        guard let bytes = Base64.decode(text), let envelope = try? Envelope(parsing: bytes),
              let stanza = envelope.stanzas.first(where: { $0.username == caller }),
              let key = user.versions[stanza.keyVersion], let scalar = key.privateKey
        else { throw uniform }
        // A key object per operation, freed when it goes out of scope (audit #61).
        // XXX: OpenSSL copies the scalar into its own key object; it clears it on free, not before.
        guard let privateKey = try? KeyAgreementPrivateKey(rawRepresentation: scalar, algorithm: key.algorithm.keyAgreement),
              let plaintext = try? envelope.open(username: caller, privateKey: privateKey)
        else { throw uniform }
        return (envelope, plaintext)
    }

    // MARK: Keys

    /// A new key version: generated here (engine custody) or the caller's public key (client custody).
    private func makeKeyVersion(
        _ version: UInt32, algorithm: RecipientAlgorithm, suppliedPublicKey: KeyAgreementPublicKey?
    ) throws -> KeyVersion {
        let now = Int64(Date().timeIntervalSince1970)
        if let supplied = suppliedPublicKey {
            return KeyVersion(version: version, algorithm: algorithm, publicKey: supplied.rawRepresentation,
                              createdAt: now, privateKey: nil)
        }
        // The OpenSSL key object lives only for this call; the engine keeps the scalar in SecureBytes.
        let generated = try KeyAgreementPrivateKey.generate(algorithm.keyAgreement)
        return KeyVersion(version: version, algorithm: algorithm, publicKey: generated.publicKey.rawRepresentation,
                          createdAt: now, privateKey: try generated.rawRepresentation())
    }

    /// Writes the new version's private key (if any), then the record that names it: a crash between the two
    /// leaves an unreferenced key, never a record pointing at a missing one.
    private func storeUser(_ username: String, _ user: UserKeys, newVersion key: KeyVersion) throws {
        if let scalar = key.privateKey {
            try mount.storage.put(StorageKeys.privateKey(username, key.version), scalar)
        }
        let record = StoredUser(
            format: UserLimits.userRecordFormat1, custody: user.custody, current: user.current,
            versions: user.versions.values.sorted { $0.version < $1.version }.map {
                StoredVersion(version: $0.version, algorithm: $0.algorithm.name,
                              publicKey: Base64.encode($0.publicKey), createdAt: $0.createdAt)
            })
        try mount.storage.put(StorageKeys.record(username), try encodeStored(record))
    }

    /// Loads one user at unseal; anything inconsistent fails the unseal.
    private func loadUser(_ name: String) throws -> UserKeys {
        guard let bytes = try mount.storage.get(StorageKeys.record(name)) else {
            throw EngineError(code: MC_ERR_INTERNAL, "user \(name)'s record vanished during unseal")
        }
        let record = try decodeStored(StoredUser.self, bytes, what: "user \(name)'s record")
        guard record.format == UserLimits.userRecordFormat1 else {
            throw EngineError(code: MC_ERR_INTERNAL, "user \(name)'s record has unknown format \(record.format)")
        }
        var versions: [UInt32: KeyVersion] = [:]
        for stored in record.versions {
            guard let algorithm = RecipientAlgorithm(name: stored.algorithm),
                  let publicKey = Base64.decode(stored.publicKey),
                  publicKey.count == algorithm.publicKeySize
            else { throw EngineError(code: MC_ERR_INTERNAL, "user \(name) key version \(stored.version) is corrupt") }
            var scalar: SecureBytes?
            if record.custody == .engine {
                guard let loaded = try mount.storage.get(StorageKeys.privateKey(name, stored.version)) else {
                    throw EngineError(code: MC_ERR_INTERNAL, "user \(name) key version \(stored.version) has no private key")
                }
                // The stored scalar must give the stored public key, or envelopes would silently fail to open.
                let check = try KeyAgreementPrivateKey(rawRepresentation: loaded, algorithm: algorithm.keyAgreement)
                guard check.publicKey.rawRepresentation == publicKey else {
                    throw EngineError(code: MC_ERR_INTERNAL, "user \(name) key version \(stored.version) does not match")
                }
                scalar = loaded
            }
            versions[stored.version] = KeyVersion(version: stored.version, algorithm: algorithm, publicKey: publicKey,
                                                  createdAt: stored.createdAt, privateKey: scalar)
        }
        guard versions[record.current] != nil else {
            throw EngineError(code: MC_ERR_INTERNAL, "user \(name)'s current version \(record.current) is missing")
        }
        return UserKeys(custody: record.custody, current: record.current, versions: versions)
    }

    // MARK: Input checks

    /// Guests may read public keys and encrypt where policy allows, never act with a private key (audit #63).
    private func refuseGuest(_ request: EngineRequest, _ what: String) throws {
        if !request.caller.isAdmin && request.caller.roles.contains("guest") {
            throw EngineError.denied("guests may not \(what)")
        }
    }

    private func callerName(_ request: EngineRequest) throws -> String {
        let name = request.caller.name
        guard Envelope.isValidUsername(name) else { throw EngineError.denied("caller name \(name) cannot hold a key") }
        return name
    }

    /// The user an operation is for: the caller, or (administrators only) someone else.
    private func targetUser(_ request: EngineRequest, _ requested: String?, doing what: String) throws -> String {
        let caller = request.caller.name
        let target = requested ?? caller
        guard Envelope.isValidUsername(target) else {
            throw EngineError.invalid("username \(target) is not 1-64 of a-z, 0-9, '.', '_', '-' starting with a letter or digit")
        }
        guard target == caller || request.caller.isAdmin else {
            throw EngineError.denied("only an administrator may \(what) for another user (\(target))")
        }
        return target
    }

    private func pathUser(_ request: EngineRequest) throws -> String {
        let name = request.parameters["username"] ?? ""
        guard Envelope.isValidUsername(name) else {
            throw EngineError.invalid("username \(name) is not 1-64 of a-z, 0-9, '.', '_', '-' starting with a letter or digit")
        }
        return name
    }

    private func validatedRecipients(_ names: [String]) throws -> [String] {
        guard !names.isEmpty else { throw EngineError.invalid("recipients is empty") }
        guard names.count <= EnvelopeFormat.maximumRecipients else {
            throw EngineError.invalid("\(names.count) recipients exceed the format's \(EnvelopeFormat.maximumRecipients)")
        }
        var seen = Set<String>()
        for name in names {
            guard Envelope.isValidUsername(name) else { throw EngineError.invalid("recipient name \(name) is invalid") }
            guard seen.insert(name).inserted else { throw EngineError.invalid("recipient \(name) is listed twice") }
        }
        return names
    }

    private func parseAlgorithm(_ name: String?) throws -> RecipientAlgorithm {
        guard let name else { return .x25519 }
        guard let algorithm = RecipientAlgorithm(name: name) else {
            throw EngineError.invalid("algorithm \(name) is not x25519 or p256")
        }
        return algorithm
    }

    private func parsePublicKey(_ text: String?, algorithm: RecipientAlgorithm) throws -> KeyAgreementPublicKey? {
        guard let text else { return nil }
        guard let raw = Base64.decode(text),
              let key = try? KeyAgreementPublicKey(rawRepresentation: raw, algorithm: algorithm.keyAgreement)
        else {
            throw EngineError.invalid(
                "public_key is not a base64 raw \(algorithm.name) public key (\(algorithm.publicKeySize) bytes"
                    + (algorithm == .p256 ? ", uncompressed point on the curve)" : ")"))
        }
        // A trial agreement refuses X25519 small-order points now, rather than at every later encrypt.
        guard (try? KeyAgreementPrivateKey.generate(algorithm.keyAgreement).sharedSecret(with: key)) != nil else {
            throw EngineError.invalid("public_key is a small-order \(algorithm.name) point")
        }
        return key
    }
}

// MARK: Storage

enum StorageKeys {
    static let config = "config"
    static let usersPrefix = "users/"
    static func record(_ user: String) -> String { "users/\(user)/record" }
    static func privateKey(_ user: String, _ version: UInt32) -> String { "users/\(user)/private/\(version)" }
}

struct StoredConfig: Codable {
    let format: Int
    let maxRecipients: Int
    enum CodingKeys: String, CodingKey {
        case format
        case maxRecipients = "max_recipients"
    }
}

struct StoredUser: Codable {
    let format: Int
    let custody: Custody
    let current: UInt32
    let versions: [StoredVersion]
}

struct StoredVersion: Codable {
    let version: UInt32
    let algorithm: String
    let publicKey: String
    let createdAt: Int64
    enum CodingKeys: String, CodingKey {
        case version, algorithm
        case publicKey = "public_key"
        case createdAt = "created_at"
    }
}

private func encodeStored(_ value: some Encodable) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return Array(try encoder.encode(value))
}

private func decodeStored<T: Decodable>(_ type: T.Type, _ bytes: SecureBytes, what: String) throws -> T {
    do {
        return try JSONDecoder().decode(T.self, from: bytes.withUnsafeBytes { Data($0) })
    } catch {
        throw EngineError(code: MC_ERR_INTERNAL, "\(what) is not valid JSON")
    }
}

// MARK: Requests and answers

struct KeyRequest: Decodable {
    let username: String?
    let algorithm: String?
    let publicKey: String?
    enum CodingKeys: String, CodingKey {
        case username, algorithm
        case publicKey = "public_key"
    }
}

struct EncryptRequest: Decodable {
    let recipients: [String]
    let plaintext: String
    let aad: String?
}

struct EnvelopeRequest: Decodable {
    let envelope: String
}

struct ConfigRequest: Decodable {
    let maxRecipients: Int
    enum CodingKeys: String, CodingKey {
        case maxRecipients = "max_recipients"
    }
}

struct KeyAnswer: Encodable {
    let username: String
    let custody: String
    let algorithm: String
    let version: UInt32
    let publicKey: String
    let createdAt: Int64
    let versions: [UInt32]

    init(_ username: String, _ user: UserKeys, _ key: KeyVersion) {
        self.username = username
        custody = user.custody.rawValue
        algorithm = key.algorithm.name
        version = key.version
        publicKey = Base64.encode(key.publicKey)
        createdAt = key.createdAt
        versions = user.versions.keys.sorted()
    }

    enum CodingKeys: String, CodingKey {
        case username, custody, algorithm, version, versions
        case publicKey = "public_key"
        case createdAt = "created_at"
    }
}

// Every request body names its fields: a misspelt "add" must not encrypt without associated data.
extension KeyRequest: KnownFields {
    static let knownFields: Set<String> = ["username", "algorithm", "public_key"]
}

extension EncryptRequest: KnownFields {
    static let knownFields: Set<String> = ["recipients", "plaintext", "aad"]
}

extension EnvelopeRequest: KnownFields {
    static let knownFields: Set<String> = ["envelope"]
}

extension ConfigRequest: KnownFields {
    static let knownFields: Set<String> = ["max_recipients"]
}
