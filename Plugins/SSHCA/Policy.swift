import EngineKit
import Glibc

// Validation of the names and values users send: principals, host names, option values, profile names.
// Each check names the offending value in its message.

enum Validate {
    private static func isLowerAlnum(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39)
    }

    private static func isAlnum(_ b: UInt8) -> Bool {
        isLowerAlnum(b) || (b >= 0x41 && b <= 0x5a)
    }

    /// Shows at most 64 printable characters of a user's value in an error message.
    static func shown(_ text: String) -> String {
        let printable = text.unicodeScalars.prefix(64).map { $0.value >= 0x20 && $0.value < 0x7f ? Character($0) : "?" }
        return String(printable) + (text.unicodeScalars.count > 64 ? "…" : "")
    }

    /// Profile names (audit #48): ^[a-z0-9][a-z0-9_-]{0,63}$, before they go into storage keys.
    static func profileName(_ name: String) throws {
        let b = Array(name.utf8)
        guard (1...64).contains(b.count), isLowerAlnum(b[0]),
              b.allSatisfy({ isLowerAlnum($0) || $0 == 0x2d || $0 == 0x5f })
        else { throw EngineError.invalid("profile name \(shown(name)) must match ^[a-z0-9][a-z0-9_-]{0,63}$") }
    }

    /// A decimal serial, 1 to 2^64-1, as `ssh-keygen -L` prints it: no sign, no leading zero.
    static func serial(_ text: String) throws -> UInt64 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), text.first != "0",
              let value = UInt64(text)
        else { throw EngineError.invalid("serial \(shown(text)) is not a decimal number from 1 to 18446744073709551615") }
        return value
    }

    /// A principal: 1–255 bytes of letters, digits and . _ @ + -, not starting with '-'. No wildcards:
    /// sshd compares principals literally, and '*' or ',' would only confuse an authorized_principals file.
    static func principal(_ name: String) throws {
        let b = Array(name.utf8)
        guard !b.isEmpty else { throw EngineError.invalid("an empty principal is not allowed") }
        guard b.count <= 255, b[0] != 0x2d,
              b.allSatisfy({ isAlnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x40 || $0 == 0x2b || $0 == 0x2d })
        else { throw EngineError.invalid("principal \(shown(name)) must be 1-255 of A-Z a-z 0-9 . _ @ + - and not start with -") }
    }

    /// A host name for a host certificate: a DNS name (a leading "*." wildcard allowed), an IPv4 or an
    /// IPv6 address; 1–253 bytes.
    static func hostname(_ name: String) throws {
        let b = Array(name.utf8)
        // An IP address, as sshd compares it.
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, name, &v4) == 1 || inet_pton(AF_INET6, name, &v6) == 1 { return }
        guard (1...253).contains(b.count) else { throw EngineError.invalid("hostname \(shown(name)) is not 1-253 bytes") }
        if let star = b.firstIndex(of: 0x2a) {
            guard star == 0, b.count > 2, b[1] == 0x2e, !b.dropFirst().contains(0x2a) else {
                throw EngineError.invalid("hostname \(shown(name)): a wildcard may only be a leading \"*.\"")
            }
        }
        // A DNS name: labels of 1-63 letters, digits and inner hyphens (no underscores, no empty labels).
        let labels = name.split(separator: ".", omittingEmptySubsequences: false).drop { $0 == "*" }
        for label in labels {
            let l = Array(label.utf8)
            guard (1...63).contains(l.count), l.first != 0x2d, l.last != 0x2d, l.allSatisfy({ isAlnum($0) || $0 == 0x2d })
            else { throw EngineError.invalid("hostname \(shown(name)) is not a DNS name or an IP address") }
        }
    }

    /// A glob over principals for a profile: principal characters plus '*'.
    static func principalPattern(_ pattern: String) throws {
        let b = Array(pattern.utf8)
        guard (1...255).contains(b.count),
              b.allSatisfy({ isAlnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x40 || $0 == 0x2b || $0 == 0x2d || $0 == 0x2a })
        else { throw EngineError.invalid("principal pattern \(shown(pattern)) must be principal characters and *") }
    }

    /// '*' matches any run of characters; everything else matches itself.
    static func glob(_ pattern: String, matches text: String) -> Bool {
        let p = Array(pattern.utf8), t = Array(text.utf8)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] != 0x2a, p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if pi < p.count, p[pi] == 0x2a {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == 0x2a { pi += 1 }
        return pi == p.count
    }

    /// A source-address value: a comma-separated list of IPv4/IPv6 addresses, each with an optional
    /// prefix length (at most 32 or 128), as sshd's `source-address` option takes it. Returned normalised
    /// (no spaces).
    static func sourceAddress(_ value: String) throws -> String {
        let items = value.split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: " ")
        }
        guard !items.isEmpty, items.count <= 64 else {
            throw EngineError.invalid("source-address \(shown(value)) must list 1 to 64 addresses")
        }
        for item in items {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, let address = parts.first, !address.isEmpty else {
                throw EngineError.invalid("source-address entry \(shown(item)) is not an address[/prefix]")
            }
            var buffer = [UInt8](repeating: 0, count: 16)
            let isV4 = String(address).withCString { inet_pton(AF_INET, $0, &buffer) } == 1
            let isV6 = !isV4 && String(address).withCString { inet_pton(AF_INET6, $0, &buffer) } == 1
            guard isV4 || isV6 else {
                throw EngineError.invalid("source-address entry \(shown(item)) is not an IPv4 or IPv6 address")
            }
            if parts.count == 2 {
                let bits = parts[1]
                guard !bits.isEmpty, bits.count <= 3, bits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                      bits.count == 1 || bits.first != "0", let n = Int(bits), n <= (isV4 ? 32 : 128)
                else { throw EngineError.invalid("source-address entry \(shown(item)) has an invalid prefix length") }
            }
        }
        return items.joined(separator: ",")
    }

    /// A force-command: 1–4096 bytes of printable text (no control bytes, so no line breaks).
    static func forceCommand(_ value: String) throws {
        let b = Array(value.utf8)
        guard (1...4096).contains(b.count), b.allSatisfy({ $0 >= 0x20 && $0 != 0x7f }) else {
            throw EngineError.invalid("force-command must be 1-4096 bytes of printable text")
        }
    }

    /// A custom key id suffix: 1–64 of letters, digits and . _ @ + -.
    static func keyIDSuffix(_ value: String) throws {
        let b = Array(value.utf8)
        guard (1...64).contains(b.count),
              b.allSatisfy({ isAlnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x40 || $0 == 0x2b || $0 == 0x2d })
        else { throw EngineError.invalid("key_id \(shown(value)) must be 1-64 of A-Z a-z 0-9 . _ @ + -") }
    }

    /// An extension name: 1–64 of letters, digits and . _ @ -, e.g. "permit-pty" or "login@example.com".
    static func extensionName(_ value: String) throws {
        let b = Array(value.utf8)
        guard (1...64).contains(b.count), b.allSatisfy({ isAlnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x40 || $0 == 0x2d })
        else { throw EngineError.invalid("extension name \(shown(value)) must be 1-64 of A-Z a-z 0-9 . _ @ -") }
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        var s = self
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}

