import COpenSSL

// The OpenSSL side of signing and key agreement keys: ownership of `EVP_PKEY` and friends, and the
// conversions between an `EVP_PKEY` and raw bytes, PKCS#8 and SubjectPublicKeyInfo.

// XXX: a private key lives in OpenSSL's memory, outside SecureBytes. OpenSSL clears it when the key is
// freed, but we cannot wipe it sooner, it is not locked against swapping, and intermediate values of
// OpenSSL's arithmetic, decoders and encoders are not ours to wipe.

/// Owns an `EVP_PKEY`.
///
/// `@unchecked Sendable`: nothing modifies the key after construction, and OpenSSL 3 allows concurrent
/// operations on one `EVP_PKEY` (each operation makes its own `EVP_PKEY_CTX` or `EVP_MD_CTX`).
final class PKey: @unchecked Sendable {
    let raw: OpaquePointer

    /// Takes ownership of `raw`.
    init(taking raw: OpaquePointer) { self.raw = raw }
    deinit { EVP_PKEY_free(raw) }

    func isA(_ name: String) -> Bool { EVP_PKEY_is_a(raw, name) == 1 }
}

/// Owns an `EVP_PKEY_CTX`.
final class PKeyContext {
    let raw: OpaquePointer

    init(key: PKey) throws {
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, key.raw, nil) else {
            throw CryptoError(.library, "EVP_PKEY_CTX_new_from_pkey failed")
        }
        raw = ctx
    }

    init(algorithm: String) throws {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, algorithm, nil) else {
            throw CryptoError(.library, "EVP_PKEY_CTX_new_from_name(\(algorithm)) failed")
        }
        raw = ctx
    }

    deinit { EVP_PKEY_CTX_free(raw) }
}

/// Owns an `EVP_MD_CTX`.
final class DigestContext {
    let raw: OpaquePointer

    init() throws {
        guard let ctx = EVP_MD_CTX_new() else { throw CryptoError(.library, "EVP_MD_CTX_new failed") }
        raw = ctx
    }

    deinit { EVP_MD_CTX_free(raw) }
}

/// Owns a `BIGNUM`, cleared when freed because it may hold a private scalar.
final class BigNumber {
    let raw: OpaquePointer

    init(secure: Bool) throws {
        guard let bn = secure ? BN_secure_new() : BN_new() else { throw CryptoError(.library, "BN_new failed") }
        raw = bn
    }

    deinit { BN_clear_free(raw) }
}

/// Owns an `EC_GROUP`.
final class ECGroup {
    let raw: OpaquePointer

    init(_ curve: ECCurve) throws {
        guard let group = EC_GROUP_new_by_curve_name(curve.nid) else {
            throw CryptoError(.library, "EC_GROUP_new_by_curve_name(\(curve.name)) failed")
        }
        raw = group
    }

    deinit { EC_GROUP_free(raw) }
}

/// Owns an `EC_POINT`.
final class ECPoint {
    let raw: OpaquePointer

    init(group: ECGroup) throws {
        guard let point = EC_POINT_new(group.raw) else { throw CryptoError(.library, "EC_POINT_new failed") }
        raw = point
    }

    deinit { EC_POINT_free(raw) }
}

/// Owns a `PKCS8_PRIV_KEY_INFO`; freeing it clears the key octets it holds.
final class PKCS8Info {
    let raw: OpaquePointer

    init(taking raw: OpaquePointer) { self.raw = raw }
    deinit { PKCS8_PRIV_KEY_INFO_free(raw) }
}

/// Owns a `BIO`.
final class MemoryBIO {
    let raw: OpaquePointer

    /// A read-only BIO over `bytes`, which must outlive it (OpenSSL does not copy them).
    init(readingFrom bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count <= Int(Int32.max), let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(bytes.count)) else {
            throw CryptoError(.library, "BIO_new_mem_buf failed")
        }
        raw = bio
    }

    deinit { BIO_free(raw) }
}

/// The NIST prime curves we support: P-256 and P-384 (what TLS, X.509 and OpenSSH all accept).
enum ECCurve: Sendable {
    case p256
    case p384

    var name: String { self == .p256 ? "P-256" : "P-384" }
    var nid: Int32 { self == .p256 ? NID_X9_62_prime256v1 : NID_secp384r1 }
    /// Bytes in a scalar or a coordinate.
    var scalarSize: Int { self == .p256 ? 32 : 48 }
    /// Bytes in an uncompressed point, 0x04 || X || Y.
    var pointSize: Int { 1 + 2 * scalarSize }

