/// A minimal JSON writer for the two hot paths that showed up in profiles: audit lines and the string
/// maps handed to engines. It writes strings with RFC 8259 escaping (quote, backslash and every control
/// character), so no input can change the document's structure; everything else goes through
/// `JSONEncoder`, and API errors always do (audit #68).
enum JSONWriter {
    private static let hex = Array("0123456789abcdef".utf8)

    /// Appends `text` as a JSON string literal.
    static func appendString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0a: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0d: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x00..<0x20, 0x7f:
                out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                        hex[Int(byte >> 4)], hex[Int(byte & 0xf)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// A JSON object of string values, keys in sorted order.
    static func stringMap(_ map: [String: String]) -> [UInt8] {
        if map.isEmpty { return Array("{}".utf8) }
        var out: [UInt8] = [UInt8(ascii: "{")]
        for (i, key) in map.keys.sorted().enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendString(map[key]!, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}

extension AuditEvent {
    /// The audit line, keys in sorted order, absent optional fields left out (as `JSONEncoder` would).
    func jsonLine() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        func key(_ name: String) {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSONWriter.appendString(name, to: &out)
            out.append(UInt8(ascii: ":"))
        }
        func string(_ name: String, _ value: String?) {
            guard let value else { return }
            key(name)
            JSONWriter.appendString(value, to: &out)
        }
        string("caller", caller)
        string("error", error)
        string("mount", mount)
        string("operation", operation)
        string("prev", prev)
        string("request_id", requestID)
        string("resource", resource)
        key("roles")
        out.append(UInt8(ascii: "["))
        for (i, role) in roles.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONWriter.appendString(role, to: &out)
        }
        out.append(UInt8(ascii: "]"))
        if let status {
            key("status")
            out += Array(String(status).utf8)
        }
        string("time", time)
        string("type", type)
        out.append(UInt8(ascii: "}"))
        return out
    }
}
