import COpenSSL

/// A throwaway certificate authority and server certificate for `metacrypt server --dev`.
///
/// ECDSA P-256 with SHA-256 throughout: small, fast and accepted by every TLS 1.3 client.
public struct DevelopmentTLS: Sendable {
    /// The dev CA certificate (PEM): what clients pass as `--cacert`.
    public let caCertificatePEM: String
    /// The server certificate followed by the CA certificate (PEM).
    public let chainPEM: String
    /// The server's private key (PKCS#8 PEM).
    public let privateKeyPEM: SecureBytes

    /// Generates a CA and a server certificate valid for `dnsNames` and `ipAddresses`.
    public static func generate(dnsNames: [String], ipAddresses: [String], days: Int = 30) throws -> DevelopmentTLS {
        let caKey = try PrivateKey.generateP256()
        let ca = try CertificateBuilder.build(
            subject: "Metacrypt development CA", issuer: nil, subjectKey: caKey, signingKey: caKey, days: days,
            extensions: [
                (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
                (NID_key_usage, "critical,keyCertSign,cRLSign"),
                (NID_subject_key_identifier, "hash"),
            ])

        let serverKey = try PrivateKey.generateP256()
        let sans = (dnsNames.map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }).joined(separator: ",")
        let server = try CertificateBuilder.build(
            subject: dnsNames.first ?? "localhost", issuer: ca, subjectKey: serverKey, signingKey: caKey, days: days,
            extensions: [
                (NID_basic_constraints, "critical,CA:FALSE"),
                (NID_key_usage, "critical,digitalSignature"),
                (NID_ext_key_usage, "serverAuth"),
                (NID_subject_key_identifier, "hash"),
                (NID_authority_key_identifier, "keyid:always"),
                (NID_subject_alt_name, sans),
            ])

        let caPEM = try ca.pem()
        return DevelopmentTLS(
            caCertificatePEM: caPEM, chainPEM: try server.pem() + caPEM, privateKeyPEM: try serverKey.pem())
    }
}

/// Owns an `EVP_PKEY`.
final class PrivateKey {
    let raw: OpaquePointer

    private init(raw: OpaquePointer) { self.raw = raw }
    deinit { EVP_PKEY_free(raw) }

    static func generateP256() throws -> PrivateKey {
        guard let key = mc_evp_pkey_generate_ec("P-256") else {
            throw CryptoError(.library, "EC P-256 key generation failed")
        }
        return PrivateKey(raw: key)
    }

    /// PKCS#8 PEM, copied straight into a wiped buffer.
    func pem() throws -> SecureBytes {
        try withMemoryBIO { bio in
            PEM_write_bio_PrivateKey(bio, raw, nil, nil, 0, nil, nil)
        }
    }
}

/// Owns an `X509`.
final class Certificate {
    let raw: OpaquePointer

    init(raw: OpaquePointer) { self.raw = raw }
    deinit { X509_free(raw) }

    func pem() throws -> String {
        let bytes = try withMemoryBIO { bio in PEM_write_bio_X509(bio, raw) }
        return String(decoding: bytes.unsafeArray(), as: UTF8.self)
    }
}

enum CertificateBuilder {
    static func build(
        subject: String, issuer: Certificate?, subjectKey: PrivateKey, signingKey: PrivateKey, days: Int,
        extensions: [(Int32, String)]
    ) throws -> Certificate {
        guard let x509 = X509_new() else { throw CryptoError(.library, "X509_new failed") }
        let cert = Certificate(raw: x509)

        try check(X509_set_version(x509, 2), "X509_set_version")
        var serial = randomBytes(16)
        serial[0] &= 0x7f  // positive
        guard let bn = BN_bin2bn(serial, Int32(serial.count), nil) else { throw CryptoError(.library, "BN_bin2bn") }
        defer { BN_free(bn) }
        guard let asn1Serial = BN_to_ASN1_INTEGER(bn, nil) else { throw CryptoError(.library, "serial") }
        defer { ASN1_INTEGER_free(asn1Serial) }
        try check(X509_set_serialNumber(x509, asn1Serial), "X509_set_serialNumber")

        guard X509_gmtime_adj(X509_getm_notBefore(x509), -3600) != nil,
              X509_time_adj_ex(X509_getm_notAfter(x509), Int32(days), 0, nil) != nil
        else { throw CryptoError(.library, "certificate validity") }

        guard let name = X509_NAME_new() else { throw CryptoError(.library, "X509_NAME_new") }
        defer { X509_NAME_free(name) }
        try check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, subject, -1, -1, 0), "subject CN")
        try check(X509_set_subject_name(x509, name), "X509_set_subject_name")
        try check(X509_set_issuer_name(x509, issuer.map { X509_get_subject_name($0.raw) } ?? name), "issuer name")
        try check(X509_set_pubkey(x509, subjectKey.raw), "X509_set_pubkey")

        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, issuer?.raw ?? x509, x509, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &ctx, nid, value) else {
                throw CryptoError(.library, "extension \(nid)=\(value)")
            }
            defer { X509_EXTENSION_free(ext) }
            try check(X509_add_ext(x509, ext, -1), "X509_add_ext")
        }

        guard X509_sign(x509, signingKey.raw, EVP_sha256()) > 0 else { throw CryptoError(.library, "X509_sign") }
        return cert
    }
}

/// Runs `write` against a memory BIO and returns what it wrote, in a wiped buffer.
func withMemoryBIO(_ write: (OpaquePointer) -> Int32) throws -> SecureBytes {
    guard let bio = BIO_new(BIO_s_mem()) else { throw CryptoError(.library, "BIO_new") }
    defer { BIO_free(bio) }  // XXX: the memory BIO's buffer is freed without being wiped.
    guard write(bio) == 1 else { throw CryptoError(.library, "PEM write failed") }
    var data: UnsafeMutablePointer<CChar>?
    let length = mc_bio_get_mem_data(bio, &data)
    guard length > 0, let data else { throw CryptoError(.library, "empty BIO") }
    return SecureBytes(copying: Array(UnsafeRawBufferPointer(start: data, count: length)))
}
