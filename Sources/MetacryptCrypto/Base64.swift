/// Standard base64 (RFC 4648 §4) with padding, decoded strictly: canonical input only.
///
/// Refused: characters outside the standard alphabet (so no URL-safe '-' or '_'), whitespace, missing
/// or extra padding, and non-zero bits in the last character's unused low bits (so every byte string has
/// exactly one accepted encoding).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let values: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = Int8(i) }
        return table
    }()

    public static func encode(_ bytes: some ByteView) -> String {
        bytes.withUnsafeBytes { input in
            var out: [UInt8] = []
            out.reserveCapacity((input.count + 2) / 3 * 4)
            var i = 0
            while i + 2 < input.count {
                let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)],
                        alphabet[Int(n & 63)]]
                i += 3
            }
            let pad = UInt8(ascii: "=")
            if input.count - i == 1 {
                let n = UInt32(input[i]) << 16
                out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], pad, pad]
            } else if input.count - i == 2 {
                let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
                out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], pad]
            }
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// The decoded bytes, or nil if `text` is not canonical standard base64.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        var i = 0
        while i < chars.count {
            let last = i + 4 == chars.count
            let c = chars[i..<(i + 4)]
            let padding = c.reversed().prefix { $0 == UInt8(ascii: "=") }.count
            guard padding == 0 || (last && padding <= 2) else { return nil }
            var n: UInt32 = 0
            for (k, ch) in c.enumerated() {
                if k >= 4 - padding {
                    n <<= 6
                    continue
                }
                let v = values[Int(ch)]
                guard v >= 0 else { return nil }
                n = n << 6 | UInt32(v)
            }
            switch padding {
            case 0: out += [UInt8(n >> 16), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
            case 1:
                guard n & 0xff == 0 else { return nil }
                out += [UInt8(n >> 16), UInt8(n >> 8 & 0xff)]
            default:
                guard n & 0xffff == 0 else { return nil }
                out += [UInt8(n >> 16)]
            }
            i += 4
        }
        return out
    }
}
