import MetacryptJSON
import EngineABI
import EngineKit
import FoundationEssentials
import MetacryptCrypto

// The transit engine: encryption, signing and HMAC as a service with named, versioned keys that never
// leave the engine unless created exportable. docs/transit.md specifies the routes and formats.

@_cdecl("metacrypt_engine_v1")
public func metacryptEngineEntry(_ hostABI: UInt32, _ host: UnsafePointer<mc_host>?) -> UnsafePointer<mc_engine>? {
    EngineExport.entry(TransitEngine.definition, hostABI: hostABI, host: host)
}

final class TransitEngine: MountedEngine, Sendable {
    static let definition = EngineDefinition(
        name: "transit", version: "1.0.0",
        routes: [
            route("list-keys", "GET", "keys", "read", resource: "keys"),
            route("create-key", "POST", "keys/{name}", "create"),
            route("read-key", "GET", "keys/{name}", "read"),
            route("delete-key", "DELETE", "keys/{name}", "delete"),
            route("rotate", "POST", "keys/{name}/rotate", "rotate"),
            route("config", "POST", "keys/{name}/config", "config"),
            route("trim", "POST", "keys/{name}/trim", "config"),
            route("export", "GET", "export/{name}", "export"),
            route("export-version", "GET", "export/{name}/{version}", "export"),
            route("encrypt", "POST", "encrypt/{name}", "encrypt"),
            route("decrypt", "POST", "decrypt/{name}", "decrypt"),
            route("rewrap", "POST", "rewrap/{name}", "rewrap"),
            route("datakey", "POST", "datakey/{name}", "datakey"),
            route("sign", "POST", "sign/{name}", "sign"),
            route("verify", "POST", "verify/{name}", "verify"),
            route("hmac", "POST", "hmac/{name}", "hmac"),
            route("verify-hmac", "POST", "verify-hmac/{name}", "verify"),
        ],
        makeMount: { TransitEngine(mount: $0) })

    /// Every route is `authenticated`: policy decides, default deny (audit #58).
    private static func route(
        _ operation: String, _ method: String, _ path: String, _ action: String,
        resource: String = "keys/{name}"
    ) -> RouteDeclaration {
        RouteDeclaration(operation, method, path, access: .authenticated, action: action, resource: resource)
    }

    /// At most this many items in one `batch_input`.
    static let maximumBatch = 500
    /// Longest `plaintext` or `input`, in bytes: far above the host's default body limit, and well inside the
    /// 32-bit lengths OpenSSL's one-shot calls take.
    static let maximumInput = 64 << 20
    /// Longest `context`, in bytes.
    static let maximumContext = 4096
    /// Data keys are 256-bit.
    static let dataKeySize = 32

    let mount: MountInfo
    let keys: KeyStore

    init(mount: MountInfo) {
        self.mount = mount
        self.keys = KeyStore(storage: mount.storage)
    }

    func unseal() throws { keys.unseal() }
    func seal() { keys.seal() }

    func handle(_ request: EngineRequest) throws -> EngineResponse {
        if request.operation == "list-keys" { return try .json(["keys": keys.names()]) }
        let name = try Self.keyName(request.parameter("name"))
        switch request.operation {
        case "create-key": return try createKey(name, request)
        case "read-key": return try .json(Self.metadata(keys.ring(name)))
        case "delete-key": return try deleteKey(name, request)
        case "rotate": return try rotate(name, request)
        case "config": return try configure(name, request)
        case "trim": return try trim(name, request)
        case "export": return try export(name, version: nil, request)
        case "export-version": return try export(name, version: request.parameter("version"), request)
        case "encrypt", "decrypt", "rewrap", "datakey", "sign", "verify", "hmac", "verify-hmac":
            return try operate(name, request.operation, request)
        default:
            throw EngineError(code: MC_ERR_UNSUPPORTED, "unknown operation \(request.operation)")
        }
    }

    // MARK: - Key management

