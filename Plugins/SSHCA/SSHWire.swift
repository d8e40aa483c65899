import EngineKit

// The SSH wire encoding (RFC 4251 section 5) as certificates, KRLs and SSHSIG use it: big-endian
// uint32/uint64, length-prefixed strings and two's-complement mpints. The reader is strict: every read
// checks for truncation, mpints must be minimal and non-negative, and `finish()` refuses trailing bytes.

/// Writes SSH wire-format values into a growing buffer.
struct SSHWriter {
    private(set) var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func uint32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func uint64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func string(_ value: [UInt8]) {
        uint32(UInt32(value.count))
        bytes += value
    }

    mutating func string(_ value: String) { string(Array(value.utf8)) }

    /// A non-negative integer from its unsigned big-endian bytes: leading zeroes dropped, and one zero byte
    /// added back when the top bit is set so that it does not read as negative.
    mutating func mpint(unsigned value: [UInt8]) {
        var digits = value.drop { $0 == 0 }
        if let first = digits.first, first & 0x80 != 0 { digits.insert(0, at: digits.startIndex) }
        string(Array(digits))
    }

    /// Raw bytes with no length prefix.
    mutating func raw(_ value: [UInt8]) { bytes += value }
}

/// Reads SSH wire-format values; any malformation is an ``EngineError/invalid(_:)`` naming `what`.
struct SSHReader {
    private let bytes: [UInt8]
    private var offset = 0
    let what: String

    init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    var isAtEnd: Bool { offset == bytes.count }
    var remaining: Int { bytes.count - offset }

    private mutating func take(_ count: Int, _ field: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw EngineError.invalid("\(what) is truncated: \(field) needs \(count) bytes, \(remaining) left")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func byte(_ field: String) throws -> UInt8 { try take(1, field).first ?? 0 }

    mutating func uint32(_ field: String) throws -> UInt32 {
        try take(4, field).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func uint64(_ field: String) throws -> UInt64 {
        try take(8, field).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func string(_ field: String) throws -> [UInt8] {
        let length = try uint32(field)
        return Array(try take(Int(length), field))
    }

    mutating func text(_ field: String) throws -> String {
        let value = try string(field)
        guard value.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
            throw EngineError.invalid("\(what): \(field) is not printable ASCII")
        }
        return String(decoding: value, as: UTF8.self)
    }

    /// A non-negative mpint in its minimal encoding; returns the unsigned big-endian magnitude.
    mutating func mpint(_ field: String) throws -> [UInt8] {
        let value = try string(field)
        guard let first = value.first else { return [] }
        guard first & 0x80 == 0 else { throw EngineError.invalid("\(what): \(field) is negative") }
        if first == 0 {
            guard value.count > 1, value[1] & 0x80 != 0 else {
                throw EngineError.invalid("\(what): \(field) has a needless leading zero byte")
            }
            return Array(value.dropFirst())
        }
        return value
    }

    /// Refuses trailing bytes.
    func finish() throws {
        guard isAtEnd else { throw EngineError.invalid("\(what) has \(remaining) trailing bytes") }
    }
}
