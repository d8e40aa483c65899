import COpenSSL
import Glibc

// Building and signing certificates and CRLs with OpenSSL's X.509 API. The callers (the CA engine) decide
// every field; this file only encodes what it is told, using fixed extension strings for everything that
// is not a name, and OpenSSL's typed constructors for names, so no caller text is ever parsed as
// configuration.

/// Everything a certificate says, apart from its subject key and issuer.
public struct X509CertificateTemplate: Sendable {
    /// Positive, 1–20 octets, big-endian without a leading zero octet.
    public var serial: [UInt8]
    public var subject: X509Name
    public var notBefore: Int64
    public var notAfter: Int64
    public var isCA = false
    public var pathLength: Int?
    public var keyUsages: [X509KeyUsage] = []
    public var extendedKeyUsages: [X509ExtendedKeyUsage] = []
    public var subjectAlternativeNames: [X509GeneralName] = []
    /// crlDistributionPoints URIs and authorityInformationAccess caIssuers URIs; omitted when empty.
    public var crlDistributionPoints: [String] = []
    public var issuingCertificateURLs: [String] = []

    public init(serial: [UInt8], subject: X509Name, notBefore: Int64, notAfter: Int64) {
        self.serial = serial
        self.subject = subject
        self.notBefore = notBefore
        self.notAfter = notAfter
    }
}

/// One entry of a CRL.
public struct X509RevokedCertificate: Sendable {
    public var serial: [UInt8]
    public var revocationDate: Int64
    public var reason: X509RevocationReason

    public init(serial: [UInt8], revocationDate: Int64, reason: X509RevocationReason) {
        self.serial = serial
        self.revocationDate = revocationDate
        self.reason = reason
    }
}

extension X509Certificate {
    /// Signs `template` for `subjectKey`. With `issuer` nil the certificate is self-signed (a root) and
    /// `issuerKey` must be the private half of `subjectKey`.
    public static func sign(
        _ template: X509CertificateTemplate, subjectKey: X509PublicKey, issuer: X509Certificate?,
        issuerKey: X509PrivateKey
    ) throws -> X509Certificate {
        guard let x509 = X509_new() else { throw CryptoError(.library, "X509_new failed") }
        let certificate = X509Certificate(taking: x509)

        // The fixed fields: version 3, serial, validity, names, key.
        try check(X509_set_version(x509, 2), "X509_set_version")
        try withASN1Integer(template.serial) { try check(X509_set_serialNumber(x509, $0), "X509_set_serialNumber") }
        try withASN1Time(template.notBefore) { try check(X509_set1_notBefore(x509, $0), "X509_set1_notBefore") }
        try withASN1Time(template.notAfter) { try check(X509_set1_notAfter(x509, $0), "X509_set1_notAfter") }
        let subject = try template.subject.build()
        try withExtendedLifetime(subject) {
            try check(X509_set_subject_name(x509, subject.raw), "X509_set_subject_name")
            try check(
                X509_set_issuer_name(x509, issuer.map { X509_get_subject_name($0.raw) } ?? subject.raw), "issuer name")
        }
        try check(X509_set_pubkey(x509, subjectKey.key.raw), "X509_set_pubkey")

        // Extensions, in the order RFC 5280 lists them. SKI comes before AKI: a root's AKI is its own SKI.
        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, issuer?.raw ?? x509, x509, nil, nil, 0)
        let add = { (nid: Int32, value: String) throws in
            guard let ext = X509V3_EXT_conf_nid(nil, &ctx, nid, value) else {
                ERR_clear_error()
                throw CryptoError(.library, "extension \(String(cString: OBJ_nid2sn(nid))) = \(value) failed")
            }
            defer { X509_EXTENSION_free(ext) }
            try check(X509_add_ext(x509, ext, -1), "X509_add_ext")
        }
        if template.isCA {
            try add(NID_basic_constraints, "critical,CA:TRUE" + (template.pathLength.map { ",pathlen:\($0)" } ?? ""))
        } else {
            try add(NID_basic_constraints, "critical,CA:FALSE")
        }
        if !template.keyUsages.isEmpty {
            try add(NID_key_usage, "critical," + template.keyUsages.map(\.openSSLName).joined(separator: ","))
        }
        if !template.extendedKeyUsages.isEmpty {
            try add(NID_ext_key_usage, template.extendedKeyUsages.map(\.rawValue).joined(separator: ","))
        }
        try add(NID_subject_key_identifier, "hash")
        try add(NID_authority_key_identifier, "keyid:always")
        if !template.subjectAlternativeNames.isEmpty {
            // RFC 5280 4.2.1.6: critical when the subject is empty.
            try addSubjectAlternativeNames(
                template.subjectAlternativeNames, to: x509,
                critical: template.subject.attributes.isEmpty)
        }
        if !template.crlDistributionPoints.isEmpty {
            try add(NID_crl_distribution_points, try uriList(template.crlDistributionPoints, prefix: "URI:"))
        }
        if !template.issuingCertificateURLs.isEmpty {
            try add(NID_info_access, try uriList(template.issuingCertificateURLs, prefix: "caIssuers;URI:"))
        }

