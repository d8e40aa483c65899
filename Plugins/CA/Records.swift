import EngineKit
import FoundationEssentials
import MetacryptCrypto

// What the CA engine stores, all inside the mount's barrier view:
//
//   issuers/<name>          IssuerRecord (JSON)
//   issuer-keys/<name>      the issuer's private key, PKCS#8 PEM (kept apart so it is read into SecureBytes)
//   profiles/<name>         Profile (JSON)
//   certs/<serial hex>      CertificateRecord (JSON), never a private key
//   revoked/<issuer>/<hex>  RevocationRecord (JSON): what the issuer's CRL lists
//
// Every record carries `format`; unknown formats are refused.

let recordFormat = 1

struct IssuerRecord: Codable {
    var format = recordFormat
    var name: String
    /// The issuer certificate (PEM); nil while a CSR for an outside CA is pending.
    var certificate: String?
    /// The certificates above this one, nearest first (PEM each); empty for a root.
    var parents: [String]
    /// The issuer of this mount that signed it, if any.
    var parent: String?
    var keyType: String
    var crlNumber: UInt64
    var crlLifetime: Int64
    var crlDistributionPoints: [String]
    var issuingCertificates: [String]
    var created: Int64

    enum CodingKeys: String, CodingKey {
        case format, name, certificate, parents, parent, created
        case keyType = "key_type"
        case crlNumber = "crl_number"
        case crlLifetime = "crl_lifetime"
        case crlDistributionPoints = "crl_distribution_points"
        case issuingCertificates = "issuing_certificates"
    }
}

struct Profile: Codable {
    var format = recordFormat
    var issuer: String
    var allowedDomains: [String] = []
    var allowSubdomains = false
    var allowWildcards = false
    var allowIPSANs = false
    var allowedURISANs: [String] = []
    var allowEmail = false
    /// `any`, `rsa`, `ecdsa-p256`, `ecdsa-p384` or `ed25519`.
    var keyType = "any"
    /// The least RSA modulus accepted, and the size generated for `rsa`.
    var keyBits = 2048
    var keyUsages: [X509KeyUsage] = [.digitalSignature, .keyEncipherment]
    var extKeyUsages: [X509ExtendedKeyUsage] = []
    var maxTTL = "30d"
    var server = true
    var client = false
    /// `refuse` or `truncate` (audit #49).
    var ttlPastIssuer = "refuse"

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, issuer, server, client
        case allowedDomains = "allowed_domains"
        case allowSubdomains = "allow_subdomains"
        case allowWildcards = "allow_wildcards"
        case allowIPSANs = "allow_ip_sans"
        case allowedURISANs = "allowed_uri_sans"
        case allowEmail = "allow_email"
        case keyType = "key_type"
        case keyBits = "key_bits"
        case keyUsages = "key_usages"
        case extKeyUsages = "ext_key_usages"
        case maxTTL = "max_ttl"
        case ttlPastIssuer = "ttl_past_issuer"
    }

    init(issuer: String) { self.issuer = issuer }

    /// Every field optional but `issuer`; absent fields take the defaults above.
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Profile(issuer: "")
        format = try c.decodeIfPresent(Int.self, forKey: .format) ?? recordFormat
        issuer = try c.decode(String.self, forKey: .issuer)
        allowedDomains = try c.decodeIfPresent([String].self, forKey: .allowedDomains) ?? d.allowedDomains
        allowSubdomains = try c.decodeIfPresent(Bool.self, forKey: .allowSubdomains) ?? d.allowSubdomains
        allowWildcards = try c.decodeIfPresent(Bool.self, forKey: .allowWildcards) ?? d.allowWildcards
        allowIPSANs = try c.decodeIfPresent(Bool.self, forKey: .allowIPSANs) ?? d.allowIPSANs
        allowedURISANs = try c.decodeIfPresent([String].self, forKey: .allowedURISANs) ?? d.allowedURISANs
        allowEmail = try c.decodeIfPresent(Bool.self, forKey: .allowEmail) ?? d.allowEmail
        keyType = try c.decodeIfPresent(String.self, forKey: .keyType) ?? d.keyType
        keyBits = try c.decodeIfPresent(Int.self, forKey: .keyBits) ?? d.keyBits
        maxTTL = try c.decodeIfPresent(String.self, forKey: .maxTTL) ?? d.maxTTL
        server = try c.decodeIfPresent(Bool.self, forKey: .server) ?? d.server
        client = try c.decodeIfPresent(Bool.self, forKey: .client) ?? d.client
        ttlPastIssuer = try c.decodeIfPresent(String.self, forKey: .ttlPastIssuer) ?? d.ttlPastIssuer
        keyUsages =
            try c.decodeIfPresent([String].self, forKey: .keyUsages).map { names in
                try names.map { name in
                    guard let usage = X509KeyUsage(rawValue: name) else {
                        throw EngineError.invalid(
                            "key_usages: unknown usage \(quoted(name)); use \(X509KeyUsage.allCases.map(\.rawValue).joined(separator: ", "))"
                        )
                    }
                    return usage
                }
            } ?? d.keyUsages
        extKeyUsages =
            try c.decodeIfPresent([String].self, forKey: .extKeyUsages).map { names in
                try names.map { name in
                    guard let usage = X509ExtendedKeyUsage(rawValue: name) else {
                        throw EngineError.invalid(
                            "ext_key_usages: unknown usage \(quoted(name)); use \(X509ExtendedKeyUsage.allCases.map(\.rawValue).joined(separator: ", "))"
                        )
                    }
                    return usage
                }
            } ?? d.extKeyUsages
    }

    static let keyTypes = ["any", "rsa", "ecdsa-p256", "ecdsa-p384", "ed25519"]

    /// Checks an admin's profile; the rules that protect issuance live here (audit #50).
    func validate() throws {
        guard format == recordFormat else { throw EngineError.invalid("format \(format) is not supported") }
        try ObjectName.validate(issuer, kind: "issuer")
        for entry in allowedDomains {
            let base = entry.hasPrefix("*.") ? String(entry.dropFirst(2)) : entry
            _ = try DNSName.normalised(base, field: "allowed_domains")
            guard base == base.lowercased() else {
                throw EngineError.invalid("allowed_domains: \(quoted(entry)) must be lowercase")
            }
        }
        for pattern in allowedURISANs where URIName.problem(pattern.replacing("*", with: "x")) != nil {
            throw EngineError.invalid("allowed_uri_sans: \(quoted(pattern)) is not an absolute URI pattern")
        }
        guard Self.keyTypes.contains(keyType) else {
            throw EngineError.invalid(
                "key_type \(quoted(keyType)) is unknown; use \(Self.keyTypes.joined(separator: ", "))")
        }
        guard [2048, 3072, 4096].contains(keyBits) else {
            throw EngineError.invalid("key_bits \(keyBits) must be 2048, 3072 or 4096")
        }
        for usage in keyUsages where usage == .keyCertSign || usage == .cRLSign {
            throw EngineError.invalid(
                "key_usages: \(usage.rawValue) is for CA certificates, which profiles never issue (audit #50)")
        }
        let ttl = try Durations.seconds(maxTTL)
        guard ttl >= 60 else { throw EngineError.invalid("max_ttl \(quoted(maxTTL)) is shorter than a minute") }
        guard ttlPastIssuer == "refuse" || ttlPastIssuer == "truncate" else {
            throw EngineError.invalid("ttl_past_issuer \(quoted(ttlPastIssuer)) must be refuse or truncate")
        }
        guard server || client || !extKeyUsages.isEmpty else {
            throw EngineError.invalid("a profile needs server, client or ext_key_usages")
        }
    }

    var maxTTLSeconds: Int64 { (try? Durations.seconds(maxTTL)) ?? 0 }

    /// serverAuth and clientAuth from the flags, then the listed purposes, without repeats.
    var extendedKeyUsages: [X509ExtendedKeyUsage] {
        var out: [X509ExtendedKeyUsage] = []
        if server { out.append(.serverAuth) }
        if client { out.append(.clientAuth) }
        for usage in extKeyUsages where !out.contains(usage) { out.append(usage) }
        return out
    }

    /// The profile's key usages that make sense for `algorithm`: EC and Ed25519 keys cannot encipher keys,
    /// Ed25519 cannot agree keys, RSA cannot agree keys in TLS. Never empty.
    func keyUsages(for algorithm: X509KeyAlgorithm) -> [X509KeyUsage] {
        let possible: [X509KeyUsage] =
            switch algorithm {
            case .rsa: [.digitalSignature, .contentCommitment, .keyEncipherment, .dataEncipherment]
            case .ecdsaP256, .ecdsaP384: [.digitalSignature, .contentCommitment, .keyAgreement]
            default: [.digitalSignature, .contentCommitment]
            }
        let chosen = keyUsages.filter(possible.contains)
        return chosen.isEmpty ? [.digitalSignature] : chosen
    }
}