    /// The curve of an EC key, if it is one we support and it names its curve.
    static func of(_ key: PKey) -> ECCurve? {
        guard key.isA("EC") else { return nil }
        // RFC 5480 forbids explicit curve parameters; accepting them invites curve-substitution tricks.
        var encoding = [CChar](repeating: 0, count: 32)
        guard EVP_PKEY_get_utf8_string_param(key.raw, "encoding", &encoding, encoding.count, nil) == 1,
            string(fromCBuffer: encoding) == "named_curve"
        else {
            ERR_clear_error()
            return nil
        }
        var name = [CChar](repeating: 0, count: 64)
        guard EVP_PKEY_get_group_name(key.raw, &name, name.count, nil) == 1 else {
            ERR_clear_error()
            return nil
        }
        let group = string(fromCBuffer: name)
        var nid = OBJ_sn2nid(group)
        if nid == NID_undef { nid = EC_curve_nist2nid(group) }
        switch nid {
        case NID_X9_62_prime256v1: return .p256
        case NID_secp384r1: return .p384
        default: return nil
        }
    }
}

/// Conversions between `EVP_PKEY` and bytes.
enum KeyCodec {
    // MARK: Generation

    static func generate(named type: String) throws -> PKey {
        guard let key = mc_evp_pkey_generate_named(type) else {
            throw CryptoError(.library, "\(type) key generation failed")
        }
        return PKey(taking: key)
    }

    static func generate(_ curve: ECCurve) throws -> PKey {
        guard let key = mc_evp_pkey_generate_ec(curve.name) else {
            throw CryptoError(.library, "EC \(curve.name) key generation failed")
        }
        return PKey(taking: key)
    }

    // MARK: Raw keys of the Edwards and Montgomery curves

    /// `type` is `EVP_PKEY_ED25519` or `EVP_PKEY_X25519`.
    static func rawPrivateKey(_ bytes: SecureBytes, type: Int32, name: String) throws -> PKey {
        guard bytes.count == 32 else {
            throw CryptoError(.invalidInput, "\(name) private key is \(bytes.count) bytes, need 32")
        }
        // XXX: OpenSSL copies the key into the EVP_PKEY, where we cannot wipe it until the key is freed.
        let key = bytes.withUnsafeBytes { b in
            EVP_PKEY_new_raw_private_key(type, nil, b.bindMemory(to: UInt8.self).baseAddress, b.count)
        }
        guard let key else { throw CryptoError(.library, "\(name) private key import failed") }
        return PKey(taking: key)
    }

    static func rawPublicKey(_ bytes: some ByteView, type: Int32, name: String) throws -> PKey {
        let count = bytes.withUnsafeBytes { $0.count }
        guard count == 32 else { throw CryptoError(.invalidInput, "\(name) public key is \(count) bytes, need 32") }
        let key = bytes.withUnsafeBytes { b in
            EVP_PKEY_new_raw_public_key(type, nil, b.bindMemory(to: UInt8.self).baseAddress, b.count)
        }
        guard let key else { throw CryptoError(.library, "\(name) public key import failed") }
        return PKey(taking: key)
    }

    static func rawPrivateBytes(_ key: PKey) throws -> SecureBytes {
        var out = SecureBytes(zeroes: 32)
        var length = 32
        let rc = out.withUnsafeMutableBytes { o in
            EVP_PKEY_get_raw_private_key(key.raw, o.bindMemory(to: UInt8.self).baseAddress, &length)
        }
        try check(rc, "EVP_PKEY_get_raw_private_key")
        guard length == 32 else { throw CryptoError(.library, "raw private key is \(length) bytes") }
        return out
    }