        guard X509_sign(x509, issuerKey.key.raw, issuerKey.algorithm.signatureDigest) > 0 else {
            ERR_clear_error()
            throw CryptoError(.library, "X509_sign failed")
        }
        return certificate
    }
}

/// A signed certificate revocation list.
public final class X509CRL: @unchecked Sendable {  // never modified after signing
    let raw: OpaquePointer

    private init(taking raw: OpaquePointer) { self.raw = raw }
    deinit { X509_CRL_free(raw) }

    /// Signs a v2 CRL with a cRLNumber, the issuer's key identifier, and entries sorted by serial. With no
    /// entries, revokedCertificates is left out entirely (RFC 5280 5.1.2.6).
    public static func sign(
        issuer: X509Certificate, issuerKey: X509PrivateKey, number: UInt64, thisUpdate: Int64, nextUpdate: Int64,
        revoked: [X509RevokedCertificate]
    ) throws -> X509CRL {
        guard let crl = X509_CRL_new() else { throw CryptoError(.library, "X509_CRL_new failed") }
        let list = X509CRL(taking: crl)

        // The fixed fields.
        try check(X509_CRL_set_version(crl, 1), "X509_CRL_set_version")
        try check(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer.raw)), "X509_CRL_set_issuer_name")
        try withASN1Time(thisUpdate) { try check(X509_CRL_set1_lastUpdate(crl, $0), "X509_CRL_set1_lastUpdate") }
        try withASN1Time(nextUpdate) { try check(X509_CRL_set1_nextUpdate(crl, $0), "X509_CRL_set1_nextUpdate") }

        // The entries; reasonCode is omitted for "unspecified", as RFC 5280 5.3.1 asks.
        for entry in revoked {
            guard let item = X509_REVOKED_new() else { throw CryptoError(.library, "X509_REVOKED_new failed") }
            var owned = true
            defer { if owned { X509_REVOKED_free(item) } }
            try withASN1Integer(entry.serial) { try check(X509_REVOKED_set_serialNumber(item, $0), "revoked serial") }
            try withASN1Time(entry.revocationDate) {
                try check(X509_REVOKED_set_revocationDate(item, $0), "revocation date")
            }
            if entry.reason != .unspecified {
                guard let code = ASN1_ENUMERATED_new() else {
                    throw CryptoError(.library, "ASN1_ENUMERATED_new failed")
                }
                defer { ASN1_ENUMERATED_free(code) }
                try check(ASN1_ENUMERATED_set(code, entry.reason.code), "ASN1_ENUMERATED_set")
                try check(
                    X509_REVOKED_add1_ext_i2d(item, NID_crl_reason, UnsafeMutableRawPointer(code), 0, 0), "reasonCode")
            }
            try check(X509_CRL_add0_revoked(crl, item), "X509_CRL_add0_revoked")
            owned = false
        }
        try check(X509_CRL_sort(crl), "X509_CRL_sort")

        // Extensions: authorityKeyIdentifier and cRLNumber (RFC 5280 5.2.1, 5.2.3).
        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, issuer.raw, nil, nil, crl, 0)
        guard let aki = X509V3_EXT_conf_nid(nil, &ctx, NID_authority_key_identifier, "keyid:always") else {
            ERR_clear_error()
            throw CryptoError(.library, "CRL authorityKeyIdentifier failed")
        }
        defer { X509_EXTENSION_free(aki) }
        try check(X509_CRL_add_ext(crl, aki, -1), "X509_CRL_add_ext")
        var numberBytes = withUnsafeBytes(of: number.bigEndian) { Array($0) }
        while numberBytes.count > 1 && numberBytes[0] == 0 { numberBytes.removeFirst() }
        try withASN1Integer(numberBytes) {
            try check(X509_CRL_add1_ext_i2d(crl, NID_crl_number, UnsafeMutableRawPointer($0), 0, 0), "cRLNumber")
        }

        guard X509_CRL_sign(crl, issuerKey.key.raw, issuerKey.algorithm.signatureDigest) > 0 else {
            ERR_clear_error()
            throw CryptoError(.library, "X509_CRL_sign failed")
        }
        return list
    }

    public func pem() throws -> String {
        let bytes = try withMemoryBIO { bio in PEM_write_bio_X509_CRL(bio, raw) }
        return String(decoding: bytes.unsafeArray(), as: UTF8.self)
    }

    public func der() throws -> [UInt8] {
        let length = i2d_X509_CRL(raw, nil)
        guard length > 0 else { throw CryptoError(.library, "i2d_X509_CRL failed") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { b -> Int32 in
            var cursor = b.baseAddress
            return i2d_X509_CRL(raw, &cursor)
        }
        guard written == length else { throw CryptoError(.library, "i2d_X509_CRL wrote \(written) of \(length) bytes") }
        return out
    }
}

