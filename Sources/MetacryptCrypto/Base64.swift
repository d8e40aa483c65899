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
            let count = (input.count + 2) / 3 * 4
            return String(unsafeUninitializedCapacity: count) { out in
                var i = 0, o = 0
                while i + 2 < input.count {
                    let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                    out[o] = alphabet[Int(n >> 18)]
                    out[o + 1] = alphabet[Int(n >> 12 & 63)]
                    out[o + 2] = alphabet[Int(n >> 6 & 63)]
                    out[o + 3] = alphabet[Int(n & 63)]
                    i += 3
                    o += 4
                }
                let rest = input.count - i
                if rest > 0 {
                    let n = UInt32(input[i]) << 16 | (rest == 2 ? UInt32(input[i + 1]) << 8 : 0)
                    out[o] = alphabet[Int(n >> 18)]
                    out[o + 1] = alphabet[Int(n >> 12 & 63)]
                    out[o + 2] = rest == 2 ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "=")
                    out[o + 3] = UInt8(ascii: "=")
                    o += 4
                }
                return o
            }
        }
    }

    /// The decoded bytes, or nil if `text` is not canonical standard base64.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let string = String(text)
        return string.utf8.withContiguousStorageIfAvailable { decode(bytes: UnsafeRawBufferPointer($0)) }
            ?? Array(string.utf8).withUnsafeBytes { decode(bytes: $0) }
    }

    private static func decode(bytes chars: UnsafeRawBufferPointer) -> [UInt8]? {
        guard chars.count % 4 == 0 else { return nil }
        if chars.isEmpty { return [] }
        let pad = UInt8(ascii: "=")
        let padding = chars[chars.count - 1] == pad ? (chars[chars.count - 2] == pad ? 2 : 1) : 0
        let length = chars.count / 4 * 3 - padding
        var failed = false
        let out = [UInt8](unsafeUninitializedCapacity: length) { out, initialized in
            var i = 0, o = 0
            while i < chars.count {
                let last = i + 4 == chars.count
                let a = values[Int(chars[i])], b = values[Int(chars[i + 1])]
                let c = last && padding == 2 ? 0 : values[Int(chars[i + 2])]
                let d = last && padding >= 1 ? 0 : values[Int(chars[i + 3])]
                if a < 0 || b < 0 || c < 0 || d < 0 { failed = true; break }
                let n = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                out[o] = UInt8(n >> 16)
                if !(last && padding == 2) { out[o + 1] = UInt8(n >> 8 & 0xff) }
                if !(last && padding >= 1) { out[o + 2] = UInt8(n & 0xff) }
                // Canonical only: the bits the padding leaves unused must be zero.
                if last && padding == 1 && n & 0xff != 0 { failed = true }
                if last && padding == 2 && n & 0xffff != 0 { failed = true }
                i += 4
                o += 3
            }
            initialized = failed ? 0 : length
        }
        return failed ? nil : out
    }
}
