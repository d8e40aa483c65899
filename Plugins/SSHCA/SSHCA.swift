import EngineABI
import EngineKit
import FoundationEssentials
import Glibc
import MetacryptCrypto

// The SSH CA engine: a flat certificate authority per mount. It signs user and host certificates in
// OpenSSH's format, keeps a record of each (never a private key), revokes, and publishes a KRL with a
// detached SSHSIG signature. Storage layout under the mount:
//
//   config                      CAConfig (JSON, no secrets)
//   ca/key                      the CA private key: raw Ed25519 seed or EC scalar
//   profiles/<name>             Profile (JSON)
//   certs/<serial>              CertRecord (JSON); created with createOnly to claim the serial (#55)
//   bykey/<sha256 hex>/<serial> index of certificates by subject key, for revocation by key
//   revoked/<serial>            Revocation (JSON); outlives the certificate record
//   revoked-keys/<sha256 hex>   a revoked subject key blob
//   krl/version                 the last KRL version number (decimal)
//
// Public objects: "ca" (authorized_keys line), "krl" (binary KRL), "krl.sig" (armored SSHSIG).

@_cdecl("metacrypt_engine_v1")
public func metacryptEngineEntry(_ hostABI: UInt32, _ host: UnsafePointer<mc_host>?) -> UnsafePointer<mc_engine>? {
    EngineExport.entry(SSHCAEngine.definition, hostABI: hostABI, host: host)
}

/// The SSHSIG namespace of KRL signatures: a signature made for anything else never verifies as one.
let krlNamespace = "metacrypt-krl"
/// Extensions of user certificates without a profile: the set `ssh-keygen -s` grants by default.
let defaultUserExtensions = [
    "permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding",
    "permit-pty", "permit-user-rc",
]
/// The user-certificate extensions OpenSSH knows; a profile may grant only these.
let knownUserExtensions = Set(defaultUserExtensions + ["no-touch-required"])
/// The critical options OpenSSH knows; only profiles may set them (audit #11).
let knownCriticalOptions = ["force-command", "source-address"]
/// At most this many serials are revoked by one request.
let maximumSerialsPerRevocation = 10_000
/// At most this many principals or host names per certificate.
let maximumPrincipals = 256

/// The mount's CA settings; stored at `config`.
struct CAConfig: Codable, Sendable {
    static let currentVersion = 1

    var version: Int = currentVersion
    var keyType: CAKeyType
    var defaultTTL: Int64 = 3_600
    var maxTTL: Int64 = 86_400
    var defaultHostTTL: Int64 = 7 * 86_400
    var maxHostTTL: Int64 = 30 * 86_400
    /// How far `valid_after` is set before now, for clocks that run behind.
    var clockSkew: Int64 = 120
    /// source-address put on user certificates whose profile sets none (audit #14); nil: none.
    var defaultSourceAddress: String?
    /// Extensions a host certificate may carry (audit #10); empty by default.
    var allowedHostExtensions: [String] = []

    enum CodingKeys: String, CodingKey {
        case version
        case keyType = "key_type"
        case defaultTTL = "default_ttl"
        case maxTTL = "max_ttl"
        case defaultHostTTL = "default_host_ttl"
        case maxHostTTL = "max_host_ttl"
        case clockSkew = "clock_skew"
        case defaultSourceAddress = "default_source_address"
        case allowedHostExtensions = "allowed_host_extensions"
    }
}

/// A signing profile, written by administrators: the only source of critical options (audit #11).
struct Profile: Codable, Sendable {
    var criticalOptions: [String: String] = [:]
    /// Extensions granted instead of the defaults; nil: the defaults.
    var extensions: [String]?
    /// If set, every principal of a certificate signed with this profile must match one of these globs.
    var allowedPrincipals: [String]?
    var maxTTL: String?

    enum CodingKeys: String, CodingKey {
        case criticalOptions = "critical_options"
        case extensions
        case allowedPrincipals = "allowed_principals"
        case maxTTL = "max_ttl"
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        criticalOptions = try c.decodeIfPresent([String: String].self, forKey: .criticalOptions) ?? [:]
        extensions = try c.decodeIfPresent([String].self, forKey: .extensions)
        allowedPrincipals = try c.decodeIfPresent([String].self, forKey: .allowedPrincipals)
        maxTTL = try c.decodeIfPresent(String.self, forKey: .maxTTL)
    }

