import EngineABI
import EngineKit
import FoundationEssentials
import MetacryptCrypto

// Profiles, and what callers do with them: issue (generated key), sign (CSR), renew, revoke, read.

struct LeafRequest: Decodable {
    var commonName: String?
    var altNames: [String]?
    var ipSANs: [String]?
    var uriSANs: [String]?
    var ttl: String?
    var keyType: String?
    var csr: String?

    enum CodingKeys: String, CodingKey {
        case ttl, csr
        case commonName = "common_name"
        case altNames = "alt_names"
        case ipSANs = "ip_sans"
        case uriSANs = "uri_sans"
        case keyType = "key_type"
    }

    static let names: Set<String> = ["common_name", "alt_names", "ip_sans", "uri_sans", "ttl"]

    /// Fields a caller might try in order to shape the certificate; only an admin's profile decides them.
    static let profileOnly: [String: String] = Dictionary(
        uniqueKeysWithValues: [
            "key_usages", "ext_key_usages", "is_ca", "ca", "basic_constraints", "max_path_length", "server", "client",
        ].map {
            (
                $0,
                "\($0) comes only from the profile; a caller cannot choose usages or ask for a CA certificate (audit #50)"
            )
        })
}

/// The names of a certificate, checked against a profile and normalised.
struct CertificateNames {
    var commonName: String?
    var dns: [String] = []
    var ips: [String] = []
    var uris: [String] = []
    var emails: [String] = []

    var subjectAlternativeNames: [X509GeneralName] {
        dns.map { .dns($0) } + ips.map { .ip($0) } + uris.map { .uri($0) } + emails.map { .email($0) }
    }
}

struct RevokeRequest: Decodable {
    var serialNumber: String
    var reason: String?
    var ttl: String?

    enum CodingKeys: String, CodingKey {
        case reason, ttl
        case serialNumber = "serial_number"
    }
}

struct LeafView: Encodable {
    var certificate: String
    var chain: String
    var issuingCA: String
    var serialNumber: String
    var notBefore: String
    var notAfter: String
    var privateKeyType: String?
    var warnings: [String]?

    enum CodingKeys: String, CodingKey {
        case certificate, chain, warnings
        case issuingCA = "issuing_ca"
        case serialNumber = "serial_number"
        case notBefore = "not_before"
        case notAfter = "not_after"
        case privateKeyType = "private_key_type"
    }
}

extension Profile {
    /// True if `name` (lowercase, valid) is covered by allowed_domains: an exact entry, a subdomain of an
    /// entry when allow_subdomains, or one label under a `*.` entry. A wildcard name needs the same.
    func allowsDomain(_ name: String) -> Bool {
        let labels = name.split(separator: ".").count
        for entry in allowedDomains {
            if entry.hasPrefix("*.") {
                let base = entry.dropFirst(2)
                if name.hasSuffix("." + base) && labels == base.split(separator: ".").count + 1 { return true }
            } else if name == entry || (allowSubdomains && name.hasSuffix("." + entry)) {
                return true
            }
        }
        return false
    }

