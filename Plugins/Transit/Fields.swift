import EngineKit
import FoundationEssentials
import MetacryptJSON
import MetacryptCrypto

/// Request bodies are checked field by field (MetacryptJSON's JSONValue): unknown fields are refused (a
/// misspelt `context` must not silently encrypt without one) and every message names the field,
/// including its place in a batch.
extension JSONValue {
    var typeName: String {
        switch self {
        case .string: "a string"
        case .integer, .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// The fields of one JSON object of a request (the body, or one item of `batch_input`).
struct Fields {
    let values: [String: JSONValue]
    /// Prefix for messages: "" for the body, "batch_input[3]." for an item.
    let place: String

    /// Parses a request body, which must be a JSON object (an empty body is `{}`).
    static func body(_ bytes: [UInt8], allowed: Set<String>) throws -> Fields {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(bytes.isEmpty ? Array("{}".utf8) : bytes))
        } catch {
            throw EngineError.invalid("the body is not valid JSON")
        }
        return try Fields(value, place: "", allowed: allowed)
    }

    init(_ value: JSONValue, place: String, allowed: Set<String>) throws {
        guard case .object(let object) = value else {
            throw EngineError.invalid("\(place.isEmpty ? "the body" : String(place.dropLast())) must be a JSON object")
        }
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw EngineError.invalid(
                "unknown field \(place)\(unknown); expected one of \(allowed.sorted().joined(separator: ", "))")
        }
        values = object
        self.place = place
    }

    func has(_ key: String) -> Bool { values[key] != nil }

    func string(_ key: String) throws -> String? {
        switch values[key] {
        case nil: return nil
        case .string(let s)?: return s
        case let other?: throw EngineError.invalid("\(place)\(key) must be a string, not \(other.typeName)")
        }
    }

    func requiredString(_ key: String) throws -> String {
        guard let value = try string(key) else { throw EngineError.invalid("missing field \(place)\(key)") }
        return value
    }

    /// Bytes given as canonical standard base64.
    ///
    /// - Warning: the result may be a plaintext; the caller wipes it when done. XXX: the JSON text of the
    ///   request body and the decoder's String copies of it cannot be wiped.
    func base64(_ key: String, maximum: Int? = nil) throws -> [UInt8]? {
        guard let text = try string(key) else { return nil }
        guard var bytes = Base64.decode(text) else {
            throw EngineError.invalid("\(place)\(key) is not canonical standard base64 (RFC 4648 with padding)")
        }
        if let maximum, bytes.count > maximum {
            let count = bytes.count
            secureWipe(&bytes)
            throw EngineError.invalid("\(place)\(key) is \(count) bytes; at most \(maximum) are allowed")
        }
        return bytes
    }

    func requiredBase64(_ key: String, maximum: Int? = nil) throws -> [UInt8] {
        guard let value = try base64(key, maximum: maximum) else {
            throw EngineError.invalid("missing field \(place)\(key)")
        }
        return value
    }

    func bool(_ key: String) throws -> Bool? {
        switch values[key] {
        case nil: return nil
        case .bool(let b)?: return b
        case let other?: throw EngineError.invalid("\(place)\(key) must be true or false, not \(other.typeName)")
        }
    }

    /// A key version: an integer from 1 to 2^32 - 1.
    func version(_ key: String) throws -> UInt32? {
        switch values[key] {
        case nil: return nil
        case .integer(let i)?:
            guard i >= 1, i <= Int64(UInt32.max) else {
                throw EngineError.invalid("\(place)\(key) is \(i); a key version is from 1 to \(UInt32.max)")
            }
            return UInt32(i)
        case let other?: throw EngineError.invalid("\(place)\(key) must be a whole number, not \(other.typeName)")
        }
    }

    func requiredVersion(_ key: String) throws -> UInt32 {
        guard let value = try version(key) else { throw EngineError.invalid("missing field \(place)\(key)") }
        return value
    }
}
