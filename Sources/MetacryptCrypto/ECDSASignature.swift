import COpenSSL

/// An ECDSA signature as its two integers, with conversions between the encodings protocols use:
/// DER `ECDSA-Sig-Value` (X.509, TLS, what OpenSSL produces), fixed-width r || s (JOSE, PKCS#11), and the
/// separate big-endian integers that SSH writes as two mpints.
public struct ECDSASignature: Sendable, Equatable {
    /// Longest integer we accept: a P-521 scalar (66 bytes). Anything longer cannot be a signature.
    public static let maximumComponentSize = 66

    /// r as an unsigned big-endian integer without leading zero bytes.
    public let r: [UInt8]
    /// s as an unsigned big-endian integer without leading zero bytes.
    public let s: [UInt8]

    /// A signature from unsigned big-endian integers; leading zero bytes are dropped.
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` if either integer is zero or longer than
    ///   ``maximumComponentSize`` bytes.
    public init(r: some ByteView, s: some ByteView) throws {
        self.r = try Self.minimal(r, "r")
        self.s = try Self.minimal(s, "s")
    }

    /// Parses a DER `SEQUENCE { r INTEGER, s INTEGER }`.
    ///
    /// Only strict DER is accepted: no trailing bytes, no long-form or indefinite lengths where short
    /// ones fit, no padded or negative integers. Anything else would make one signature have many
    /// encodings (signature malleability).
    public init(derRepresentation der: some ByteView) throws {
        let parsed: (r: [UInt8], s: [UInt8]) = try der.withUnsafeBytes { d in
            guard let base = d.bindMemory(to: UInt8.self).baseAddress, d.count > 0, d.count <= 2 * 66 + 9 else {
                throw CryptoError(.invalidInput, "ECDSA DER signature of \(d.count) bytes")
            }
            var cursor: UnsafePointer<UInt8>? = base
            guard let raw = d2i_ECDSA_SIG(nil, &cursor, d.count) else {
                ERR_clear_error()
                throw CryptoError(.invalidInput, "not a DER ECDSA signature")
            }
            let signature = ECDSASig(taking: raw)
            guard cursor == base + d.count else {
                throw CryptoError(
                    .invalidInput, "\(cursor!.distance(to: base + d.count)) bytes after the ECDSA signature")
            }
            // OpenSSL's decoder tolerates some BER; re-encoding and comparing enforces DER.
            guard try signature.der() == Array(d.bindMemory(to: UInt8.self)) else {
                throw CryptoError(.invalidInput, "ECDSA signature is not in canonical DER")
            }
            return try signature.components()
        }
        try self.init(r: parsed.r, s: parsed.s)
    }

    /// Splits a fixed-width r || s (each half one curve scalar, zero-padded).
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` for an odd or out-of-range length, or a zero half.
    public init(rawRepresentation raw: some ByteView) throws {
        let bytes = raw.withUnsafeBytes { Array($0) }
        guard bytes.count % 2 == 0, bytes.count >= 2, bytes.count <= 2 * Self.maximumComponentSize else {
            throw CryptoError(.invalidInput, "raw ECDSA signature of \(bytes.count) bytes")
        }
        let half = bytes.count / 2
        try self.init(r: bytes[..<half], s: bytes[half...])
    }

    /// The DER `ECDSA-Sig-Value`.
    public func derRepresentation() throws -> [UInt8] {
        try ECDSASig(r: r, s: s).der()
    }

    /// r || s, each left-padded with zeros to `componentSize` bytes (32 for P-256, 48 for P-384).
    ///
    /// - Throws: ``CryptoError/Code/invalidInput`` if r or s does not fit.
    public func rawRepresentation(componentSize: Int) throws -> [UInt8] {
        guard r.count <= componentSize, s.count <= componentSize else {
            throw CryptoError(
                .invalidInput, "ECDSA r (\(r.count) bytes) or s (\(s.count) bytes) exceeds \(componentSize) bytes")
        }
        return [UInt8](repeating: 0, count: componentSize - r.count) + r
            + [UInt8](repeating: 0, count: componentSize - s.count) + s
    }

    private static func minimal(_ value: some ByteView, _ name: String) throws -> [UInt8] {
        let trimmed = value.withUnsafeBytes { Array($0.drop { $0 == 0 }) }
        guard !trimmed.isEmpty else { throw CryptoError(.invalidInput, "ECDSA \(name) is zero") }
        guard trimmed.count <= maximumComponentSize else {
            throw CryptoError(
                .invalidInput, "ECDSA \(name) is \(trimmed.count) bytes, more than \(maximumComponentSize)")
        }
        return trimmed
    }
}

/// Owns an `ECDSA_SIG`.
final class ECDSASig {
    let raw: OpaquePointer

    init(taking raw: OpaquePointer) { self.raw = raw }

    init(r: [UInt8], s: [UInt8]) throws {
        guard let sig = ECDSA_SIG_new() else { throw CryptoError(.library, "ECDSA_SIG_new failed") }
        raw = sig
        guard let rn = BN_bin2bn(r, Int32(r.count), nil) else { throw CryptoError(.library, "BN_bin2bn failed") }
        guard let sn = BN_bin2bn(s, Int32(s.count), nil) else {
            BN_free(rn)
            throw CryptoError(.library, "BN_bin2bn failed")
        }
        // ECDSA_SIG_set0 takes ownership of both numbers.
        guard ECDSA_SIG_set0(raw, rn, sn) == 1 else {
            BN_free(rn)
            BN_free(sn)
            throw CryptoError(.library, "ECDSA_SIG_set0 failed")
        }
    }

    deinit { ECDSA_SIG_free(raw) }

    func der() throws -> [UInt8] {
        let length = i2d_ECDSA_SIG(raw, nil)
        guard length > 0 else { throw CryptoError(.library, "i2d_ECDSA_SIG failed") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_ECDSA_SIG(raw, &cursor)
        }
        guard written == length else {
            throw CryptoError(.library, "i2d_ECDSA_SIG wrote \(written) of \(length) bytes")
        }
        return out
    }

    /// r and s as unsigned big-endian bytes; negative values are refused.
    func components() throws -> (r: [UInt8], s: [UInt8]) {
        guard let r = ECDSA_SIG_get0_r(raw), let s = ECDSA_SIG_get0_s(raw) else {
            throw CryptoError(.invalidInput, "ECDSA signature without r or s")
        }
        guard BN_is_negative(r) == 0, BN_is_negative(s) == 0 else {
            throw CryptoError(.invalidInput, "ECDSA signature with a negative integer")
        }
        return (bytes(of: r), bytes(of: s))
    }

    private func bytes(of number: OpaquePointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: (Int(BN_num_bits(number)) + 7) / 8)
        _ = BN_bn2bin(number, &out)
        return out
    }
}
