import COpenSSL
import Glibc

// Parsing certificates and certification requests, and the value types (names, general names, usages)
// the builder in X509Builder.swift shares. RFC 5280 names throughout.

/// A distinguished name as Metacrypt writes it: a few well-known attributes, each optional.
public struct X509Name: Sendable, Equatable, Codable {
    public var commonName: String?
    public var organization: String?
    public var organizationalUnit: String?
    public var country: String?
    public var province: String?
    public var locality: String?

    public init(commonName: String? = nil, organization: String? = nil, organizationalUnit: String? = nil,
                country: String? = nil, province: String? = nil, locality: String? = nil) {
        self.commonName = commonName
        self.organization = organization
        self.organizationalUnit = organizationalUnit
        self.country = country
        self.province = province
        self.locality = locality
    }

    /// Attributes in the order RFC 4519 examples and most CAs write them, most general first.
    var attributes: [(Int32, String)] {
        [(NID_countryName, country), (NID_stateOrProvinceName, province), (NID_localityName, locality),
         (NID_organizationName, organization), (NID_organizationalUnitName, organizationalUnit),
         (NID_commonName, commonName)].compactMap { nid, value in value.map { (nid, $0) } }
    }

    func build() throws -> X509NameObject {
        let name = try X509NameObject()
        for (nid, value) in attributes {
            // countryName is a PrintableString by OpenSSL's string table; the others become UTF8String.
            guard X509_NAME_add_entry_by_NID(name.raw, nid, MBSTRING_UTF8, value, -1, -1, 0) == 1 else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "name attribute \(String(cString: OBJ_nid2sn(nid))) = \(value) is not encodable")
            }
        }
        return name
    }
}

/// Owns an `X509_NAME`.
final class X509NameObject {
    let raw: OpaquePointer

    init() throws {
        guard let name = X509_NAME_new() else { throw CryptoError(.library, "X509_NAME_new failed") }
        raw = name
    }

    deinit { X509_NAME_free(raw) }
}

/// A subjectAltName entry.
public enum X509GeneralName: Sendable, Equatable {
    case dns(String)
    case ip(String)
    case uri(String)
    case email(String)

    var openSSLType: Int32 {
        switch self {
        case .dns: GEN_DNS
        case .ip: GEN_IPADD
        case .uri: GEN_URI
        case .email: GEN_EMAIL
        }
    }

    var value: String {
        switch self {
        case .dns(let v), .ip(let v), .uri(let v), .email(let v): v
        }
    }
}

/// keyUsage bits (RFC 5280 4.2.1.3), spelled as OpenSSL's configuration names.
public enum X509KeyUsage: String, Sendable, CaseIterable, Codable {
    case digitalSignature, contentCommitment, keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign

    /// The bit number in the KeyUsage BIT STRING.
    var bit: Int32 {
        switch self {
        case .digitalSignature: 0
        case .contentCommitment: 1
        case .keyEncipherment: 2
        case .dataEncipherment: 3
        case .keyAgreement: 4
        case .keyCertSign: 5
        case .cRLSign: 6
        }
    }

    /// OpenSSL's configuration name (it still calls contentCommitment nonRepudiation).
    var openSSLName: String { self == .contentCommitment ? "nonRepudiation" : rawValue }
}

/// extendedKeyUsage purposes, spelled as OpenSSL's short names.
public enum X509ExtendedKeyUsage: String, Sendable, CaseIterable, Codable {
    case serverAuth, clientAuth, codeSigning, emailProtection, timeStamping
}

/// Why a certificate was revoked (RFC 5280 5.3.1). `certificateHold` is left out: holds are not revocations.
public enum X509RevocationReason: String, Sendable, CaseIterable, Codable {
    case unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation,
        privilegeWithdrawn

    var code: Int {
        switch self {
        case .unspecified: 0
        case .keyCompromise: 1
        case .cACompromise: 2
        case .affiliationChanged: 3
        case .superseded: 4
        case .cessationOfOperation: 5
        case .privilegeWithdrawn: 9
        }
    }
}

/// An X.509 certificate.
public final class X509Certificate: @unchecked Sendable {  // never modified after construction
    let raw: OpaquePointer

    init(taking raw: OpaquePointer) { self.raw = raw }
    deinit { X509_free(raw) }