    func validated() throws -> Profile {
        var copy = self
        for (name, value) in criticalOptions {
            switch name {
            case "force-command": try Validate.forceCommand(value)
            case "source-address": copy.criticalOptions[name] = try Validate.sourceAddress(value)
            default:
                throw EngineError.invalid(
                    "critical option \(Validate.shown(name)) is not supported; use force-command or source-address")
            }
        }
        if let extensions {
            guard Set(extensions).count == extensions.count else {
                throw EngineError.invalid("extensions has duplicates")
            }
            for name in extensions where !knownUserExtensions.contains(name) {
                throw EngineError.invalid(
                    "extension \(Validate.shown(name)) is not a user-certificate extension OpenSSH knows")
            }
        }
        if let allowedPrincipals {
            guard !allowedPrincipals.isEmpty else { throw EngineError.invalid("allowed_principals is empty") }
            for pattern in allowedPrincipals { try Validate.principalPattern(pattern) }
        }
        if let maxTTL { _ = try Durations.seconds(maxTTL) }
        return copy
    }
}

/// What the engine remembers of an issued certificate.
struct CertRecord: Codable, Sendable {
    var serial: String
    var type: String
    var keyID: String
    var principals: [String]
    var validAfter: UInt64
    var validBefore: UInt64
    var criticalOptions: [String: String]
    var extensions: [String]
    var publicKey: String
    var fingerprint: String
    var requestedBy: String
    var requestID: String
    var profile: String?
    var issuedAt: UInt64
    var signedKey: String?
    var revoked: Bool?

    enum CodingKeys: String, CodingKey {
        case serial, type, principals, extensions, fingerprint, profile, revoked
        case keyID = "key_id"
        case validAfter = "valid_after"
        case validBefore = "valid_before"
        case criticalOptions = "critical_options"
        case publicKey = "public_key"
        case requestedBy = "requested_by"
        case requestID = "request_id"
        case issuedAt = "issued_at"
        case signedKey = "signed_key"
    }
}

/// A revocation, kept after the certificate's record is deleted.
struct Revocation: Codable, Sendable {
    var serial: String
    var revokedAt: UInt64
    var revokedBy: String
    var requestID: String

    enum CodingKeys: String, CodingKey {
        case serial
        case revokedAt = "revoked_at"
        case revokedBy = "revoked_by"
        case requestID = "request_id"
    }
}

func now() -> UInt64 { UInt64(max(0, time(nil))) }

func encodeJSON(_ value: some Encodable) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Array(try encoder.encode(value))
}

func decodeStored<T: Decodable>(_ type: T.Type, _ bytes: SecureBytes, _ key: String) throws -> T {
    do { return try bytes.withUnsafeBytes { try JSONDecoder().decode(T.self, from: Data($0)) } } catch {
        throw EngineError(code: MC_ERR_INTERNAL, "stored \(key) is damaged")
    }
}

final class SSHCAEngine: MountedEngine, @unchecked Sendable {  // mutable state only under `lock`
    static let definition = EngineDefinition(
        name: "sshca", version: "1.0.0",
        routes: [
            RouteDeclaration("write-config", "POST", "config", access: .admin),
            RouteDeclaration("read-config", "GET", "config", access: .admin),
            .publicObject("ca", "ca", object: "ca", types: ["text/plain"]),
            RouteDeclaration("list-profiles", "GET", "profiles", access: .admin),
            RouteDeclaration("write-profile", "PUT", "profiles/{name}", access: .admin),
            RouteDeclaration("read-profile", "GET", "profiles/{name}", access: .admin),
            RouteDeclaration("delete-profile", "DELETE", "profiles/{name}", access: .admin),
            RouteDeclaration(
                "sign-user", "POST", "sign-user", access: .authenticated, action: "sign-user",
                resource: "sign-user"),
            // Default deny (audit #54): without a rule for sign-host, only administrators sign host keys.
            RouteDeclaration(
                "sign-host", "POST", "sign-host", access: .authenticated, action: "sign-host",
                resource: "sign-host"),
            RouteDeclaration("list-certs", "GET", "certs", access: .authenticated, action: "read", resource: "certs"),
            RouteDeclaration(
                "read-cert", "GET", "certs/{serial}", access: .authenticated, action: "read",
                resource: "certs/{serial}"),
            RouteDeclaration("delete-cert", "DELETE", "certs/{serial}", access: .admin),
            RouteDeclaration("revoke", "POST", "revoke", access: .authenticated, action: "revoke", resource: "certs"),
            .publicObject("krl", "krl", object: "krl", types: ["application/octet-stream"]),
            .publicObject("krl-sig", "krl.sig", object: "krl.sig", types: ["text/plain"]),
        ],
        makeMount: { SSHCAEngine(mount: $0) })

