import EngineABI
import EngineKit
import FoundationEssentials
import MetacryptCrypto
import Synchronization

// The X.509 CA engine: issuers (roots and intermediates), admin-defined profiles, issuance with generated
// keys or from CSRs, renewal, revocation and CRLs. Certificates, chains and CRLs are public objects, served
// by the host even while sealed (audit #71). See docs/ca.md.

@_cdecl("metacrypt_engine_v1")
public func metacryptEngineEntry(_ hostABI: UInt32, _ host: UnsafePointer<mc_host>?) -> UnsafePointer<mc_engine>? {
    EngineExport.entry(CAEngine.definition, hostABI: hostABI, host: host)
}

/// An issuer ready to sign: its record, key and certificate. Immutable; replaced whole when it changes.
final class LoadedIssuer: @unchecked Sendable {  // immutable; the key and certificate are never modified
    let record: IssuerRecord
    let key: X509PrivateKey
    let certificate: X509Certificate
    let parents: [X509Certificate]

    init(record: IssuerRecord, key: X509PrivateKey, certificate: X509Certificate, parents: [X509Certificate]) {
        self.record = record
        self.key = key
        self.certificate = certificate
        self.parents = parents
    }

    /// The issuer's certificate followed by those above it, PEM.
    var chainPEM: String { ([record.certificate ?? ""] + record.parents).joined() }
}

final class CAEngine: MountedEngine, @unchecked Sendable {  // mutable state lives behind the two mutexes
    static let pemTypes = ["application/x-pem-file", "application/pkix-cert"]
    static let crlTypes = ["application/x-pem-file", "application/pkix-crl"]

    static let definition = EngineDefinition(
        name: "ca", version: "0.1.0",
        routes: [
            RouteDeclaration(
                "list-issuers", "GET", "issuers", access: .authenticated, action: "read", resource: "issuers"),
            RouteDeclaration("create-issuer", "POST", "issuers/{name}", access: .admin),
            RouteDeclaration(
                "read-issuer", "GET", "issuers/{name}", access: .authenticated, action: "read",
                resource: "issuers/{name}"),
            RouteDeclaration("issuer-csr", "POST", "issuers/{name}/csr", access: .admin),
            RouteDeclaration("issuer-set-signed", "POST", "issuers/{name}/set-signed", access: .admin),
            RouteDeclaration("rebuild-crl", "POST", "issuers/{name}/crl", access: .admin),
            .publicObject("issuer-cert", "issuers/{name}/cert", object: "issuers/{name}/cert", types: pemTypes),
            .publicObject(
                "issuer-chain", "issuers/{name}/chain", object: "issuers/{name}/chain",
                types: ["application/x-pem-file"]),
            .publicObject("issuer-crl", "issuers/{name}/crl", object: "issuers/{name}/crl", types: crlTypes),
            RouteDeclaration("list-profiles", "GET", "profiles", access: .admin),
            RouteDeclaration("write-profile", "PUT", "profiles/{name}", access: .admin),
            RouteDeclaration("read-profile", "GET", "profiles/{name}", access: .admin),
            RouteDeclaration("delete-profile", "DELETE", "profiles/{name}", access: .admin),
            RouteDeclaration(
                "issue", "POST", "issue/{profile}", access: .authenticated, action: "issue",
                resource: "profiles/{profile}"),
            RouteDeclaration(
                "sign", "POST", "sign/{profile}", access: .authenticated, action: "sign",
                resource: "profiles/{profile}"),
            RouteDeclaration("renew", "POST", "renew", access: .authenticated, action: "renew", resource: "certs"),
            RouteDeclaration("revoke", "POST", "revoke", access: .authenticated, action: "revoke", resource: "certs"),
            RouteDeclaration("list-certs", "GET", "certs", access: .authenticated, action: "read", resource: "certs"),
            RouteDeclaration(
                "read-cert", "GET", "certs/{serial}", access: .authenticated, action: "read",
                resource: "certs/{serial}"),
        ],
        makeMount: { CAEngine(mount: $0) })

    let mount: MountInfo
    var storage: MountStorage { mount.storage }

    /// nil while sealed; otherwise the issuers loaded so far. Requests take a reference out and use it
    /// after the lock is released: LoadedIssuer is immutable, and seal only drops the cache.
    private let issuers = Mutex<[String: LoadedIssuer]?>(nil)
    /// Serialises every read-modify-write: issuer changes, revocations, renewals and CRL numbers.
    let changes = Mutex<Void>(())

    init(mount: MountInfo) { self.mount = mount }

    func unseal() throws {
        issuers.withLock { $0 = [:] }
        // Refresh CRLs that are past half their lifetime, so a restart never leaves a stale one published.
        try changes.withLock { _ in
            for name in try issuerNames() {
                guard let issuer = try? loadIssuer(name) else { continue }
                try publishIssuer(issuer, refreshCRLIfOlderThan: issuer.record.crlLifetime / 2)
            }
        }
    }

    func seal() {
        // Dropping the cache frees the issuer keys once the last request using one finishes.
        issuers.withLock { $0 = nil }
    }

    func handle(_ request: EngineRequest) throws -> EngineResponse {
        guard issuers.withLock({ $0 != nil }) else { throw EngineError.sealed }
        do {
            return try route(request)
        } catch let error as CryptoError {
            // The wrappers only throw invalidInput for what the caller sent; anything else is ours.
            if error.code == .invalidInput { throw EngineError.invalid(error.reason) }
            throw EngineError(code: MC_ERR_INTERNAL, error.reason)
        }
    }

