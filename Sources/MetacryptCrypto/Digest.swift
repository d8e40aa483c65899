import COpenSSL

/// SHA-256 and HMAC.
public enum SHA256 {
    public static let size = 32

    public static func hash(_ data: some ByteView) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var length: UInt32 = 0
        let ok = data.withUnsafeBytes { d in
            EVP_Digest(d.baseAddress, d.count, &out, &length, EVP_sha256(), nil)
        }
        precondition(ok == 1 && length == UInt32(size), "EVP_Digest(SHA-256) failed")
        return out
    }
}

/// Lowercase hexadecimal.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ data: some ByteView) -> String {
        data.withUnsafeBytes { bytes in
            var chars = [UInt8]()
            chars.reserveCapacity(bytes.count * 2)
            for b in bytes {
                chars.append(digits[Int(b >> 4)])
                chars.append(digits[Int(b & 0xf)])
            }
            return String(decoding: chars, as: UTF8.self)
        }
    }

    /// Decodes lowercase or uppercase hex; nil on odd length or a non-hex character.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