    let mount: MountInfo
    var storage: MountStorage { mount.storage }
    private let lock = ReadWriteLock()
    // Guarded by `lock`.
    private var unsealed = false
    private var ca: CAKey?
    private var config: CAConfig?
    private var revokedSerials: Set<UInt64> = []
    private var revokedKeys: [String: [UInt8]] = [:]
    private var krlVersion: UInt64 = 0

    init(mount: MountInfo) { self.mount = mount }

    // MARK: lifecycle

    func unseal() throws {
        try lock.withWriteLock {
            // Load the settings and the CA key, if the mount was configured.
            var config: CAConfig?
            var ca: CAKey?
            if let bytes = try storage.get("config") {
                let loaded = try decodeStored(CAConfig.self, bytes, "config")
                guard loaded.version == CAConfig.currentVersion else {
                    throw EngineError(code: MC_ERR_INTERNAL, "stored config has unknown version \(loaded.version)")
                }
                guard let raw = try storage.get("ca/key") else {
                    throw EngineError(code: MC_ERR_INTERNAL, "the CA key is missing from storage")
                }
                ca = try CAKey(SigningKey(rawRepresentation: raw, algorithm: loaded.keyType.algorithm))
                config = loaded
            }

            // Load the revocation state the KRL is built from.
            var serials: Set<UInt64> = []
            for key in try storage.list(prefix: "revoked/") {
                if let serial = UInt64(key.dropFirst("revoked/".count)) { serials.insert(serial) }
            }
            var keys: [String: [UInt8]] = [:]
            for key in try storage.list(prefix: "revoked-keys/") {
                if let blob = try storage.get(key) {
                    keys[String(key.dropFirst("revoked-keys/".count))] = blob.unsafeArray()
                }
            }
            let version =
                try storage.get("krl/version").flatMap { UInt64(String(decoding: $0.unsafeArray(), as: UTF8.self)) }
                ?? 0

            self.config = config
            self.ca = ca
            self.revokedSerials = serials
            self.revokedKeys = keys
            self.krlVersion = version
            self.unsealed = true
        }
    }

    func seal() {
        lock.withWriteLock {
            // Dropping the last reference frees (and OpenSSL cleanses) the key.
            ca = nil
            config = nil
            revokedSerials = []
            revokedKeys = [:]
            unsealed = false
        }
    }

    func handle(_ request: EngineRequest) throws -> EngineResponse {
        switch request.operation {
        case "write-config": return try writeConfig(request)
        case "read-config": return try readConfig()
        case "list-profiles": return try .json(["profiles": try names(under: "profiles/")])
        case "write-profile": return try writeProfile(request)
        case "read-profile": return try readProfile(request)
        case "delete-profile": return try deleteProfile(request)
        case "sign-user": return try signUser(request)
        case "sign-host": return try signHost(request)
        case "list-certs": return try listCerts()
        case "read-cert": return try readCert(request)
        case "delete-cert": return try deleteCert(request)
        case "revoke": return try revoke(request)
        default: throw EngineError(code: MC_ERR_UNSUPPORTED, "unknown operation \(request.operation)")
        }
    }

    private func names(under prefix: String) throws -> [String] {
        try storage.list(prefix: prefix).map { String($0.dropFirst(prefix.count)) }
    }

    // MARK: config

    struct ConfigRequest: Decodable {
        var keyType: String?
        var privateKey: String?
        var defaultTTL: String?
        var maxTTL: String?
        var defaultHostTTL: String?
        var maxHostTTL: String?
        var clockSkew: String?
        var defaultSourceAddress: String?
        var allowedHostExtensions: [String]?

        enum CodingKeys: String, CodingKey {
            case keyType = "key_type"
            case privateKey = "private_key"
            case defaultTTL = "default_ttl"
            case maxTTL = "max_ttl"
            case defaultHostTTL = "default_host_ttl"
            case maxHostTTL = "max_host_ttl"
            case clockSkew = "clock_skew"
            case defaultSourceAddress = "default_source_address"
            case allowedHostExtensions = "allowed_host_extensions"
        }
    }

