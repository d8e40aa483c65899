import EngineKit
import Glibc
import MetacryptCrypto

// Name rules of the CA engine: object names (issuers, profiles), subject alternative names by type, serial
// numbers and times. Every check returns or throws a message that names the offending value.

enum ObjectName {
    /// Issuer and profile names, like mount names (audit #48): they become storage keys and URL segments.
    static func validate(_ name: String, kind: String) throws {
        let bytes = Array(name.utf8)
        let valid =
            (1...64).contains(bytes.count)
            && bytes.enumerated().allSatisfy { i, b in
                (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || (i > 0 && (b == 0x2d || b == 0x5f))
            }
        guard valid else {
            throw EngineError.invalid(
                "\(kind) name \(quoted(name)) is invalid: use 1-64 of a-z 0-9 _ -, starting with a letter or digit")
        }
    }
}

/// A value for a message: quoted, truncated, with control bytes escaped.
func quoted(_ value: String) -> String {
    let shown = value.unicodeScalars.prefix(80).map {
        $0.value < 0x20 || $0.value == 0x7f ? "\\u{\(String($0.value, radix: 16))}" : String($0)
    }
    return "\"" + shown.joined() + (value.unicodeScalars.count > 80 ? "…" : "") + "\""
}

enum DNSName {
    /// Why `name` is not a valid dNSName (RFC 5280 4.2.1.6 with RFC 1123 labels), or nil. A wildcard is
    /// allowed only as the whole leftmost label, over at least two more labels.
    static func problem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if name.utf8.count > 253 { return "is longer than 253 bytes" }
        if !name.utf8.allSatisfy({ $0 < 0x80 }) {
            return "is not ASCII (write internationalised names as xn-- A-labels)"
        }
        if IPAddress.normalised(name) != nil { return "is an IP address (put it in ip_sans)" }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for (index, label) in labels.enumerated() {
            if label.isEmpty { return "has an empty label" }
            if label == "*" {
                if index != 0 { return "has a wildcard that is not the leftmost label" }
                if labels.count < 3 { return "has a wildcard directly over a top-level domain" }
                continue
            }
            if label.contains("*") { return "has a partial wildcard label \(quoted(String(label)))" }
            if label.utf8.count > 63 { return "has a label longer than 63 bytes" }
            guard label.utf8.allSatisfy({ isLetterOrDigit($0) || $0 == UInt8(ascii: "-") }) else {
                return "has a character other than a-z, 0-9 and - in label \(quoted(String(label)))"
            }
            if label.hasPrefix("-") || label.hasSuffix("-") { return "has a label that starts or ends with a hyphen" }
        }
        return nil
    }

    /// Lowercases and checks; throws naming the field and value.
    static func normalised(_ name: String, field: String) throws -> String {
        let lower = String(name.lowercased())
        if let problem = problem(lower) {
            throw EngineError.invalid("\(field): \(quoted(name)) is not a valid DNS name: it \(problem)")
        }
        return lower
    }

    private static func isLetterOrDigit(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
}

enum IPAddress {
    /// The canonical text of an IPv4 or IPv6 address, or nil.
    static func normalised(_ text: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: 16)
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        for family in [AF_INET, AF_INET6] where inet_pton(family, text, &buffer) == 1 {
            guard inet_ntop(family, buffer, &out, socklen_t(out.count)) != nil else { return nil }
            return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return nil
    }
}

enum URIName {
    /// Why `uri` is not an acceptable uniformResourceIdentifier, or nil: an absolute URI of printable ASCII.
    static func problem(_ uri: String) -> String? {
        if uri.utf8.count > 1024 { return "is longer than 1024 bytes" }
        guard uri.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            return "has a space, a control byte or a non-ASCII byte"
        }
        guard let colon = uri.firstIndex(of: ":"), colon != uri.startIndex,
            uri[..<colon].utf8.enumerated().allSatisfy({ i, b in
                (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a)
                    || (i > 0 && ((b >= 0x30 && b <= 0x39) || b == 0x2b || b == 0x2d || b == 0x2e))
            }),
            uri.index(after: colon) != uri.endIndex
        else { return "is not an absolute URI with a scheme" }
        return nil
    }
}

enum EmailName {
    /// Splits and checks an rfc822Name: an ASCII local part and a valid DNS domain, lowercased.
    static func normalised(_ email: String, field: String) throws -> (address: String, domain: String) {
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 64,
            parts[0].utf8.allSatisfy({
                $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\")
                    && $0 != UInt8(ascii: ",")
            })
        else { throw EngineError.invalid("\(field): \(quoted(email)) is not a valid email address") }
        let domain = try DNSName.normalised(String(parts[1]), field: "\(field) (domain of \(email))")
        guard !domain.hasPrefix("*") else {
            throw EngineError.invalid("\(field): \(quoted(email)) has a wildcard domain")
        }
        return ("\(parts[0])@\(domain)", domain)
    }
}

/// `*` in a glob matches any run of characters except `/` (URIs) or `.` (domain patterns do not use this).
func globMatches(_ pattern: String, _ value: String) -> Bool {
    let p = Array(pattern.utf8)
    let v = Array(value.utf8)
    func match(_ i: Int, _ j: Int) -> Bool {
        if i == p.count { return j == v.count }
        if p[i] == UInt8(ascii: "*") {
            var k = j
            while true {
                if match(i + 1, k) { return true }
                guard k < v.count, v[k] != UInt8(ascii: "/") else { return false }
                k += 1
            }
        }
        return j < v.count && p[i] == v[j] && match(i + 1, j + 1)
    }
    return match(0, 0)
}

enum Serial {
    /// 16 random octets with the top bit cleared: positive, 127 bits of entropy (CA/B BR asks for 64 or
    /// more), at most 16 octets in DER, well under RFC 5280's limit of 20.
    static func random() -> [UInt8] {
        while true {
            var bytes = randomBytes(16)
            bytes[0] &= 0x7f
            while let first = bytes.first, first == 0 { bytes.removeFirst() }
            if !bytes.isEmpty { return bytes }
        }
    }

    /// The one canonical text: lowercase hex octets separated by colons, no leading zero octet.
    static func text(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    /// The storage-key form: the same hex without colons.
    static func key(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    /// Parses a serial given as colon-separated octets (canonical) or bare hex, in either case; leading zero
    /// octets are dropped. Anything else (decimal, dashes, spaces) is refused.
    static func parse(_ text: String) throws -> [UInt8] {
        let hex: String
        if text.contains(":") {
            let groups = text.split(separator: ":", omittingEmptySubsequences: false)
            guard groups.allSatisfy({ $0.utf8.count == 2 }) else {
                throw EngineError.invalid("serial \(quoted(text)) is not colon-separated hex octets (like 3f:a2:07)")
            }
            hex = groups.joined()
        } else {
            hex = text
        }
        guard !hex.isEmpty, hex.utf8.count <= 42, hex.utf8.count % 2 == 0,
            hex.utf8.allSatisfy({
                ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46)
            })
        else { throw EngineError.invalid("serial \(quoted(text)) is not hex octets (like 3f:a2:07)") }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        while let first = bytes.first, first == 0 { bytes.removeFirst() }
        guard !bytes.isEmpty, bytes.count <= 20 else {
            throw EngineError.invalid("serial \(quoted(text)) is zero or longer than 20 octets")
        }
        return bytes
    }
}

enum Clock {
    static func now() -> Int64 { Int64(time(nil)) }

    /// RFC 3339 in UTC, e.g. 2030-01-02T03:04:05Z.
    static func text(_ seconds: Int64) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return
            "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}