    private func route(_ request: EngineRequest) throws -> EngineResponse {
        switch request.operation {
        case "list-issuers": return try listIssuers()
        case "create-issuer": return try createIssuer(request)
        case "read-issuer": return try readIssuer(request)
        case "issuer-csr": return try issuerCSR(request)
        case "issuer-set-signed": return try issuerSetSigned(request)
        case "rebuild-crl": return try rebuildCRL(request)
        case "list-profiles": return try listProfiles()
        case "write-profile": return try writeProfile(request)
        case "read-profile": return try readProfile(request)
        case "delete-profile": return try deleteProfile(request)
        case "issue": return try issue(request)
        case "sign": return try sign(request)
        case "renew": return try renew(request)
        case "revoke": return try revoke(request)
        case "list-certs": return try listCertificates()
        case "read-cert": return try readCertificate(request)
        default: throw EngineError(code: MC_ERR_UNSUPPORTED, "unknown operation \(request.operation)")
        }
    }

    // MARK: Issuer cache

    func issuerNames() throws -> [String] {
        try storage.list(prefix: "issuers/").map { String($0.dropFirst("issuers/".count)) }
    }

    /// The issuer, loaded once and cached until it changes or the mount seals.
    func loadIssuer(_ name: String) throws -> LoadedIssuer {
        if let cached = try issuers.withLock({ cache -> LoadedIssuer? in
            guard let cache else { throw EngineError.sealed }
            return cache[name]
        }) {
            return cached
        }
        guard let record = try storage.getJSON(IssuerRecord.self, "issuers/\(name)") else {
            throw EngineError.notFound("no issuer \(quoted(name))")
        }
        guard record.format == recordFormat else {
            throw EngineError(code: MC_ERR_INTERNAL, "issuer \(name) has an unknown format")
        }
        guard let pem = record.certificate else {
            throw EngineError.conflict("issuer \(quoted(name)) is waiting for its signed certificate (set-signed)")
        }
        guard let keyPEM = try storage.get("issuer-keys/\(name)") else {
            throw EngineError(code: MC_ERR_INTERNAL, "issuer \(name) has no key")
        }
        let loaded = LoadedIssuer(
            record: record, key: try X509PrivateKey(pkcs8PEM: keyPEM), certificate: try X509Certificate(pem: pem),
            parents: try record.parents.map { try X509Certificate(pem: $0) })
        issuers.withLock { cache in cache?[name] = loaded }
        return loaded
    }

    func forgetIssuer(_ name: String) {
        issuers.withLock { cache in _ = cache?.removeValue(forKey: name) }
    }

    // MARK: Public objects

    /// Publishes the issuer's certificate, chain and CRL (audit #71). With `refreshCRLIfOlderThan`, the CRL
    /// is re-signed only if the stored one is older than that many seconds; nil always re-signs.
    /// Call with `changes` held.
    func publishIssuer(_ issuer: LoadedIssuer, refreshCRLIfOlderThan age: Int64? = nil) throws {
        let name = issuer.record.name
        try storage.publish(
            "issuers/\(name)/cert", Array((issuer.record.certificate ?? "").utf8),
            contentType: "application/x-pem-file")
        try storage.publish("issuers/\(name)/cert", try issuer.certificate.der(), contentType: "application/pkix-cert")
        try storage.publish("issuers/\(name)/chain", Array(issuer.chainPEM.utf8), contentType: "application/x-pem-file")
        if let age, let signedAt = try storage.getJSON(Int64.self, "crl-signed/\(name)"), Clock.now() - signedAt < age {
            return
        }
        try signCRL(issuer)
    }

    /// Signs a new CRL with the next CRL number and publishes it. Call with `changes` held.
    func signCRL(_ issuer: LoadedIssuer) throws {
        let name = issuer.record.name
        var record = issuer.record
        record.crlNumber += 1
        let revoked = try storage.list(prefix: "revoked/\(name)/").compactMap { key in
            try storage.getJSON(RevocationRecord.self, key)
        }
        let now = Clock.now()
        let crl = try X509CRL.sign(
            issuer: issuer.certificate, issuerKey: issuer.key, number: record.crlNumber, thisUpdate: now,
            nextUpdate: now + record.crlLifetime,
            revoked: try revoked.map {
                X509RevokedCertificate(
                    serial: try Serial.parse($0.serialNumber), revocationDate: $0.revokedAt, reason: $0.reason)
            })
        // The number is stored before the CRL is published, so a number is never used twice.
        try storage.putJSON("issuers/\(name)", record)
        try storage.putJSON("crl-signed/\(name)", now)
        forgetIssuer(name)
        try storage.publish("issuers/\(name)/crl", Array(try crl.pem().utf8), contentType: "application/x-pem-file")
        try storage.publish("issuers/\(name)/crl", try crl.der(), contentType: "application/pkix-crl")
    }
}

/// Decodes a body, refusing fields the route does not know, so a misspelt or forbidden field is an error
/// rather than silently ignored (audit #50: `key_usages` on issue is refused, not dropped).
func decodeBody<T: Decodable>(
    _ request: EngineRequest, _ type: T.Type, allowed: Set<String>,
    forbidden: [String: String] = [:]
) throws -> T {
    let fields = try request.decode([String: AnyJSON].self)
    for key in fields.keys.sorted() where !allowed.contains(key) {
        if let reason = forbidden[key] { throw EngineError.invalid(reason) }
        throw EngineError.invalid("unknown field \(quoted(key))")
    }
    return try request.decode(T.self)
}

/// Accepts and ignores any JSON value.
struct AnyJSON: Decodable {
    init(from decoder: any Decoder) throws {}
}
