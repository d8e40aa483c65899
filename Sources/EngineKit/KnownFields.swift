import FoundationEssentials

/// A request body type that names every field it accepts. ``EngineRequest/decode(_:)`` then refuses
/// any other top-level field with a 400, so a misspelt option ("extentions", "add") is an error rather
/// than a silently weaker request.
public protocol KnownFields: Decodable {
    static var knownFields: Set<String> { get }
}

extension EngineRequest {
    /// The top-level field names of the body that `T` does not know, if `T` lists its fields.
    func unknownFields<T>(for type: T.Type) throws -> [String] {
        guard let known = (T.self as? KnownFields.Type)?.knownFields, !body.isEmpty else { return [] }
        guard let object = try? JSONDecoder().decode([String: IgnoredValue].self, from: Data(body)) else {
            return []  // not an object: the typed decode reports it
        }
        return object.keys.filter { !known.contains($0) }.sorted()
    }
}

/// Decodes any JSON value and keeps nothing: only the keys of the enclosing object matter.
struct IgnoredValue: Decodable {
    init(from decoder: any Decoder) throws {}
}