    /// Every certificate in `pem`, in order; at least one. Text between blocks is ignored; other block
    /// types are refused.
    public static func parseChain(pem: String) throws -> [X509Certificate] {
        var certificates: [X509Certificate] = []
        var block: [Substring]?
        for line in pem.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            if line.hasPrefix("-----BEGIN ") {
                guard block == nil, line == "-----BEGIN CERTIFICATE-----" else {
                    throw CryptoError(.invalidInput, "a PEM block is not a CERTIFICATE: \(line.prefix(64))")
                }
                block = [line]
            } else if line.hasPrefix("-----END ") {
                guard let lines = block, line == "-----END CERTIFICATE-----" else {
                    throw CryptoError(.invalidInput, "a PEM block ends without beginning: \(line.prefix(64))")
                }
                let text = (lines + [line]).joined(separator: "\n") + "\n"
                let der = try KeyCodec.pemBody(Array(text.utf8), label: "CERTIFICATE").unsafeArray()
                certificates.append(try X509Certificate(der: der))
                guard certificates.count <= 16 else { throw CryptoError(.invalidInput, "more than 16 certificates") }
                block = nil
            } else if block != nil {
                block?.append(line)
            }
        }
        guard block == nil else { throw CryptoError(.invalidInput, "an unterminated PEM block") }
        guard !certificates.isEmpty else { throw CryptoError(.invalidInput, "no CERTIFICATE block found") }
        return certificates
    }

    /// One certificate in PEM, with nothing else after it.
    public convenience init(pem: String) throws {
        let chain = try X509Certificate.parseChain(pem: pem)
        guard chain.count == 1 else { throw CryptoError(.invalidInput, "expected one certificate, found \(chain.count)") }
        self.init(taking: chain[0].copyRaw())
    }

    /// One DER certificate, with nothing after it, that re-encodes to the same bytes.
    public convenience init(der: [UInt8]) throws {
        let parsed: OpaquePointer = try der.withUnsafeBufferPointer { d in
            var cursor = d.baseAddress
            guard d.count > 0, let x509 = d2i_X509(nil, &cursor, d.count) else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "not a DER certificate")
            }
            guard cursor == d.baseAddress! + d.count else {
                X509_free(x509)
                throw CryptoError(.invalidInput, "bytes after the certificate")
            }
            return x509
        }
        self.init(taking: parsed)
        guard (try? self.der()) == der else { throw CryptoError(.invalidInput, "certificate is not in canonical DER") }
    }

    private func copyRaw() -> OpaquePointer {
        X509_up_ref(raw)
        return raw
    }

    public func der() throws -> [UInt8] {
        let length = i2d_X509(raw, nil)
        guard length > 0 else { throw CryptoError(.library, "i2d_X509 failed") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { b -> Int32 in
            var cursor = b.baseAddress
            return i2d_X509(raw, &cursor)
        }
        guard written == length else { throw CryptoError(.library, "i2d_X509 wrote \(written) of \(length) bytes") }
        return out
    }

    public func pem() throws -> String {
        let bytes = try withMemoryBIO { bio in PEM_write_bio_X509(bio, raw) }
        return String(decoding: bytes.unsafeArray(), as: UTF8.self)
    }

    /// The serial number's magnitude, big-endian, without leading zero octets.
    public var serial: [UInt8] {
        guard let bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(raw), nil) else { return [] }
        defer { BN_free(bn) }
        var out = [UInt8](repeating: 0, count: Int((BN_num_bits(bn) + 7) / 8))
        _ = BN_bn2bin(bn, &out)
        return out
    }

    /// notBefore and notAfter, in seconds since the epoch.
    public var notBefore: Int64 { epochSeconds(X509_get0_notBefore(raw)) }
    public var notAfter: Int64 { epochSeconds(X509_get0_notAfter(raw)) }

    /// The subject as an RFC 2253 string.
    public var subjectDescription: String { describe(X509_get_subject_name(raw)) }
    public var issuerDescription: String { describe(X509_get_issuer_name(raw)) }

    /// True if basicConstraints says CA and keyUsage (if present) allows keyCertSign.
    public var isCA: Bool {
        let flags = X509_get_extension_flags(raw)
        let usage = X509_get_key_usage(raw)
        return flags & UInt32(EXFLAG_CA) != 0 && usage & UInt32(KU_KEY_CERT_SIGN) != 0
    }

    /// basicConstraints pathLenConstraint, nil if absent.
    public var pathLength: Int? {
        let length = X509_get_pathlen(raw)
        return length < 0 ? nil : Int(length)
    }

    public func publicKey() throws -> X509PublicKey {
        guard let key = X509_get_pubkey(raw) else { throw CryptoError(.invalidInput, "certificate has no usable key") }
        return X509PublicKey(key: PKey(taking: key))
    }

    /// True if `key` is the private half of this certificate's subject key.
    public func matches(_ key: X509PrivateKey) -> Bool {
        defer { ERR_clear_error() }
        return X509_check_private_key(raw, key.key.raw) == 1
    }

    /// True if `issuer`'s subject is this certificate's issuer and its key verifies the signature.
    public func isIssued(by issuer: X509Certificate) -> Bool {
        defer { ERR_clear_error() }
        guard X509_NAME_cmp(X509_get_issuer_name(raw), X509_get_subject_name(issuer.raw)) == 0,
              let key = X509_get0_pubkey(issuer.raw)
        else { return false }
        return X509_verify(raw, key) == 1
    }
}

