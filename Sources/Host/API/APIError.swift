import FoundationEssentials
import MetacryptJSON

/// An error answered to the client: an HTTP status, a stable machine-readable code and a message.
///
/// The JSON body is always built by the encoder (audit #68), so a message may safely contain quotes,
/// backslashes or control characters.
public struct APIError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let code: String
    public let message: String

    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status) \(code): \(message)" }

    static func badRequest(_ message: String) -> APIError { APIError(400, "invalid_request", message) }
    static func notFound(_ message: String) -> APIError { APIError(404, "not_found", message) }
    static let unauthenticated = APIError(401, "unauthenticated", "a valid bearer token is required")
    static let forbidden = APIError(403, "permission_denied", "the caller may not perform this operation")
    static let sealed = APIError(503, "sealed", "Metacrypt is sealed")

    /// Maps an error from any layer to what the client sees. Unknown errors are bugs: a 500 that names
    /// nothing internal.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as BarrierError:
            switch e.code {
            case .sealed: return .sealed
            case .notInitialized: return APIError(409, "not_initialized", e.reason)
            case .alreadyInitialized: return APIError(409, "already_initialized", e.reason)
            case .unsealFailed: return APIError(400, "unseal_failed", e.reason)
            case .invalidArgument, .invalidPath: return APIError(400, "invalid_request", e.reason)
            case .unknownKey: return APIError(404, "not_found", e.reason)
            case .keyExists: return APIError(409, "exists", e.reason)
            case .busy: return APIError(409, "conflict", e.reason)
            case .keyLoadFailed, .corrupt: return APIError(500, "storage_corrupt", e.reason)
            }
        case let e as RateLimited:
            return APIError(429, "rate_limited", "too many requests; retry in \(Int(e.retryAfter.rounded(.up))) s")
        case let e as StorageError where e.code == .busy:
            return APIError(503, "storage_busy", "storage is busy; try again")
        default:
            return APIError(500, "internal", "internal error")
        }
    }
}

struct ErrorBody: Encodable {
    struct Detail: Encodable {
        let code: String
        let message: String
        let request_id: String?
    }
    let error: Detail
}

/// JSON helpers shared by the API.
enum JSON {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func encode(_ value: some Encodable) -> [UInt8] {
        // Encoding our own Encodable types cannot fail; if it did, fail closed with a fixed body.
        (try? Array(encoder.encode(value))) ?? Array(#"{"error":{"code":"internal","message":"encoding failed"}}"#.utf8)
    }

    static func decode<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws -> T {
        // A body type that names its fields refuses any other: a misspelt "priorty" must not store a rule
        // at priority 0.
        if let known = (T.self as? KnownBodyFields.Type)?.knownFields, !body.isEmpty,
           let object = try? JSONDecoder().decode([String: JSONValue].self, from: Data(body)),
           let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw APIError.badRequest("unknown field \(unknown)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.isEmpty ? Array("{}".utf8) : body))
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError.badRequest("missing field \(key.stringValue)")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError.badRequest("field \(field.isEmpty ? "(body)" : field) has the wrong type")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            throw APIError.badRequest("field \(context.codingPath.map(\.stringValue).joined(separator: ".")) has an invalid value")
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.badRequest("the body is not valid JSON")
        }
    }

    static func response(_ status: Int, _ value: some Encodable) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")], body: encode(value))
    }

    static func error(_ error: APIError, requestID: String?) -> HTTPResponse {
        var headers = [("Content-Type", "application/json")]
        if error.status == 503 { headers.append(("Retry-After", "5")) }
        return HTTPResponse(
            status: error.status, headers: headers,
            body: encode(ErrorBody(error: .init(code: error.code, message: error.message, request_id: requestID))))
    }
}

/// A request body type that names every top-level field it accepts; others are refused with a 400.
protocol KnownBodyFields: Decodable {
    static var knownFields: Set<String> { get }
}
