import EngineABI
import EngineKit
import FoundationEssentials
import MetacryptCrypto

// Issuers: generated roots, intermediates signed by another issuer of the mount, intermediates signed by
// an outside CA (csr + set-signed), and imported key + certificate pairs.

struct IssuerRequest: Decodable {
    var keyType: String?
    var commonName: String?
    var organization: String?
    var organizationalUnit: String?
    var country: String?
    var province: String?
    var locality: String?
    var ttl: String?
    var parent: String?
    var maxPathLength: Int?
    var ttlPastIssuer: String?
    var crlLifetime: String?
    var crlDistributionPoints: [String]?
    var issuingCertificates: [String]?
    var certificate: String?
    var privateKey: String?
    var chain: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case keyType = "key_type"
        case commonName = "common_name"
        case organization
        case organizationalUnit = "organizational_unit"
        case country, province, locality, ttl, parent
        case maxPathLength = "max_path_length"
        case ttlPastIssuer = "ttl_past_issuer"
        case crlLifetime = "crl_lifetime"
        case crlDistributionPoints = "crl_distribution_points"
        case issuingCertificates = "issuing_certificates"
        case certificate
        case privateKey = "private_key"
        case chain
    }

    static let fields = Set(CodingKeys.allCases.map(\.rawValue))

    func generatedKeyType() throws -> X509KeyType {
        guard let keyType else { return .ecdsaP256 }
        guard let type = X509KeyType(rawValue: keyType) else {
            throw EngineError.invalid(
                "key_type \(quoted(keyType)) is unknown; use \(X509KeyType.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        return type
    }

    /// The subject, each attribute checked: printable, at most 64 characters (RFC 5280's upper bounds).
    func subject() throws -> X509Name {
        guard let commonName, !commonName.isEmpty else { throw EngineError.invalid("missing field common_name") }
        let name = X509Name(
            commonName: commonName, organization: organization, organizationalUnit: organizationalUnit,
            country: country, province: province, locality: locality)
        for (field, value) in [
            ("common_name", commonName), ("organization", organization),
            ("organizational_unit", organizationalUnit), ("province", province),
            ("locality", locality),
        ] {
            guard let value else { continue }
            guard !value.isEmpty, value.count <= 64,
                value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f })
            else {
                throw EngineError.invalid("\(field) \(quoted(value)) must be 1-64 printable characters")
            }
        }
        if let country, !(country.utf8.count == 2 && country.utf8.allSatisfy({ $0 >= 0x41 && $0 <= 0x5a })) {
            throw EngineError.invalid("country \(quoted(country)) must be two capital letters (ISO 3166)")
        }
        return name
    }

    func settings() throws -> (crlLifetime: Int64, crlURLs: [String], issuerURLs: [String]) {
        let lifetime = try Durations.seconds(crlLifetime ?? "7d")
        // CA/B BR 4.9.7: a CRL's nextUpdate at most 10 days after its thisUpdate.
        guard lifetime >= 3600, lifetime <= 10 * 86_400 else {
            throw EngineError.invalid("crl_lifetime \(quoted(crlLifetime ?? "")) must be between 1h and 10d")
        }
        for url in (crlDistributionPoints ?? []) + (issuingCertificates ?? []) {
            guard url.hasPrefix("http://") || url.hasPrefix("https://"), URIName.problem(url) == nil, !url.contains(",")
            else {
                throw EngineError.invalid("URL \(quoted(url)) must be an http or https URL without commas or spaces")
            }
        }
        return (lifetime, crlDistributionPoints ?? [], issuingCertificates ?? [])
    }
}

extension CAEngine {
    func listIssuers() throws -> EngineResponse {
        try .json(["issuers": try issuerNames()])
    }