/// A PKCS#10 certification request.
public final class X509CertificationRequest: @unchecked Sendable {  // never modified after construction
    let raw: OpaquePointer

    private init(taking raw: OpaquePointer) { self.raw = raw }
    deinit { X509_REQ_free(raw) }

    /// One CSR in PEM (`CERTIFICATE REQUEST`), nothing else after it.
    public convenience init(pem: String) throws {
        let der = try KeyCodec.pemBody(Array(pem.utf8), label: "CERTIFICATE REQUEST").unsafeArray()
        let parsed: OpaquePointer = try der.withUnsafeBufferPointer { d in
            var cursor = d.baseAddress
            guard d.count > 0, let req = d2i_X509_REQ(nil, &cursor, d.count) else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "not a DER certification request")
            }
            guard cursor == d.baseAddress! + d.count else {
                X509_REQ_free(req)
                throw CryptoError(.invalidInput, "bytes after the certification request")
            }
            return req
        }
        self.init(taking: parsed)
    }

    /// Builds and signs a CSR for an issuer whose certificate an outside CA will sign.
    public static func create(subject: X509Name, key: X509PrivateKey) throws -> X509CertificationRequest {
        guard let req = X509_REQ_new() else { throw CryptoError(.library, "X509_REQ_new failed") }
        let request = X509CertificationRequest(taking: req)
        try check(X509_REQ_set_version(req, 0), "X509_REQ_set_version")
        let name = try subject.build()
        try withExtendedLifetime(name) { try check(X509_REQ_set_subject_name(req, name.raw), "X509_REQ_set_subject_name") }
        try check(X509_REQ_set_pubkey(req, key.key.raw), "X509_REQ_set_pubkey")
        guard X509_REQ_sign(req, key.key.raw, key.algorithm.signatureDigest) > 0 else {
            throw CryptoError(.library, "X509_REQ_sign failed")
        }
        return request
    }

    public func pem() throws -> String {
        let bytes = try withMemoryBIO { bio in PEM_write_bio_X509_REQ(bio, raw) }
        return String(decoding: bytes.unsafeArray(), as: UTF8.self)
    }

    /// The subject key. Throws if it cannot be decoded at all.
    public func publicKey() throws -> X509PublicKey {
        guard let key = X509_REQ_get_pubkey(raw) else {
            ERR_clear_error()
            throw CryptoError(.invalidInput, "the request's public key cannot be decoded")
        }
        return X509PublicKey(key: PKey(taking: key))
    }

    /// True if the request's signature verifies under its own public key (proof of possession).
    public func hasValidSignature() -> Bool {
        defer { ERR_clear_error() }
        guard let key = X509_REQ_get0_pubkey(raw) else { return false }
        return X509_REQ_verify(raw, key) == 1
    }

    /// The subject's commonName values, as UTF-8.
    public var commonNames: [String] {
        guard let name = X509_REQ_get_subject_name(raw) else { return [] }
        var out: [String] = []
        var index: Int32 = -1
        while true {
            index = X509_NAME_get_index_by_NID(name, NID_commonName, index)
            guard index >= 0, let entry = X509_NAME_get_entry(name, index) else { break }
            out.append(asn1String(X509_NAME_ENTRY_get_data(entry)))
        }
        return out
    }

    /// What the request's extensionRequest attribute asks for.
    public func requestedExtensions() throws -> X509RequestedExtensions {
        var result = X509RequestedExtensions()
        guard let extensions = X509_REQ_get_extensions(raw) else {
            ERR_clear_error()
            return result
        }
        defer { mc_x509_extensions_free(extensions) }

        if let decoded = X509V3_get_d2i(extensions, NID_basic_constraints, nil, nil) {
            let constraints = decoded.assumingMemoryBound(to: BASIC_CONSTRAINTS.self)
            result.requestsCA = constraints.pointee.ca != 0
            BASIC_CONSTRAINTS_free(constraints)
        }
        if let decoded = X509V3_get_d2i(extensions, NID_key_usage, nil, nil) {
            let bits = decoded.assumingMemoryBound(to: ASN1_BIT_STRING.self)
            result.keyUsages = X509KeyUsage.allCases.filter { ASN1_BIT_STRING_get_bit(bits, $0.bit) == 1 }
            ASN1_BIT_STRING_free(bits)
        }
        var critical: Int32 = 0
        if let decoded = X509V3_get_d2i(extensions, NID_subject_alt_name, &critical, nil) {
            let names = OpaquePointer(decoded)
            defer { GENERAL_NAMES_free(names) }
            for i in 0..<mc_general_names_count(names) {
                guard let name = mc_general_names_value(names, i) else { continue }
                result.subjectAlternativeNames.append(try decodeGeneralName(name))
            }
        } else if critical == -2 {
            throw CryptoError(.invalidInput, "the request has more than one subjectAltName extension")
        }
        ERR_clear_error()
        return result
    }
}