    struct ConfigView: Encodable {
        var config: CAConfig
        var publicKey: String

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: DynamicKey.self)
            try c.encode(config.keyType.rawValue, forKey: DynamicKey("key_type"))
            try c.encode(config.defaultTTL, forKey: DynamicKey("default_ttl"))
            try c.encode(config.maxTTL, forKey: DynamicKey("max_ttl"))
            try c.encode(config.defaultHostTTL, forKey: DynamicKey("default_host_ttl"))
            try c.encode(config.maxHostTTL, forKey: DynamicKey("max_host_ttl"))
            try c.encode(config.clockSkew, forKey: DynamicKey("clock_skew"))
            try c.encode(config.defaultSourceAddress, forKey: DynamicKey("default_source_address"))
            try c.encode(config.allowedHostExtensions, forKey: DynamicKey("allowed_host_extensions"))
            try c.encode(publicKey, forKey: DynamicKey("public_key"))
        }
    }

    private func writeConfig(_ request: EngineRequest) throws -> EngineResponse {
        // XXX: the decoded private_key String is a copy JSONDecoder made that cannot be wiped.
        let body = try request.decode(ConfigRequest.self)
        return try lock.withWriteLock {
            guard unsealed else { throw EngineError.sealed }
            var created = false

            // The CA key: made or imported once, never replaced (a new CA is a new mount).
            var config: CAConfig
            var ca: CAKey
            if let existing = self.config, let existingCA = self.ca {
                if body.privateKey != nil || (body.keyType != nil && body.keyType != existing.keyType.rawValue) {
                    throw EngineError.conflict(
                        "this mount already has a CA key; it is never replaced (mount a new CA instead)")
                }
                config = existing
                ca = existingCA
            } else {
                if let pem = body.privateKey {
                    let signer: SigningKey
                    do { signer = try SigningKey(pkcs8PEM: Array(pem.utf8)) } catch {
                        throw EngineError.invalid(
                            "private_key is not an unencrypted PKCS#8 PEM Ed25519, P-256 or P-384 key")
                    }
                    ca = try CAKey(signer)
                    if let wanted = body.keyType, wanted != ca.type.rawValue {
                        throw EngineError.invalid(
                            "private_key is \(ca.type.rawValue), not key_type \(Validate.shown(wanted))")
                    }
                } else {
                    guard let type = CAKeyType(rawValue: body.keyType ?? "ed25519") else {
                        throw EngineError.invalid(
                            "key_type \(Validate.shown(body.keyType ?? "")) is not ed25519, ecdsa-p256 or ecdsa-p384 (no RSA)"
                        )
                    }
                    ca = try CAKey(SigningKey.generate(type.algorithm))
                }
                config = CAConfig(keyType: ca.type)
                created = true
            }

            // Settings: each given field replaces the current value.
            if let v = body.defaultTTL { config.defaultTTL = try Self.positiveDuration(v, "default_ttl") }
            if let v = body.maxTTL { config.maxTTL = try Self.positiveDuration(v, "max_ttl") }
            if let v = body.defaultHostTTL { config.defaultHostTTL = try Self.positiveDuration(v, "default_host_ttl") }
            if let v = body.maxHostTTL { config.maxHostTTL = try Self.positiveDuration(v, "max_host_ttl") }
            if let v = body.clockSkew {
                config.clockSkew = try Durations.seconds(v)
                guard config.clockSkew <= 3_600 else { throw EngineError.invalid("clock_skew \(v) is more than 1h") }
            }
            if let v = body.defaultSourceAddress {
                config.defaultSourceAddress = v.isEmpty ? nil : try Validate.sourceAddress(v)
            }
            if let v = body.allowedHostExtensions {
                for name in v { try Validate.extensionName(name) }
                guard Set(v).count == v.count else {
                    throw EngineError.invalid("allowed_host_extensions has duplicates")
                }
                config.allowedHostExtensions = v.sorted()
            }
            guard config.defaultTTL <= config.maxTTL else {
                throw EngineError.invalid(
                    "default_ttl (\(config.defaultTTL)s) is more than max_ttl (\(config.maxTTL)s)")
            }
            guard config.defaultHostTTL <= config.maxHostTTL else {
                throw EngineError.invalid(
                    "default_host_ttl (\(config.defaultHostTTL)s) is more than max_host_ttl (\(config.maxHostTTL)s)")
            }

            // Persist: the key first, so a stored config always has its key.
            if created {
                try storage.put("ca/key", try ca.signer.rawRepresentation())
            }
            try storage.put("config", try encodeJSON(config))
            self.config = config
            self.ca = ca
            if created {
                try storage.publish("ca", Array((ca.publicLine + "\n").utf8), contentType: "text/plain")
                try publishKRL(ca: ca)
            }
            return try .json(ConfigView(config: config, publicKey: ca.publicLine), status: created ? 201 : 200)
        }
    }

    private static func positiveDuration(_ text: String, _ field: String) throws -> Int64 {
        let seconds = try Durations.seconds(text)
        guard seconds > 0 else { throw EngineError.invalid("\(field) must be more than 0") }
        return seconds
    }

    private func readConfig() throws -> EngineResponse {
        try lock.withReadLock {
            guard unsealed else { throw EngineError.sealed }
            guard let config, let ca else { throw EngineError.notFound("the CA is not configured: POST config first") }
            return try .json(ConfigView(config: config, publicKey: ca.publicLine))
        }
    }

    // MARK: profiles

    private func writeProfile(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try Validate.profileName(name)
        let profile = try request.decode(Profile.self).validated()
        try storage.put("profiles/\(name)", try encodeJSON(profile))
        return try .json(profile)
    }

    private func loadProfile(_ name: String) throws -> Profile {
        try Validate.profileName(name)
        guard let bytes = try storage.get("profiles/\(name)") else { throw EngineError.notFound("no profile \(name)") }
        return try decodeStored(Profile.self, bytes, "profile \(name)")
    }

    private func readProfile(_ request: EngineRequest) throws -> EngineResponse {
        try .json(try loadProfile(try request.parameter("name")))
    }

    private func deleteProfile(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try Validate.profileName(name)
        guard try storage.delete("profiles/\(name)") else { throw EngineError.notFound("no profile \(name)") }
        return EngineResponse(status: 204, body: [])
    }

    // MARK: signing

    struct SignUserRequest: Decodable {
        var publicKey: String
        var principals: [String]?
        var ttl: String?
        var profile: String?
        var keyID: String?
        var criticalOptions: [String: String]?
        var extensions: [String: String]?

        enum CodingKeys: String, CodingKey {
            case principals, ttl, profile, extensions
            case publicKey = "public_key"
            case keyID = "key_id"
            case criticalOptions = "critical_options"
        }
    }

    struct SignHostRequest: Decodable {
        var publicKey: String
        var hostnames: [String]
        var ttl: String?
        var keyID: String?
        var extensions: [String: String]?
        var criticalOptions: [String: String]?

        enum CodingKeys: String, CodingKey {
            case hostnames, ttl, extensions
            case publicKey = "public_key"
            case keyID = "key_id"
            case criticalOptions = "critical_options"
        }
    }

    struct SignResponse: Encodable {
        var signedKey: String
        var serial: String
        var keyID: String
        var principals: [String]
        var validAfter: UInt64
        var validBefore: UInt64

        enum CodingKeys: String, CodingKey {
            case serial, principals
            case signedKey = "signed_key"
            case keyID = "key_id"
            case validAfter = "valid_after"
            case validBefore = "valid_before"
        }
    }

    private func signUser(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(SignUserRequest.self)
        guard body.criticalOptions == nil, body.extensions == nil else {
            throw EngineError.invalid(
                "critical options and extensions come only from profiles (audit #11); name a profile")
        }
        let subject = try SSHPublicKey(authorizedKey: body.publicKey)

        // The profile, which the caller must be allowed to use.
        var profile: Profile?
        if let name = body.profile {
            profile = try loadProfile(name)
            guard request.isAllowed(action: "sign-user", resource: "profile/\(name)") else {
                throw EngineError.denied("the caller may not sign with profile \(name)")
            }
        }

        // Principals: the caller's own name unless policy grants another one.
        let principals = body.principals ?? [request.caller.name]
        guard !principals.isEmpty else {
            throw EngineError.invalid("principals is empty; omit it to sign for yourself")
        }
        guard principals.count <= maximumPrincipals else {
            throw EngineError.invalid("\(principals.count) principals; at most \(maximumPrincipals)")
        }
        guard Set(principals).count == principals.count else { throw EngineError.invalid("principals has duplicates") }
        for principal in principals {
            try Validate.principal(principal)
            if let patterns = profile?.allowedPrincipals,
                !patterns.contains(where: { Validate.glob($0, matches: principal) })
            {
                throw EngineError.invalid("principal \(principal) is not allowed by profile \(body.profile ?? "")")
            }
            if principal != request.caller.name,
                !request.isAllowed(action: "sign-user", resource: "principal/\(principal)")
            {
                throw EngineError.denied("the caller may not sign for principal \(principal)")
            }
        }

        return try lock.withReadLock {
            guard unsealed else { throw EngineError.sealed }
            guard let config, let ca else { throw EngineError.invalid("the CA is not configured: POST config first") }

            // Validity: at most the smaller of the mount's and the profile's maximum.
            var maximum = config.maxTTL
            if let text = profile?.maxTTL { maximum = min(maximum, try Durations.seconds(text)) }
            let ttl = try Self.ttl(body.ttl, default: min(config.defaultTTL, maximum), maximum: maximum)

            var options: [String: String?] = [:]
            for (name, value) in profile?.criticalOptions ?? [:] { options[name] = value }
            if options["source-address"] == nil, let source = config.defaultSourceAddress {
                options["source-address"] = source
            }
            var extensions: [String: String?] = [:]
            for name in profile?.extensions ?? defaultUserExtensions { extensions[name] = String?.none }

            if let suffix = body.keyID { try Validate.keyIDSuffix(suffix) }
            return try issue(
                request: request, ca: ca, config: config, subject: subject, type: .user,
                principals: principals, ttl: ttl, options: options, extensions: extensions,
                keyIDSuffix: body.keyID, profile: body.profile)
        }
    }

    private func signHost(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(SignHostRequest.self)
        guard body.criticalOptions == nil else {
            throw EngineError.invalid("host certificates carry no critical options")
        }
        let subject = try SSHPublicKey(authorizedKey: body.publicKey)
        guard !body.hostnames.isEmpty else { throw EngineError.invalid("hostnames is empty") }
        guard body.hostnames.count <= maximumPrincipals else {
            throw EngineError.invalid("\(body.hostnames.count) hostnames; at most \(maximumPrincipals)")
        }
        guard Set(body.hostnames).count == body.hostnames.count else {
            throw EngineError.invalid("hostnames has duplicates")
        }
        for name in body.hostnames { try Validate.hostname(name) }
        if let suffix = body.keyID { try Validate.keyIDSuffix(suffix) }

        return try lock.withReadLock {
            guard unsealed else { throw EngineError.sealed }
            guard let config, let ca else { throw EngineError.invalid("the CA is not configured: POST config first") }
            // Extensions only from the mount's allowlist (audit #10).
            var extensions: [String: String?] = [:]
            for (name, value) in body.extensions ?? [:] {
                guard config.allowedHostExtensions.contains(name) else {
                    throw EngineError.invalid(
                        "extension \(Validate.shown(name)) is not in this CA's allowed_host_extensions")
                }
                guard value.utf8.count <= 1024, value.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7f }) else {
                    throw EngineError.invalid(
                        "extension \(name) has a value that is not printable text of 1024 bytes or less")
                }
                extensions[name] = value.isEmpty ? String?.none : value
            }
            let ttl = try Self.ttl(body.ttl, default: config.defaultHostTTL, maximum: config.maxHostTTL)
            return try issue(
                request: request, ca: ca, config: config, subject: subject, type: .host,
                principals: body.hostnames, ttl: ttl, options: [:], extensions: extensions,
                keyIDSuffix: body.keyID, profile: nil)
        }
    }

    private static func ttl(_ text: String?, default fallback: Int64, maximum: Int64) throws -> Int64 {
        guard let text else { return fallback }
        let seconds = try Durations.seconds(text)
        guard seconds > 0 else { throw EngineError.invalid("ttl must be more than 0") }
        guard seconds <= maximum else {
            throw EngineError.invalid("ttl \(text) is more than the maximum of \(maximum)s")
        }
        return seconds
    }

    /// Claims a serial, signs, and records the certificate. Called under the read lock: the CA key is
    /// only used while it is held.
    private func issue(
        request: EngineRequest, ca: CAKey, config: CAConfig, subject: SSHPublicKey,
        type: CertificateType, principals: [String], ttl: Int64, options: [String: String?],
        extensions: [String: String?], keyIDSuffix: String?, profile: String?
    ) throws -> EngineResponse {
        guard revokedKeys[subject.storageID] == nil else {
            throw EngineError.invalid("public_key \(subject.fingerprint) is revoked")
        }
        let issuedAt = now()
        let validAfter = issuedAt - min(issuedAt, UInt64(config.clockSkew))
        let validBefore = issuedAt + UInt64(ttl)
        var keyID = "\(request.caller.name):\(request.requestID)"
        if let keyIDSuffix { keyID += ":\(keyIDSuffix)" }

        var record = CertRecord(
            serial: "", type: type.name, keyID: keyID, principals: principals, validAfter: validAfter,
            validBefore: validBefore,
            criticalOptions: options.compactMapValues { $0 }, extensions: extensions.keys.sorted(),
            publicKey: subject.line, fingerprint: subject.fingerprint, requestedBy: request.caller.name,
            requestID: request.requestID, profile: profile, issuedAt: issuedAt, signedKey: nil, revoked: nil)

        // A random non-zero serial, claimed atomically; redrawn if a record or a revocation has it (#55).
        var serial: UInt64 = 0
        for _ in 0..<16 {
            let candidate = randomUInt64()
            guard candidate != 0, !revokedSerials.contains(candidate) else { continue }
            record.serial = String(candidate)
            do {
                try storage.put("certs/\(candidate)", try encodeJSON(record), createOnly: true)
                serial = candidate
                break
            } catch let error as EngineError where error.code == MC_ERR_EXISTS {
                continue
            }
        }
        guard serial != 0 else { throw EngineError(code: MC_ERR_INTERNAL, "no free serial after 16 draws") }

        // Sign and complete the record; a failure releases the claimed serial.
        do {
            let template = CertificateTemplate(
                subject: subject, serial: serial, type: type, keyID: keyID, principals: principals,
                validAfter: validAfter, validBefore: validBefore, criticalOptions: options, extensions: extensions)
            let certificate = try template.sign(with: ca)
            let line = "\(subject.certificateType) \(Base64.encode(certificate))"
            record.signedKey = line
            try storage.put("certs/\(serial)", try encodeJSON(record))
            try storage.put("bykey/\(subject.storageID)/\(serial)", Array("1".utf8))
            mount.log(Int32(MC_LOG_INFO), "certificate issued serial=\(serial) type=\(type.name) key_id=\(keyID)")
            return try .json(
                SignResponse(
                    signedKey: line, serial: String(serial), keyID: keyID, principals: principals,
                    validAfter: validAfter, validBefore: validBefore))
        } catch {
            _ = try? storage.delete("certs/\(serial)")
            throw error
        }
    }

    // MARK: records

    private func listCerts() throws -> EngineResponse {
        let serials = try names(under: "certs/")
        return try lock.withReadLock {
            guard unsealed else { throw EngineError.sealed }
            var records: [CertRecord] = []
            for serial in serials {
                guard let bytes = try storage.get("certs/\(serial)") else { continue }
                var record = try decodeStored(CertRecord.self, bytes, "certs/\(serial)")
                record.signedKey = nil
                record.revoked = UInt64(serial).map { revokedSerials.contains($0) } ?? false
                records.append(record)
            }
            return try .json(["certs": records])
        }
    }

    private func readCert(_ request: EngineRequest) throws -> EngineResponse {
        let serial = try Validate.serial(try request.parameter("serial"))
        return try lock.withReadLock {
            guard unsealed else { throw EngineError.sealed }
            guard let bytes = try storage.get("certs/\(serial)") else {
                throw EngineError.notFound("no certificate \(serial)")
            }
            var record = try decodeStored(CertRecord.self, bytes, "certs/\(serial)")
            record.revoked = revokedSerials.contains(serial)
            return try .json(record)
        }
    }

    private func deleteCert(_ request: EngineRequest) throws -> EngineResponse {
        let serial = try Validate.serial(try request.parameter("serial"))
        return try lock.withWriteLock {
            guard unsealed else { throw EngineError.sealed }
            guard let bytes = try storage.get("certs/\(serial)") else {
                throw EngineError.notFound("no certificate \(serial)")
            }
            let record = try decodeStored(CertRecord.self, bytes, "certs/\(serial)")
            if let subject = try? SSHPublicKey(authorizedKey: record.publicKey) {
                try storage.delete("bykey/\(subject.storageID)/\(serial)")
            }
            try storage.delete("certs/\(serial)")
            return EngineResponse(status: 204, body: [])
        }
    }

    // MARK: revocation

    struct RevokeRequest: Decodable {
        var serial: String?
        var serials: [String]?
        var publicKey: String?

        enum CodingKeys: String, CodingKey {
            case serial, serials
            case publicKey = "public_key"
        }
    }

    struct RevokeResponse: Encodable {
        var revoked: [String]
        var krlVersion: UInt64

        enum CodingKeys: String, CodingKey {
            case revoked
            case krlVersion = "krl_version"
        }
    }

    private func revoke(_ request: EngineRequest) throws -> EngineResponse {
        let body = try request.decode(RevokeRequest.self)
        var serials: [UInt64] = []
        for text in (body.serial.map { [$0] } ?? []) + (body.serials ?? []) {
            serials.append(try Validate.serial(text))
        }
        guard serials.count <= maximumSerialsPerRevocation else {
            throw EngineError.invalid("\(serials.count) serials; at most \(maximumSerialsPerRevocation) per request")
        }
        let subject = try body.publicKey.map { try SSHPublicKey(authorizedKey: $0) }
        guard !serials.isEmpty || subject != nil else {
            throw EngineError.invalid("give serial, serials or public_key")
        }

        return try lock.withWriteLock {
            guard unsealed else { throw EngineError.sealed }
            guard let ca else { throw EngineError.invalid("the CA is not configured: POST config first") }

            // By key: the key itself goes into the KRL (so every certificate of it is refused, even one
            // whose record was deleted), and each recorded certificate of it is revoked by serial.
            if let subject {
                try storage.put("revoked-keys/\(subject.storageID)", subject.blob)
                revokedKeys[subject.storageID] = subject.blob
                for name in try names(under: "bykey/\(subject.storageID)/") {
                    if let serial = UInt64(name) { serials.append(serial) }
                }
            }

            // By serial: a serial without a record is revoked too (a certificate from an imported CA key).
            let revocation = Revocation(
                serial: "", revokedAt: now(), revokedBy: request.caller.name,
                requestID: request.requestID)
            for serial in Set(serials).sorted() where !revokedSerials.contains(serial) {
                var entry = revocation
                entry.serial = String(serial)
                do {
                    try storage.put("revoked/\(serial)", try encodeJSON(entry), createOnly: true)
                } catch let error as EngineError where error.code == MC_ERR_EXISTS {}
                revokedSerials.insert(serial)
            }

            try publishKRL(ca: ca)
            mount.log(Int32(MC_LOG_INFO), "revoked count=\(Set(serials).count) krl.version=\(krlVersion)")
            return try .json(RevokeResponse(revoked: Set(serials).sorted().map(String.init), krlVersion: krlVersion))
        }
    }

    /// Builds, signs and publishes the KRL and its detached signature. Called under the write lock.
    private func publishKRL(ca: CAKey) throws {
        let version = krlVersion + 1
        let krl = KRL.encode(
            version: version, generated: now(), caBlob: ca.publicBlob,
            serials: Array(revokedSerials), keys: Array(revokedKeys.values),
            comment: "metacrypt sshca \(mount.name)")
        let signature = try SSHSIG.sign(krl, namespace: krlNamespace, with: ca)
        try storage.put("krl/version", Array(String(version).utf8))
        krlVersion = version
        // Two objects, replaced one after the other: a client that fetches between the two writes gets a
        // pair that does not verify, and fetches again; it never gets an unsigned list it must trust.
        try storage.publish("krl", krl, contentType: "application/octet-stream")
        try storage.publish("krl.sig", Array(signature.utf8), contentType: "text/plain")
    }
}

/// A coding key made from any string.
struct DynamicKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

// Every request body names its fields, so a misspelt option is a 400 rather than a silently weaker
// certificate or profile.
extension SSHCAEngine.ConfigRequest: KnownFields {
    static let knownFields: Set<String> = [
        "key_type", "private_key", "default_ttl", "max_ttl", "default_host_ttl", "max_host_ttl", "clock_skew",
        "default_source_address", "allowed_host_extensions",
    ]
}

extension Profile: KnownFields {
    static let knownFields: Set<String> = ["critical_options", "extensions", "allowed_principals", "max_ttl"]
}

extension SSHCAEngine.SignUserRequest: KnownFields {
    static let knownFields: Set<String> = [
        "public_key", "principals", "ttl", "profile", "key_id", "critical_options", "extensions",
    ]
}

extension SSHCAEngine.SignHostRequest: KnownFields {
    static let knownFields: Set<String> = ["public_key", "hostnames", "ttl", "key_id", "extensions", "critical_options"]
}

extension SSHCAEngine.RevokeRequest: KnownFields {
    static let knownFields: Set<String> = ["serial", "serials", "public_key"]
}