struct CertificateRecord: Codable {
    var format = recordFormat
    var serialNumber: String
    var issuer: String
    var profile: String
    var commonName: String?
    var dnsNames: [String]
    var ipSANs: [String]
    var uriSANs: [String]
    var emails: [String]
    var notBefore: String
    var notAfter: String
    var certificate: String
    /// True if the engine generated the key (issue); false for a CSR (sign).
    var keyGenerated: Bool
    var revokedAt: String?
    var revocationReason: String?
    var renewedBy: String?
    var renews: String?

    enum CodingKeys: String, CodingKey {
        case format, issuer, profile, emails, certificate, renews
        case serialNumber = "serial_number"
        case commonName = "common_name"
        case dnsNames = "dns_names"
        case ipSANs = "ip_sans"
        case uriSANs = "uri_sans"
        case notBefore = "not_before"
        case notAfter = "not_after"
        case keyGenerated = "key_generated"
        case revokedAt = "revoked_at"
        case revocationReason = "revocation_reason"
        case renewedBy = "renewed_by"
    }
}

struct RevocationRecord: Codable {
    var format = recordFormat
    var serialNumber: String
    var revokedAt: Int64
    var reason: X509RevocationReason

    enum CodingKeys: String, CodingKey {
        case format, reason
        case serialNumber = "serial_number"
        case revokedAt = "revoked_at"
    }
}

extension MountStorage {
    func getJSON<T: Decodable>(_ type: T.Type, _ key: String) throws -> T? {
        guard let bytes = try get(key) else { return nil }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes.unsafeArray()))
        } catch {
            throw EngineError(code: -10, "stored record \(key) cannot be decoded")
        }
    }

    func putJSON(_ key: String, _ value: some Encodable, createOnly: Bool = false) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try put(key, Array(try encoder.encode(value)), createOnly: createOnly)
    }
}