/// What a CSR asks for in its extensionRequest attribute. Only these are looked at; the CA decides the rest.
public struct X509RequestedExtensions: Sendable {
    public var requestsCA = false
    public var keyUsages: [X509KeyUsage] = []
    public var subjectAlternativeNames: [X509GeneralName] = []
}

/// A GENERAL_NAME as a value; types other than DNS, IP, URI and email are refused.
private func decodeGeneralName(_ name: UnsafeMutablePointer<GENERAL_NAME>) throws -> X509GeneralName {
    var type: Int32 = 0
    guard let value = GENERAL_NAME_get0_value(name, &type) else {
        throw CryptoError(.invalidInput, "an empty subjectAltName entry")
    }
    let string = value.assumingMemoryBound(to: ASN1_STRING.self)
    switch type {
    case GEN_DNS: return .dns(asn1String(string))
    case GEN_URI: return .uri(asn1String(string))
    case GEN_EMAIL: return .email(asn1String(string))
    case GEN_IPADD:
        let bytes = Array(UnsafeBufferPointer(start: ASN1_STRING_get0_data(string), count: Int(ASN1_STRING_length(string))))
        return .ip(ipText(bytes))
    default:
        throw CryptoError(.invalidInput, "subjectAltName entries of type \(type) are not supported")
    }
}

/// The bytes of an IA5String or similar as text; bytes that are not UTF-8 show as U+FFFD so that the
/// name checks refuse them.
private func asn1String(_ string: UnsafePointer<ASN1_STRING>?) -> String {
    guard let string, let data = ASN1_STRING_get0_data(string) else { return "" }
    return String(decoding: UnsafeBufferPointer(start: data, count: Int(ASN1_STRING_length(string))), as: UTF8.self)
}

private func asn1String(_ string: UnsafeMutablePointer<ASN1_STRING>?) -> String {
    asn1String(string.map { UnsafePointer($0) })
}

/// An IP address SAN's octets as text (inet_ntop); other lengths are shown as hex and will be refused.
private func ipText(_ bytes: [UInt8]) -> String {
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
    let family: Int32
    switch bytes.count {
    case 4: family = AF_INET
    case 16: family = AF_INET6
    default: return "ip-octets:" + bytes.map { String($0, radix: 16) }.joined()
    }
    guard inet_ntop(family, bytes, &buffer, socklen_t(buffer.count)) != nil else { return "invalid" }
    return string(fromCBuffer: buffer)
}

private func describe(_ name: OpaquePointer?) -> String {
    guard let name else { return "" }
    let bytes = try? withMemoryBIO { bio in
        X509_NAME_print_ex(bio, name, 0, mc_xn_flag_rfc2253()) >= 0 ? 1 : 0
    }
    return bytes.map { String(decoding: $0.unsafeArray(), as: UTF8.self) } ?? ""
}

/// An ASN1_TIME as seconds since the epoch (0 if it cannot be read).
func epochSeconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64 {
    var parts = tm()
    guard let time, ASN1_TIME_to_tm(time, &parts) == 1 else { return 0 }
    return Int64(timegm(&parts))
}