    /// Checks every requested name by its type and returns them normalised; the common name is also put in
    /// the subjectAltName (CA/B BR 7.1.4.3).
    func check(commonName: String?, altNames: [String], ipSANs: [String], uriSANs: [String]) throws -> CertificateNames
    {
        var names = CertificateNames()
        guard altNames.count + ipSANs.count + uriSANs.count <= 100 else {
            throw EngineError.invalid("more than 100 names")
        }

        func addHostOrEmail(_ value: String, field: String) throws -> String {
            if value.contains("@") {
                guard allowEmail else {
                    throw EngineError.invalid("\(field): email address \(quoted(value)) is not allowed by the profile")
                }
                let (address, domain) = try EmailName.normalised(value, field: field)
                guard allowsDomain(domain) else {
                    throw EngineError.invalid(
                        "\(field): email domain of \(quoted(value)) is not in the profile's allowed_domains")
                }
                if !names.emails.contains(address) { names.emails.append(address) }
                return address
            }
            let name = try DNSName.normalised(value, field: field)
            if name.hasPrefix("*.") {
                guard allowWildcards else {
                    throw EngineError.invalid("\(field): wildcard \(quoted(value)) is not allowed by the profile")
                }
            }
            guard allowsDomain(name) else {
                throw EngineError.invalid("\(field): \(quoted(value)) is not allowed by the profile's allowed_domains")
            }
            if !names.dns.contains(name) { names.dns.append(name) }
            return name
        }

        if let commonName {
            guard !commonName.isEmpty, commonName.utf8.count <= 64 else {
                throw EngineError.invalid("common_name \(quoted(commonName)) must be 1-64 bytes")
            }
            names.commonName = try addHostOrEmail(commonName, field: "common_name")
        }
        for name in altNames { _ = try addHostOrEmail(name, field: "alt_names") }
        for ip in ipSANs {
            guard allowIPSANs else {
                throw EngineError.invalid("ip_sans: \(quoted(ip)) is not allowed: the profile allows no IP addresses")
            }
            guard let address = IPAddress.normalised(ip) else {
                throw EngineError.invalid("ip_sans: \(quoted(ip)) is not an IP address")
            }
            if !names.ips.contains(address) { names.ips.append(address) }
        }
        for uri in uriSANs {
            if let problem = URIName.problem(uri) { throw EngineError.invalid("uri_sans: \(quoted(uri)) \(problem)") }
            guard allowedURISANs.contains(where: { globMatches($0, uri) }) else {
                throw EngineError.invalid("uri_sans: \(quoted(uri)) is not allowed by the profile's allowed_uri_sans")
            }
            if !names.uris.contains(uri) { names.uris.append(uri) }
        }
        guard !names.subjectAlternativeNames.isEmpty else {
            throw EngineError.invalid("no names: give common_name, alt_names, ip_sans or uri_sans")
        }
        return names
    }

    /// Refuses keys the profile or the CA does not accept: DSA and other algorithms, RSA under 2048 bits.
    func checkKey(_ algorithm: X509KeyAlgorithm, origin: String) throws {
        switch algorithm {
        case .unsupported(let name):
            throw EngineError.invalid(
                "\(origin) is \(name), which is not accepted; use RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519"
            )
        case .rsa(let bits) where bits < 2048:
            throw EngineError.invalid("\(origin) is RSA with \(bits) bits; at least 2048 are required")
        case .rsa(let bits) where bits > 8192:
            throw EngineError.invalid("\(origin) is RSA with \(bits) bits; at most 8192 are accepted")
        default: break
        }
        guard keyType == "any" || algorithm.family == keyType else {
            throw EngineError.invalid("\(origin) is \(algorithm); the profile requires \(keyType)")
        }
        if case .rsa(let bits) = algorithm, bits < keyBits {
            throw EngineError.invalid("\(origin) is RSA with \(bits) bits; the profile requires at least \(keyBits)")
        }
    }

    /// The key generated when `issue` names no key_type.
    var defaultKeyType: X509KeyType {
        switch keyType {
        case "ecdsa-p384": .ecdsaP384
        case "ed25519": .ed25519
        case "rsa": keyBits >= 4096 ? .rsa4096 : keyBits >= 3072 ? .rsa3072 : .rsa2048
        default: .ecdsaP256
        }
    }
}

extension CAEngine {
    // MARK: Profiles

    func listProfiles() throws -> EngineResponse {
        try .json(["profiles": try storage.list(prefix: "profiles/").map { String($0.dropFirst("profiles/".count)) }])
    }