    static func rawPublicBytes(_ key: PKey) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length = 32
        try check(EVP_PKEY_get_raw_public_key(key.raw, &out, &length), "EVP_PKEY_get_raw_public_key")
        guard length == 32 else { throw CryptoError(.library, "raw public key is \(length) bytes") }
        return out
    }

    // MARK: Raw EC keys

    /// An EC key pair from a big-endian private scalar, which must lie in 1 ..< order.
    static func ecPrivateKey(scalar: SecureBytes, curve: ECCurve) throws -> PKey {
        guard scalar.count == curve.scalarSize else {
            throw CryptoError(
                .invalidInput, "\(curve.name) private key is \(scalar.count) bytes, need \(curve.scalarSize)")
        }
        let group = try ECGroup(curve)
        let d = try BigNumber(secure: true)
        let converted = scalar.withUnsafeBytes { s in
            BN_bin2bn(s.bindMemory(to: UInt8.self).baseAddress, Int32(s.count), d.raw)
        }
        guard converted != nil else { throw CryptoError(.library, "BN_bin2bn failed") }
        guard BN_is_zero(d.raw) == 0, BN_cmp(d.raw, EC_GROUP_get0_order(group.raw)) < 0 else {
            throw CryptoError(.invalidInput, "\(curve.name) private scalar is not in 1 ..< order")
        }

        // OpenSSL 3.0 does not derive the public point on import, so compute Q = d·G here.
        let q = try ECPoint(group: group)
        try check(EC_POINT_mul(group.raw, q.raw, d.raw, nil, nil, nil), "EC_POINT_mul")
        var point = [UInt8](repeating: 0, count: curve.pointSize)
        guard
            EC_POINT_point2oct(group.raw, q.raw, POINT_CONVERSION_UNCOMPRESSED, &point, point.count, nil)
                == curve.pointSize
        else { throw CryptoError(.library, "EC_POINT_point2oct failed") }

        // OSSL_PARAM carries integers in native byte order.
        // XXX: OpenSSL copies the scalar into the key's own BIGNUM, which we cannot wipe until the key is freed.
        var native = scalar
        native.withUnsafeMutableBytes { reverseIfLittleEndian($0) }
        return try withCStrings(["group", curve.name, "priv", "pub"]) { names in
            try native.withUnsafeMutableBytes { n in
                try point.withUnsafeMutableBytes { p in
                    var params = [
                        OSSL_PARAM_construct_utf8_string(names[0], names[1], 0),
                        OSSL_PARAM_construct_BN(names[2], n.bindMemory(to: UInt8.self).baseAddress, n.count),
                        OSSL_PARAM_construct_octet_string(names[3], p.baseAddress, p.count),
                        OSSL_PARAM_construct_end(),
                    ]
                    return try fromData(algorithm: "EC", selection: keyPairSelection, params: &params)
                }
            }
        }
    }

    /// An EC public key from an uncompressed point, checked to lie on the curve and not be the identity.
    static func ecPublicKey(point: some ByteView, curve: ECCurve) throws -> PKey {
        var bytes = point.withUnsafeBytes { Array($0) }
        // Only 0x04 || X || Y: the one-byte identity encoding and compressed points are refused.
        guard bytes.count == curve.pointSize, bytes[0] == 0x04 else {
            throw CryptoError(
                .invalidInput,
                "\(curve.name) public key must be a \(curve.pointSize)-byte uncompressed point, "
                    + "got \(bytes.count) bytes"
            )
        }
        let key = try withCStrings(["group", curve.name, "pub"]) { names in
            try bytes.withUnsafeMutableBytes { b in
                var params = [
                    OSSL_PARAM_construct_utf8_string(names[0], names[1], 0),
                    OSSL_PARAM_construct_octet_string(names[2], b.baseAddress, b.count),
                    OSSL_PARAM_construct_end(),
                ]
                return try fromData(algorithm: "EC", selection: publicKeySelection, params: &params)
            }
        }
        try checkPublicKey(key, what: "\(curve.name) public key")
        return key
    }

    static func ecScalar(_ key: PKey, curve: ECCurve) throws -> SecureBytes {
        var out = SecureBytes(zeroes: curve.scalarSize)
        // OpenSSL writes the scalar straight into the wiped buffer, zero-padded to the curve size.
        let rc = withCStrings(["priv"]) { names in
            out.withUnsafeMutableBytes { o in
                var params = [
                    OSSL_PARAM_construct_BN(names[0], o.bindMemory(to: UInt8.self).baseAddress, o.count),
                    OSSL_PARAM_construct_end(),
                ]
                return EVP_PKEY_get_params(key.raw, &params)
            }
        }
        try check(rc, "EVP_PKEY_get_params(priv)")
        out.withUnsafeMutableBytes { reverseIfLittleEndian($0) }
        return out
    }

    /// The public point of an EC key, uncompressed whatever form it was imported in.
    static func ecPoint(_ key: PKey, curve: ECCurve) throws -> [UInt8] {
        var encoded = [UInt8](repeating: 0, count: curve.pointSize)
        var length = 0
        try check(EVP_PKEY_get_octet_string_param(key.raw, "pub", &encoded, encoded.count, &length), "get EC point")
        if length == curve.pointSize && encoded[0] == 0x04 { return encoded }

        let group = try ECGroup(curve)
        let point = try ECPoint(group: group)
        try check(EC_POINT_oct2point(group.raw, point.raw, encoded, length, nil), "EC_POINT_oct2point")
        var out = [UInt8](repeating: 0, count: curve.pointSize)
        guard
            EC_POINT_point2oct(group.raw, point.raw, POINT_CONVERSION_UNCOMPRESSED, &out, out.count, nil)
                == curve.pointSize
        else { throw CryptoError(.library, "EC_POINT_point2oct failed") }
        return out
    }

    // MARK: PKCS#8 and SubjectPublicKeyInfo

    /// A private key from an unencrypted PKCS#8 `PrivateKeyInfo`, with nothing after it.
    static func privateKey(pkcs8DER der: some ByteView) throws -> PKey {
        try der.withUnsafeBytes { d in
            guard let base = d.bindMemory(to: UInt8.self).baseAddress, d.count > 0 else {
                throw CryptoError(.invalidInput, "empty PKCS#8 private key")
            }
            var cursor: UnsafePointer<UInt8>? = base
            guard let decoded = d2i_PKCS8_PRIV_KEY_INFO(nil, &cursor, d.count) else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "not a PKCS#8 PrivateKeyInfo")
            }
            let info = PKCS8Info(taking: decoded)
            guard cursor == base + d.count else {
                throw CryptoError(
                    .invalidInput, "\(cursor!.distance(to: base + d.count)) bytes after the PKCS#8 private key")
            }
            // XXX: the key OpenSSL decodes is a copy we cannot wipe until the EVP_PKEY is freed.
            guard let key = EVP_PKCS82PKEY(info.raw) else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "PKCS#8 private key could not be decoded")
            }
            let pkey = PKey(taking: key)
            // A key whose public half does not match its private half (or an invalid scalar) is refused.
            let ctx = try PKeyContext(key: pkey)
            guard EVP_PKEY_check(ctx.raw) == 1 else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "PKCS#8 private key fails its consistency check")
            }
            return pkey
        }
    }

    static func privateKey(pkcs8PEM pem: some ByteView) throws -> PKey {
        try privateKey(pkcs8DER: pemBody(pem, label: "PRIVATE KEY"))
    }

    /// A public key from a DER `SubjectPublicKeyInfo`, which must be exactly what we would encode.
    static func publicKey(spkiDER der: some ByteView) throws -> PKey {
        let key: PKey = try der.withUnsafeBytes { d in
            guard let base = d.bindMemory(to: UInt8.self).baseAddress, d.count > 0 else {
                throw CryptoError(.invalidInput, "empty SubjectPublicKeyInfo")
            }
            var cursor: UnsafePointer<UInt8>? = base
            guard let key = d2i_PUBKEY(nil, &cursor, d.count) else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "not a SubjectPublicKeyInfo")
            }
            let pkey = PKey(taking: key)
            guard cursor == base + d.count else {
                throw CryptoError(
                    .invalidInput, "\(cursor!.distance(to: base + d.count)) bytes after the SubjectPublicKeyInfo")
            }
            return pkey
        }
        // Re-encoding must reproduce the input, so BER and other non-canonical forms are refused.
        guard constantTimeEquals(try spkiDER(key), der) else {
            throw CryptoError(.invalidInput, "SubjectPublicKeyInfo is not in canonical DER")
        }
        try checkPublicKey(key, what: "public key")
        return key
    }

    static func publicKey(spkiPEM pem: some ByteView) throws -> PKey {
        try publicKey(spkiDER: pemBody(pem, label: "PUBLIC KEY"))
    }

    /// Unencrypted PKCS#8 DER.
    static func pkcs8DER(_ key: PKey) throws -> SecureBytes {
        try withMemoryBIO { bio in i2d_PKCS8PrivateKey_bio(bio, key.raw, nil, nil, 0, nil, nil) }
    }

    /// Unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    static func pkcs8PEM(_ key: PKey) throws -> SecureBytes {
        try withMemoryBIO { bio in PEM_write_bio_PrivateKey(bio, key.raw, nil, nil, 0, nil, nil) }
    }

    static func spkiDER(_ key: PKey) throws -> [UInt8] {
        let length = i2d_PUBKEY(key.raw, nil)
        guard length > 0 else { throw CryptoError(.library, "i2d_PUBKEY failed") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_PUBKEY(key.raw, &cursor)
        }
        guard written == length else { throw CryptoError(.library, "i2d_PUBKEY wrote \(written) of \(length) bytes") }
        return out
    }

    static func spkiPEM(_ key: PKey) throws -> String {
        let bytes = try withMemoryBIO { bio in PEM_write_bio_PUBKEY(bio, key.raw) }
        return String(decoding: bytes.unsafeArray(), as: UTF8.self)
    }

    /// The DER inside the one PEM block of `pem`, which must carry `label` and no headers.
    ///
    /// Text before the block is allowed (RFC 7468's explanatory text); anything but whitespace after it
    /// is refused, so a second key cannot hide behind the first.
    static func pemBody(_ pem: some ByteView, label: String) throws -> SecureBytes {
        try pem.withUnsafeBytes { text in
            guard text.count > 0 else { throw CryptoError(.invalidInput, "empty PEM") }
            let bio = try MemoryBIO(readingFrom: text)
            var name: UnsafeMutablePointer<CChar>?
            var header: UnsafeMutablePointer<CChar>?
            var data: UnsafeMutablePointer<UInt8>?
            var length = 0
            // PEM_FLAG_SECURE: OpenSSL decodes into memory that we clear when freeing it below.
            let rc = PEM_read_bio_ex(
                bio.raw, &name, &header, &data, &length, UInt32(PEM_FLAG_SECURE | PEM_FLAG_ONLY_B64))
            defer {
                mc_openssl_free(name)
                mc_openssl_free(header)
                mc_openssl_secure_clear_free(data, length)
            }
            guard rc == 1, let foundName = name, let body = data else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "no PEM block found")
            }
            let found = String(cString: foundName)
            guard found == label else {
                throw CryptoError(.invalidInput, "PEM block is \"\(found)\", expected \"\(label)\"")
            }
            guard header.map({ $0.pointee == 0 }) ?? true else {
                throw CryptoError(.invalidInput, "PEM block has headers (an encrypted key?)")
            }
            var rest: UnsafeMutablePointer<CChar>?
            let restLength = mc_bio_get_mem_data(bio.raw, &rest)
            if restLength > 0, let rest {
                let trailing = UnsafeRawBufferPointer(start: rest, count: restLength)
                guard trailing.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0a || $0 == 0x0d }) else {
                    throw CryptoError(.invalidInput, "\(restLength) bytes of data after the PEM block")
                }
            }
            var out = SecureBytes(zeroes: length)
            out.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: body, count: length)) }
            return out
        }
    }

    // MARK: Helpers

    /// Refuses public keys OpenSSL considers invalid (for EC: off the curve, the identity, wrong order).
    static func checkPublicKey(_ key: PKey, what: String) throws {
        let ctx = try PKeyContext(key: key)
        guard EVP_PKEY_public_check(ctx.raw) == 1 else {
            ERR_clear_error()
            throw CryptoError(.invalidInput, "\(what) is not a valid point")
        }
    }

    static func fromData(
        algorithm: String, selection: Int32, params: UnsafeMutablePointer<OSSL_PARAM>
    ) throws -> PKey {
        let ctx = try PKeyContext(algorithm: algorithm)
        try check(EVP_PKEY_fromdata_init(ctx.raw), "EVP_PKEY_fromdata_init")
        var key: OpaquePointer?
        guard EVP_PKEY_fromdata(ctx.raw, &key, selection, params) == 1, let key else {
            ERR_clear_error()
            throw CryptoError(.invalidInput, "\(algorithm) key data rejected")
        }
        return PKey(taking: key)
    }

    static let keyPairSelection = mc_evp_pkey_keypair_selection()
    static let publicKeySelection = mc_evp_pkey_public_key_selection()
}

/// Converts between big-endian and the host's byte order (OSSL_PARAM integers are native-endian).
func reverseIfLittleEndian(_ buffer: UnsafeMutableRawBufferPointer) {
    guard 1.littleEndian == 1, buffer.count > 1 else { return }
    var i = 0
    var j = buffer.count - 1
    while i < j {
        buffer.swapAt(i, j)
        i += 1
        j -= 1
    }
}

/// The text of a NUL-terminated C string filled into `chars`.
func string(fromCBuffer chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