    /// Key names become storage keys, so only this strict pattern passes (audit #48).
    static func keyName(_ name: String) throws -> String {
        let bytes = Array(name.utf8)
        let allowedFirst: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) }
        guard let first = bytes.first, allowedFirst(first), bytes.count <= 64,
            bytes.allSatisfy({ allowedFirst($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
        else {
            let shown = bytes.count > 80 ? String(decoding: bytes.prefix(80), as: UTF8.self) + "..." : name
            throw EngineError.invalid(
                "key name \"\(shown)\" is not valid: 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit")
        }
        return name
    }

    static func now() -> String { Date().formatted(.iso8601) }

    private func createKey(_ name: String, _ request: EngineRequest) throws -> EngineResponse {
        let fields = try Fields.body(request.body, allowed: ["type", "exportable", "allow_deletion"])
        let typeName = try fields.string("type") ?? KeyType.aes256GCM.rawValue
        guard let type = KeyType(rawValue: typeName) else {
            throw EngineError.invalid(
                "key type \"\(typeName)\" is not supported; use one of "
                    + KeyType.allCases.map(\.rawValue).joined(separator: ", "))
        }
        let now = Self.now()
        let ring = KeyRing(
            name: name, type: type, exportable: try fields.bool("exportable") ?? false,
            allowDeletion: try fields.bool("allow_deletion") ?? false, createdAt: now, latestVersion: 1,
            minDecryptionVersion: 1, minEncryptionVersion: 1, minAvailableVersion: 1,
            versions: [1: try KeyVersion.generate(1, type: type, now: now)])
        try keys.create(ring)
        mount.log(3, "transit key created key.name=\(name) key.type=\(type.rawValue) request.id=\(request.requestID)")
        return try .json(Self.metadata(ring))
    }

    private func deleteKey(_ name: String, _ request: EngineRequest) throws -> EngineResponse {
        try keys.update(name) { ring in
            guard ring.allowDeletion else {
                throw EngineError.invalid("key \(name) was not created with allow_deletion and cannot be deleted")
            }
            return nil
        }
        mount.log(3, "transit key deleted key.name=\(name) request.id=\(request.requestID)")
        return EngineResponse(status: 204, body: [])
    }

    private func rotate(_ name: String, _ request: EngineRequest) throws -> EngineResponse {
        _ = try Fields.body(request.body, allowed: [])
        let ring = try keys.update(name) { ring in
            guard ring.latestVersion < UInt32.max else {
                throw EngineError.conflict("key \(name) has no versions left")
            }
            var next = ring
            next.latestVersion += 1
            next.versions[next.latestVersion] = try KeyVersion.generate(
                next.latestVersion, type: ring.type, now: Self.now())
            return next
        }
        guard let ring else { throw EngineError(code: MC_ERR_INTERNAL, "rotation lost key \(name)") }
        mount.log(
            3,
            "transit key rotated key.name=\(name) key.version=\(ring.latestVersion) "
                + "request.id=\(request.requestID)")
        return try .json(Self.metadata(ring))
    }

    private func configure(_ name: String, _ request: EngineRequest) throws -> EngineResponse {
        let fields = try Fields.body(request.body, allowed: ["min_decryption_version", "min_encryption_version"])
        let decryption = try fields.version("min_decryption_version")
        let encryption = try fields.version("min_encryption_version")
        let ring = try keys.update(name) { ring in
            var next = ring
            if let decryption {
                guard decryption >= ring.minAvailableVersion, decryption <= ring.latestVersion else {
                    throw EngineError.invalid(
                        "min_decryption_version \(decryption) must be from \(ring.minAvailableVersion) (the oldest "
                            + "version not trimmed) to \(ring.latestVersion) (the latest)")
                }
                next.minDecryptionVersion = decryption
            }
            if let encryption {
                guard encryption <= ring.latestVersion else {
                    throw EngineError.invalid(
                        "min_encryption_version \(encryption) is above the latest version \(ring.latestVersion)")
                }
                next.minEncryptionVersion = encryption
            }
            return next
        }
        guard let ring else { throw EngineError(code: MC_ERR_INTERNAL, "configuration lost key \(name)") }
        return try .json(Self.metadata(ring))
    }

    private func trim(_ name: String, _ request: EngineRequest) throws -> EngineResponse {
        let fields = try Fields.body(request.body, allowed: ["min_available_version"])
        let floor = try fields.requiredVersion("min_available_version")
        let ring = try keys.update(name) { ring in
            guard floor >= ring.minAvailableVersion else {
                throw EngineError.invalid(
                    "min_available_version \(floor) is below the current \(ring.minAvailableVersion): trimmed versions "
                        + "cannot come back")
            }
            guard floor <= ring.minDecryptionVersion else {
                throw EngineError.invalid(
                    "min_available_version \(floor) is above min_decryption_version \(ring.minDecryptionVersion): "
                        + "raise min_decryption_version first")
            }
            var next = ring
            next.minAvailableVersion = floor
            // Dropping the versions from the snapshot wipes their material once no request holds them.
            for version in ring.minAvailableVersion..<floor { next.versions[version] = nil }
            return next
        }
        guard let ring else { throw EngineError(code: MC_ERR_INTERNAL, "trim lost key \(name)") }
        mount.log(
            3,
            "transit key trimmed key.name=\(name) key.min_available_version=\(floor) "
                + "request.id=\(request.requestID)")
        return try .json(Self.metadata(ring))
    }

    private func export(_ name: String, version: String?, _ request: EngineRequest) throws -> EngineResponse {
        let ring = try keys.ring(name)
        guard ring.exportable else {
            throw EngineError.invalid("key \(name) was not created exportable")
        }
        var selected = ring.versions.values.sorted { $0.version < $1.version }
        if let version {
            let number = try Envelope.parseVersion(ArraySlice(("v" + version).utf8), what: "export")
            guard let key = ring.versions[number] else {
                throw EngineError.notFound(
                    "key \(name) has no version \(number) (available: "
                        + "\(ring.minAvailableVersion) to \(ring.latestVersion))")
            }
            selected = [key]
        }
        // XXX: the exported material passes through Strings and the JSON encoder's buffers, which cannot be
        // wiped; exporting is the one route meant to let key material leave the engine.
        let entries: [JSONValue] = try selected.map { key in
            var item: [String: JSONValue] = [
                "version": .integer(Int64(key.version)), "key": .string(Base64.encode(key.material)),
            ]
            if let signingKey = key.signingKey {
                item["private_key"] = .string(String(decoding: try signingKey.pkcs8PEM().unsafeArray(), as: UTF8.self))
            }
            return .object(item)
        }
        mount.log(2, "transit key exported key.name=\(name) request.id=\(request.requestID)")
        return try .json(
            ["name": .string(name), "type": .string(ring.type.rawValue), "keys": .array(entries)]
                as [String: JSONValue])
    }

    static func metadata(_ ring: KeyRing) -> [String: JSONValue] {
        let versions: [JSONValue] = ring.versions.values.sorted { $0.version < $1.version }.map { key in
            var item: [String: JSONValue] = [
                "version": .integer(Int64(key.version)), "created_at": .string(key.createdAt),
            ]
            if let pem = key.publicKeyPEM { item["public_key"] = .string(pem) }
            return .object(item)
        }
        return [
            "name": .string(ring.name), "type": .string(ring.type.rawValue), "exportable": .bool(ring.exportable),
            "allow_deletion": .bool(ring.allowDeletion), "created_at": .string(ring.createdAt),
            "latest_version": .integer(Int64(ring.latestVersion)),
            "min_decryption_version": .integer(Int64(ring.minDecryptionVersion)),
            "min_encryption_version": .integer(Int64(ring.minEncryptionVersion)),
            "min_available_version": .integer(Int64(ring.minAvailableVersion)), "versions": .array(versions),
        ]
    }
}