/// Adds subjectAltName from typed values: each entry is made by OpenSSL's constructor for its type, so a
/// comma or a colon in a value is just a character, never syntax.
private func addSubjectAlternativeNames(_ names: [X509GeneralName], to x509: OpaquePointer, critical: Bool) throws {
    guard let stack = mc_general_names_new() else { throw CryptoError(.library, "GENERAL_NAMES allocation failed") }
    defer { GENERAL_NAMES_free(stack) }
    for name in names {
        guard let entry = a2i_GENERAL_NAME(nil, nil, nil, name.openSSLType, name.value, 0) else {
            ERR_clear_error()
            throw CryptoError(.invalidInput, "subjectAltName \(name.value) cannot be encoded")
        }
        guard mc_general_names_push(stack, entry) > 0 else {
            GENERAL_NAME_free(entry)
            throw CryptoError(.library, "GENERAL_NAMES push failed")
        }
    }
    try check(
        X509_add1_ext_i2d(
            x509, NID_subject_alt_name, UnsafeMutableRawPointer(stack), critical ? 1 : 0,
            UInt(X509V3_ADD_DEFAULT)), "subjectAltName")
}

/// "URI:a,URI:b" for the configuration parser; URLs with a comma or a control byte are refused here, so
/// that a URL can never add a second entry.
private func uriList(_ urls: [String], prefix: String) throws -> String {
    for url in urls where url.utf8.contains(where: { $0 == UInt8(ascii: ",") || $0 <= 0x20 || $0 >= 0x7f }) {
        throw CryptoError(.invalidInput, "URL \(url) has a comma, a space or a non-ASCII byte")
    }
    return urls.map { prefix + $0 }.joined(separator: ",")
}

/// Runs `body` with an ASN1_INTEGER for the positive big-endian `magnitude`.
private func withASN1Integer(_ magnitude: [UInt8], _ body: (UnsafeMutablePointer<ASN1_INTEGER>) throws -> Void) throws {
    guard !magnitude.isEmpty, let bn = BN_bin2bn(magnitude, Int32(magnitude.count), nil) else {
        throw CryptoError(.invalidInput, "empty integer")
    }
    defer { BN_free(bn) }
    guard let integer = BN_to_ASN1_INTEGER(bn, nil) else { throw CryptoError(.library, "BN_to_ASN1_INTEGER failed") }
    defer { ASN1_INTEGER_free(integer) }
    try body(integer)
}

/// Runs `body` with an ASN1_TIME for `seconds` since the epoch: UTCTime through 2049, GeneralizedTime after,
/// as RFC 5280 4.1.2.5 requires.
private func withASN1Time(_ seconds: Int64, _ body: (UnsafeMutablePointer<ASN1_TIME>) throws -> Void) throws {
    guard let time = ASN1_TIME_set(nil, time_t(seconds)) else { throw CryptoError(.library, "ASN1_TIME_set failed") }
    defer { ASN1_TIME_free(time) }
    try body(time)
}