    func readIssuer(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "issuer")
        guard let record = try storage.getJSON(IssuerRecord.self, "issuers/\(name)") else {
            throw EngineError.notFound("no issuer \(quoted(name))")
        }
        guard let pem = record.certificate else {
            return try .json(["name": name, "status": "pending", "key_type": record.keyType])
        }
        let certificate = try X509Certificate(pem: pem)
        return try .json(
            IssuerView(
                name: name, status: "active", keyType: record.keyType, parent: record.parent,
                subject: certificate.subjectDescription, issuer: certificate.issuerDescription,
                serialNumber: Serial.text(certificate.serial), notBefore: Clock.text(certificate.notBefore),
                notAfter: Clock.text(certificate.notAfter), certificate: pem, chain: ([pem] + record.parents).joined(),
                crlNumber: record.crlNumber))
    }

    func createIssuer(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "issuer")
        let body = try decodeBody(request, IssuerRequest.self, allowed: IssuerRequest.fields)
        let settings = try body.settings()

        try changes.withLock { _ in
            guard try storage.get("issuers/\(name)") == nil else {
                throw EngineError.exists("issuer \(quoted(name)) exists")
            }
            let key: X509PrivateKey
            let certificate: X509Certificate
            var parents: [String] = []
            if body.privateKey != nil || body.certificate != nil {
                (key, certificate, parents) = try importIssuer(body)
            } else {
                key = try X509PrivateKey.generate(try body.generatedKeyType())
                if let parentName = body.parent {
                    try ObjectName.validate(parentName, kind: "parent issuer")
                    let parent = try loadIssuer(parentName)
                    certificate = try signIntermediate(body, key: key, parent: parent)
                    parents = [parent.record.certificate ?? ""] + parent.record.parents
                } else {
                    certificate = try signRoot(body, key: key)
                }
            }
            let record = IssuerRecord(
                name: name, certificate: try certificate.pem(), parents: parents, parent: body.parent,
                keyType: key.algorithm.description, crlNumber: 0, crlLifetime: settings.crlLifetime,
                crlDistributionPoints: settings.crlURLs, issuingCertificates: settings.issuerURLs, created: Clock.now())
            try store(record, key: key)
        }
        return try readIssuer(request)
    }

    /// Stores a complete issuer and publishes its certificate, chain and first CRL. Call with `changes` held.
    private func store(_ record: IssuerRecord, key: X509PrivateKey) throws {
        try storage.put("issuer-keys/\(record.name)", try key.pkcs8PEM())
        try storage.putJSON("issuers/\(record.name)", record)
        forgetIssuer(record.name)
        try publishIssuer(try loadIssuer(record.name))
    }

    /// The request's own options, checked before anything is built.
    private func checkOptions(_ body: IssuerRequest) throws {
        if let length = body.maxPathLength, !(0...16).contains(length) {
            throw EngineError.invalid("max_path_length \(length) is outside 0...16")
        }
        if let mode = body.ttlPastIssuer, mode != "refuse", mode != "truncate" {
            throw EngineError.invalid("ttl_past_issuer \(quoted(mode)) is neither refuse nor truncate")
        }
    }

    private func validity(_ body: IssuerRequest, defaultTTL: String) throws -> (Int64, Int64) {
        try checkOptions(body)
        let ttl = try Durations.seconds(body.ttl ?? defaultTTL)
        guard ttl >= 3600 else { throw EngineError.invalid("ttl \(quoted(body.ttl ?? "")) is shorter than an hour") }
        let now = Clock.now()
        return (now - 60, now + ttl)
    }

    private func signRoot(_ body: IssuerRequest, key: X509PrivateKey) throws -> X509Certificate {
        let (notBefore, notAfter) = try validity(body, defaultTTL: "3650d")
        var template = X509CertificateTemplate(
            serial: Serial.random(), subject: try body.subject(),
            notBefore: notBefore, notAfter: notAfter)
        template.isCA = true
        template.pathLength = body.maxPathLength
        template.keyUsages = [.digitalSignature, .keyCertSign, .cRLSign]
        return try X509Certificate.sign(template, subjectKey: try key.publicKey(), issuer: nil, issuerKey: key)
    }

    /// An intermediate under another issuer of the mount; never valid past its parent (audit #49).
    private func signIntermediate(_ body: IssuerRequest, key: X509PrivateKey, parent: LoadedIssuer) throws
        -> X509Certificate
    {
        if let length = parent.certificate.pathLength, length == 0 {
            throw EngineError.invalid(
                "parent issuer \(quoted(parent.record.name)) has path length 0 and cannot sign CA certificates")
        }
        var (notBefore, notAfter) = try validity(body, defaultTTL: "1825d")
        if notAfter > parent.certificate.notAfter {
            guard body.ttlPastIssuer == "truncate" else {
                throw EngineError.invalid(
                    "ttl \(quoted(body.ttl ?? "1825d")) would end after the parent issuer's notAfter \(Clock.text(parent.certificate.notAfter)) (audit #49); shorten it or pass ttl_past_issuer: truncate"
                )
            }
            notAfter = parent.certificate.notAfter
        }
        notBefore = max(notBefore, parent.certificate.notBefore)
        var template = X509CertificateTemplate(
            serial: Serial.random(), subject: try body.subject(),
            notBefore: notBefore, notAfter: notAfter)
        template.isCA = true
        template.pathLength = body.maxPathLength ?? 0
        if let parentLength = parent.certificate.pathLength, let wanted = body.maxPathLength, wanted >= parentLength {
            throw EngineError.invalid(
                "max_path_length \(wanted) is not below the parent issuer's path length \(parentLength)")
        }
        if let parentLength = parent.certificate.pathLength, template.pathLength! >= parentLength {
            template.pathLength = parentLength - 1
        }
        template.keyUsages = [.digitalSignature, .keyCertSign, .cRLSign]
        template.crlDistributionPoints = parent.record.crlDistributionPoints
        template.issuingCertificateURLs = parent.record.issuingCertificates
        return try X509Certificate.sign(
            template, subjectKey: try key.publicKey(), issuer: parent.certificate,
            issuerKey: parent.key)
    }

    /// An outside key and CA certificate (optionally followed by its chain): they must match, the
    /// certificate must be a CA, and each chain certificate must have issued the one before.
    private func importIssuer(_ body: IssuerRequest) throws -> (X509PrivateKey, X509Certificate, [String]) {
        guard let keyPEM = body.privateKey, let certificatePEM = body.certificate else {
            throw EngineError.invalid("an import needs both private_key (PKCS#8 PEM) and certificate")
        }
        guard body.parent == nil, body.keyType == nil, body.commonName == nil else {
            throw EngineError.invalid("an import takes no parent, key_type or common_name")
        }
        // XXX: the PEM arrived in the request body and in a Swift String; neither copy can be wiped here.
        let key = try X509PrivateKey(pkcs8PEM: SecureBytes(copying: Array(keyPEM.utf8)))
        let chain = try X509Certificate.parseChain(pem: certificatePEM + (body.chain ?? ""))
        let certificate = chain[0]
        guard certificate.matches(key) else { throw EngineError.invalid("private_key does not match the certificate") }
        try checkCA(certificate, chain: Array(chain.dropFirst()))
        return (key, certificate, try chain.dropFirst().map { try $0.pem() })
    }

    func checkCA(_ certificate: X509Certificate, chain: [X509Certificate]) throws {
        guard certificate.isCA else {
            throw EngineError.invalid(
                "certificate \(quoted(certificate.subjectDescription)) is not a CA certificate (basicConstraints CA and keyCertSign)"
            )
        }
        guard certificate.notAfter > Clock.now() else { throw EngineError.invalid("certificate has expired") }
        var child = certificate
        for parent in chain {
            guard child.isIssued(by: parent) else {
                throw EngineError.invalid(
                    "chain certificate \(quoted(parent.subjectDescription)) did not issue \(quoted(child.subjectDescription))"
                )
            }
            child = parent
        }
    }

    // MARK: Outside CA

    func issuerCSR(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "issuer")
        let body = try decodeBody(
            request, IssuerRequest.self,
            allowed: IssuerRequest.fields.subtracting(
                ["parent", "certificate", "private_key", "chain", "ttl", "max_path_length", "ttl_past_issuer"]))
        let settings = try body.settings()
        return try changes.withLock { _ in
            if let existing = try storage.getJSON(IssuerRecord.self, "issuers/\(name)"), existing.certificate != nil {
                throw EngineError.exists("issuer \(quoted(name)) exists")
            }
            let key = try X509PrivateKey.generate(try body.generatedKeyType())
            let csr = try X509CertificationRequest.create(subject: try body.subject(), key: key)
            let record = IssuerRecord(
                name: name, certificate: nil, parents: [], parent: nil, keyType: key.algorithm.description,
                crlNumber: 0, crlLifetime: settings.crlLifetime, crlDistributionPoints: settings.crlURLs,
                issuingCertificates: settings.issuerURLs, created: Clock.now())
            try storage.put("issuer-keys/\(name)", try key.pkcs8PEM())
            try storage.putJSON("issuers/\(name)", record)
            forgetIssuer(name)
            return try .json(["name": name, "status": "pending", "csr": try csr.pem()])
        }
    }

    func issuerSetSigned(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "issuer")
        let body = try decodeBody(request, IssuerRequest.self, allowed: ["certificate", "chain"])
        guard let certificatePEM = body.certificate else { throw EngineError.invalid("missing field certificate") }
        try changes.withLock { _ in
            guard var record = try storage.getJSON(IssuerRecord.self, "issuers/\(name)") else {
                throw EngineError.notFound("no issuer \(quoted(name))")
            }
            guard record.certificate == nil else {
                throw EngineError.conflict("issuer \(quoted(name)) already has a certificate")
            }
            guard let keyPEM = try storage.get("issuer-keys/\(name)") else {
                throw EngineError(code: MC_ERR_INTERNAL, "issuer \(name) has no key")
            }
            let key = try X509PrivateKey(pkcs8PEM: keyPEM)
            let chain = try X509Certificate.parseChain(pem: certificatePEM + (body.chain ?? ""))
            guard chain[0].matches(key) else {
                throw EngineError.invalid("the certificate is not for this issuer's key (the one its CSR carried)")
            }
            try checkCA(chain[0], chain: Array(chain.dropFirst()))
            record.certificate = try chain[0].pem()
            record.parents = try chain.dropFirst().map { try $0.pem() }
            try store(record, key: key)
        }
        return try readIssuer(request)
    }

    func rebuildCRL(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "issuer")
        return try changes.withLock { _ in
            let issuer = try loadIssuer(name)
            try publishIssuer(issuer)
            return try .json(["name": name, "crl_number": String(try loadIssuer(name).record.crlNumber)])
        }
    }
}

struct IssuerView: Encodable {
    var name: String
    var status: String
    var keyType: String
    var parent: String?
    var subject: String
    var issuer: String
    var serialNumber: String
    var notBefore: String
    var notAfter: String
    var certificate: String
    var chain: String
    var crlNumber: UInt64

    enum CodingKeys: String, CodingKey {
        case name, status, parent, subject, issuer, certificate, chain
        case keyType = "key_type"
        case serialNumber = "serial_number"
        case notBefore = "not_before"
        case notAfter = "not_after"
        case crlNumber = "crl_number"
    }
}