    func writeProfile(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "profile")
        let allowed = Set(Profile.CodingKeys.allCases.map(\.rawValue)).subtracting(["format"])
        let profile = try decodeBody(request, Profile.self, allowed: allowed)
        try profile.validate()
        guard try storage.get("issuers/\(profile.issuer)") != nil else {
            throw EngineError.invalid("issuer \(quoted(profile.issuer)) does not exist")
        }
        try storage.putJSON("profiles/\(name)", profile)
        return try .json(profile)
    }

    func loadProfile(_ name: String) throws -> Profile {
        try ObjectName.validate(name, kind: "profile")
        guard let profile = try storage.getJSON(Profile.self, "profiles/\(name)") else {
            throw EngineError.notFound("no profile \(quoted(name))")
        }
        return profile
    }

    func readProfile(_ request: EngineRequest) throws -> EngineResponse {
        try .json(try loadProfile(try request.parameter("name")))
    }

    func deleteProfile(_ request: EngineRequest) throws -> EngineResponse {
        let name = try request.parameter("name")
        try ObjectName.validate(name, kind: "profile")
        guard try storage.delete("profiles/\(name)") else { throw EngineError.notFound("no profile \(quoted(name))") }
        return EngineResponse(status: 204, body: [])
    }

    // MARK: Issue and sign

    func issue(_ request: EngineRequest) throws -> EngineResponse {
        let profileName = try request.parameter("profile")
        let profile = try loadProfile(profileName)
        let body = try decodeBody(
            request, LeafRequest.self, allowed: LeafRequest.names.union(["key_type"]),
            forbidden: LeafRequest.profileOnly)
        let names = try profile.check(
            commonName: body.commonName, altNames: body.altNames ?? [],
            ipSANs: body.ipSANs ?? [], uriSANs: body.uriSANs ?? [])
        let keyType =
            try body.keyType.map { text in
                guard let type = X509KeyType(rawValue: text) else {
                    throw EngineError.invalid("key_type \(quoted(text)) is unknown")
                }
                return type
            } ?? profile.defaultKeyType
        let key = try X509PrivateKey.generate(keyType)
        try profile.checkKey(key.algorithm, origin: "key_type \(keyType.rawValue)")

        let issued = try signLeaf(
            profileName: profileName, profile: profile, names: names, ttl: body.ttl,
            subjectKey: try key.publicKey(), keyGenerated: true, renews: nil)
        return try responseWithKey(issued, key: key)
    }

    func sign(_ request: EngineRequest) throws -> EngineResponse {
        let profileName = try request.parameter("profile")
        let profile = try loadProfile(profileName)
        let body = try decodeBody(
            request, LeafRequest.self, allowed: LeafRequest.names.union(["csr"]),
            forbidden: LeafRequest.profileOnly)
        guard let pem = body.csr else { throw EngineError.invalid("missing field csr") }

        // Proof of possession first: nothing in a CSR counts before its signature verifies.
        let csr = try X509CertificationRequest(pem: pem)
        let subjectKey = try csr.publicKey()
        guard csr.hasValidSignature() else {
            throw EngineError.invalid("the CSR's signature does not verify with its own key")
        }
        try profile.checkKey(subjectKey.algorithm, origin: "the CSR's key")
        let requested = try csr.requestedExtensions()
        if requested.requestsCA {
            throw EngineError.invalid(
                "the CSR asks for a CA certificate (basicConstraints CA:TRUE), which is refused (audit #50)")
        }
        for usage in requested.keyUsages where usage == .keyCertSign || usage == .cRLSign {
            throw EngineError.invalid("the CSR asks for key usage \(usage.rawValue), which is refused (audit #50)")
        }

        // The CSR's names and the body's are checked alike; the subject CN comes from the body or the CSR.
        let csrNames = requested.subjectAlternativeNames
        let commonNames = csr.commonNames
        guard commonNames.count <= 1 else { throw EngineError.invalid("the CSR has \(commonNames.count) common names") }
        let names = try profile.check(
            commonName: body.commonName ?? commonNames.first,
            altNames: (body.altNames ?? [])
                + csrNames.compactMap {
                    switch $0 {
                    case .dns(let v), .email(let v): v
                    default: nil
                    }
                },
            ipSANs: (body.ipSANs ?? []) + csrNames.compactMap { if case .ip(let v) = $0 { v } else { nil } },
            uriSANs: (body.uriSANs ?? []) + csrNames.compactMap { if case .uri(let v) = $0 { v } else { nil } })

        let issued = try signLeaf(
            profileName: profileName, profile: profile, names: names, ttl: body.ttl,
            subjectKey: subjectKey, keyGenerated: false, renews: nil)
        return try .json(issued.view)
    }

    struct Issued {
        var record: CertificateRecord
        var view: LeafView
    }

    /// Signs and records a leaf certificate under the profile's issuer.
    func signLeaf(
        profileName: String, profile: Profile, names: CertificateNames, ttl: String?,
        subjectKey: X509PublicKey, keyGenerated: Bool, renews: String?
    ) throws -> Issued {
        let issuer = try loadIssuer(profile.issuer)
        var warnings: [String] = []

        // Validity: capped by the profile's max_ttl, never past any certificate of the chain (audit #49).
        var seconds = try ttl.map { try Durations.seconds($0) } ?? profile.maxTTLSeconds
        guard seconds >= 60 else { throw EngineError.invalid("ttl \(quoted(ttl ?? "")) is shorter than a minute") }
        if seconds > profile.maxTTLSeconds {
            warnings.append("ttl \(ttl ?? "") exceeds the profile's max_ttl \(profile.maxTTL) and was capped to it")
            seconds = profile.maxTTLSeconds
        }
        let now = Clock.now()
        let issuerEnd = ([issuer.certificate] + issuer.parents).map(\.notAfter).min() ?? 0
        var notAfter = now + seconds
        if notAfter > issuerEnd {
            guard profile.ttlPastIssuer == "truncate" else {
                throw EngineError.invalid(
                    "ttl would end at \(Clock.text(notAfter)), after the issuer's notAfter \(Clock.text(issuerEnd)) (audit #49); the profile refuses rather than truncates"
                )
            }
            notAfter = issuerEnd
            warnings.append("notAfter truncated to the issuer's notAfter \(Clock.text(issuerEnd))")
        }
        // Backdated a minute for clock skew, but never before the issuer's own notBefore.
        let notBefore = max(now - 60, issuer.certificate.notBefore)
        guard notAfter > now + 59 else {
            throw EngineError.conflict("issuer \(quoted(profile.issuer)) expires within a minute")
        }

        // The certificate: every usage from the profile (audit #50), names as checked.
        var template = X509CertificateTemplate(
            serial: Serial.random(), subject: X509Name(commonName: names.commonName),
            notBefore: notBefore, notAfter: notAfter)
        template.keyUsages = profile.keyUsages(for: subjectKey.algorithm)
        template.extendedKeyUsages = profile.extendedKeyUsages
        template.subjectAlternativeNames = names.subjectAlternativeNames
        template.crlDistributionPoints = issuer.record.crlDistributionPoints
        template.issuingCertificateURLs = issuer.record.issuingCertificates

        // A serial is random; on the (2^-127) chance it was used before, draw again.
        for _ in 0..<3 {
            let certificate = try X509Certificate.sign(
                template, subjectKey: subjectKey, issuer: issuer.certificate,
                issuerKey: issuer.key)
            let pem = try certificate.pem()
            let record = CertificateRecord(
                serialNumber: Serial.text(template.serial), issuer: profile.issuer, profile: profileName,
                commonName: names.commonName, dnsNames: names.dns, ipSANs: names.ips, uriSANs: names.uris,
                emails: names.emails, notBefore: Clock.text(notBefore), notAfter: Clock.text(notAfter),
                certificate: pem, keyGenerated: keyGenerated, renews: renews)
            do {
                try storage.putJSON("certs/\(Serial.key(template.serial))", record, createOnly: true)
            } catch let error as EngineError where error.code == MC_ERR_EXISTS {
                template.serial = Serial.random()
                continue
            }
            let view = LeafView(
                certificate: pem, chain: issuer.chainPEM, issuingCA: issuer.record.certificate ?? "",
                serialNumber: record.serialNumber, notBefore: record.notBefore, notAfter: record.notAfter,
                privateKeyType: nil, warnings: warnings.isEmpty ? nil : warnings)
            return Issued(record: record, view: view)
        }
        throw EngineError(code: MC_ERR_INTERNAL, "three serial collisions in a row")
    }

    /// The JSON answer with the generated key spliced in as `private_key`, so that the key passes through
    /// no Swift String or encoder (audit #52).
    func responseWithKey(_ issued: Issued, key: X509PrivateKey) throws -> EngineResponse {
        var view = issued.view
        view.privateKeyType = key.algorithm.family
        let pem = try key.pkcs8PEM()
        var head = try EngineResponse.json(view).body
        guard head.last == UInt8(ascii: "}") else { throw EngineError(code: MC_ERR_INTERNAL, "unexpected JSON") }
        head.removeLast()
        head += Array(",\"private_key\":\"".utf8)
        let tail = Array("\"}".utf8)

        // The key goes straight from the PEM buffer into a self-wiping body (audit #52). PEM is base64,
        // dashes, spaces and newlines: only the newline needs escaping in a JSON string.
        let newlines = pem.withUnsafeBytes { $0.reduce(0) { $1 == 0x0a ? $0 + 1 : $0 } }
        var body = SecureBytes(zeroes: head.count + pem.count + newlines + tail.count)
        body.withUnsafeMutableBytes { out in
            var o = 0
            for byte in head { out[o] = byte; o += 1 }
            pem.withUnsafeBytes { bytes in
                for byte in bytes {
                    if byte == 0x0a {
                        out[o] = 0x5c
                        out[o + 1] = 0x6e
                        o += 2
                    } else {
                        out[o] = byte
                        o += 1
                    }
                }
            }
            for byte in tail { out[o] = byte; o += 1 }
        }
        // XXX: the EVP_PKEY is cleared by OpenSSL when `key` is freed, but OpenSSL's PEM encoder's memory
        // BIO is freed unwiped (see withMemoryBIO).
        return EngineResponse(status: 200, secretBody: body)
    }

    // MARK: Renew, revoke, read

    func renew(_ request: EngineRequest) throws -> EngineResponse {
        let body = try decodeBody(request, RevokeRequest.self, allowed: ["serial_number", "ttl"])
        let serial = try Serial.parse(body.serialNumber)
        return try changes.withLock { _ in
            guard var original = try storage.getJSON(CertificateRecord.self, "certs/\(Serial.key(serial))") else {
                throw EngineError.notFound("no certificate with serial \(Serial.text(serial))")
            }
            guard original.revokedAt == nil else {
                throw EngineError.conflict(
                    "certificate \(original.serialNumber) is revoked; a revoked certificate cannot be renewed (audit #51)"
                )
            }
            // Renewing is issuing again: the caller needs the same right on the profile as for a first issue.
            let action = original.keyGenerated ? "issue" : "sign"
            guard request.isAllowed(action: action, resource: "profiles/\(original.profile)") else {
                throw EngineError.denied("renewing needs the \(action) right on profile \(original.profile)")
            }
            let profile = try loadProfile(original.profile)
            let names = try profile.check(
                commonName: original.commonName, altNames: original.dnsNames + original.emails,
                ipSANs: original.ipSANs, uriSANs: original.uriSANs)

            // The new certificate first; only once it is stored is the original revoked (audit #51).
            let key = original.keyGenerated ? try X509PrivateKey.generate(profile.defaultKeyType) : nil
            let subjectKey = try key?.publicKey() ?? X509Certificate(pem: original.certificate).publicKey()
            let issued = try signLeaf(
                profileName: original.profile, profile: profile, names: names, ttl: body.ttl,
                subjectKey: subjectKey, keyGenerated: original.keyGenerated,
                renews: original.serialNumber)
            original.renewedBy = issued.record.serialNumber
            try revokeLocked(&original, reason: .superseded)
            if let key { return try responseWithKey(issued, key: key) }
            return try .json(issued.view)
        }
    }

    func revoke(_ request: EngineRequest) throws -> EngineResponse {
        let body = try decodeBody(request, RevokeRequest.self, allowed: ["serial_number", "reason"])
        let serial = try Serial.parse(body.serialNumber)
        let reason =
            try body.reason.map { text in
                guard let reason = X509RevocationReason(rawValue: text) else {
                    throw EngineError.invalid(
                        "reason \(quoted(text)) is unknown; use \(X509RevocationReason.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                return reason
            } ?? .unspecified
        return try changes.withLock { _ in
            guard var record = try storage.getJSON(CertificateRecord.self, "certs/\(Serial.key(serial))") else {
                throw EngineError.notFound("no certificate with serial \(Serial.text(serial))")
            }
            guard record.revokedAt == nil else {
                throw EngineError.conflict("certificate \(record.serialNumber) is already revoked")
            }
            try revokeLocked(&record, reason: reason)
            return try .json([
                "serial_number": record.serialNumber, "revoked_at": record.revokedAt ?? "",
                "reason": reason.rawValue,
            ])
        }
    }

    /// Records the revocation, then signs and publishes the issuer's new CRL. Call with `changes` held.
    private func revokeLocked(_ record: inout CertificateRecord, reason: X509RevocationReason) throws {
        let now = Clock.now()
        let serial = try Serial.parse(record.serialNumber)
        record.revokedAt = Clock.text(now)
        record.revocationReason = reason.rawValue
        try storage.putJSON(
            "revoked/\(record.issuer)/\(Serial.key(serial))",
            RevocationRecord(serialNumber: record.serialNumber, revokedAt: now, reason: reason))
        try storage.putJSON("certs/\(Serial.key(serial))", record)
        try signCRL(try loadIssuer(record.issuer))
    }

    func listCertificates() throws -> EngineResponse {
        let keys = try storage.list(prefix: "certs/").map { String($0.dropFirst("certs/".count)) }
        return try .json(["certs": try keys.map { Serial.text(try Serial.parse($0)) }])
    }

    func readCertificate(_ request: EngineRequest) throws -> EngineResponse {
        let serial = try Serial.parse(try request.parameter("serial"))
        guard let record = try storage.getJSON(CertificateRecord.self, "certs/\(Serial.key(serial))") else {
            throw EngineError.notFound("no certificate with serial \(Serial.text(serial))")
        }
        return try .json(record)
    }
}
