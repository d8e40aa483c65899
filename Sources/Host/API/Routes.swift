/// Who may call a route, as every route declares (host and engine alike).
public enum Access: String, Codable, Sendable {
    /// Anyone, without a token.
    case `public`
    /// Any valid token, without a policy question (whoami, logout).
    case token
    /// Any authenticated caller allowed by policy for the route's action and resource.
    case authenticated
    /// Administrators only.
    case admin
}

/// A route as declared in a route table. Engines declare theirs in `describe` JSON with these names.
public struct RouteSpec: Codable, Sendable, Equatable {
    public var operation: String
    public var method: String
    /// Segments separated by '/'; a segment `{name}` is a parameter matching one non-empty segment.
    public let path: String
    public var access: Access
    /// Policy action; required for authenticated routes.
    public var action: String?
    /// Policy resource template relative to the mount (or, for host routes, absolute).
    public var resource: String?
    /// Served while sealed (public data such as a CRL); default false. Only object routes can be.
    public var sealed: Bool?
    /// For a route the host answers itself from the mount's public objects (ABI 1.1): the object name
    /// template, e.g. "issuers/{name}/crl". Object routes are public GETs.
    public var object: String?
    /// The content types the object is offered in, the first being the default when the Accept header
    /// names none of them.
    public var objectTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case operation, method, path, access, action, resource, sealed, object
        case objectTypes = "object_types"
    }

    public init(operation: String, method: String, path: String, access: Access, action: String? = nil,
                resource: String? = nil, sealed: Bool? = nil, object: String? = nil, objectTypes: [String]? = nil) {
        self.segments = path.split(separator: "/", omittingEmptySubsequences: false)
        self.object = object
        self.objectTypes = objectTypes
        self.operation = operation
        self.method = method
        self.path = path
        self.access = access
        self.action = action
        self.resource = resource
        self.sealed = sealed
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            operation: try c.decode(String.self, forKey: .operation), method: try c.decode(String.self, forKey: .method),
            path: try c.decode(String.self, forKey: .path), access: try c.decode(Access.self, forKey: .access),
            action: try c.decodeIfPresent(String.self, forKey: .action),
            resource: try c.decodeIfPresent(String.self, forKey: .resource),
            sealed: try c.decodeIfPresent(Bool.self, forKey: .sealed),
            object: try c.decodeIfPresent(String.self, forKey: .object),
            objectTypes: try c.decodeIfPresent([String].self, forKey: .objectTypes))
    }

    /// The path split once, at declaration: matching runs on every request.
    let segments: [Substring]

    /// Nil if the declaration is complete and well formed, else why not. A route that fails this
    /// cannot be registered.
    func problem(forEngine: Bool = true) -> String? {
        let methods: Set<String> = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        guard methods.contains(method) else { return "route \(operation): unsupported method \(method)" }
        guard !operation.isEmpty, operation.utf8.allSatisfy({ Names.isNameByte($0) }) else {
            return "route has an invalid operation name \(operation)"
        }
        var parameters = Set<String>()
        for segment in segments {
            if segment.isEmpty { return "route \(operation): empty path segment in \(path)" }
            if segment.hasPrefix("{") {
                guard segment.hasSuffix("}"), segment.count > 2 else { return "route \(operation): bad parameter \(segment)" }
                parameters.insert(String(segment.dropFirst().dropLast()))
            } else if segment == "." || segment == ".." || segment.contains("{") || segment.contains("}") {
                return "route \(operation): bad segment \(segment)"
            }
        }
        if let object {
            guard access == .public, method == "GET" else { return "route \(operation): an object route must be a public GET" }
            guard let types = objectTypes, !types.isEmpty, types.allSatisfy(Self.isMediaType) else {
                return "route \(operation): an object route must list its object_types"
            }
            for segment in object.split(separator: "/", omittingEmptySubsequences: false) {
                if segment.isEmpty || segment == "." || segment == ".." { return "route \(operation): bad object \(object)" }
                if segment.hasPrefix("{") && !parameters.contains(String(segment.dropFirst().dropLast())) {
                    return "route \(operation): object uses unknown parameter \(segment)"
                }
            }
        } else if sealed == true && forEngine {
            return "route \(operation): only object routes of an engine can be served while sealed"
        }
        if access == .authenticated {
            guard let action, !action.isEmpty, action.utf8.allSatisfy({ Names.isNameByte($0) }) else {
                return "route \(operation): an authenticated route must declare its policy action"
            }
            guard let resource, !resource.isEmpty else {
                return "route \(operation): an authenticated route must declare its policy resource"
            }
            for segment in resource.split(separator: "/", omittingEmptySubsequences: false) {
                if segment.isEmpty { return "route \(operation): empty segment in resource \(resource)" }
                if segment.hasPrefix("{") && !parameters.contains(String(segment.dropFirst().dropLast())) {
                    return "route \(operation): resource uses unknown parameter \(segment)"
                }
            }
        }
        return nil
    }

    static func isMediaType(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return (3...100).contains(bytes.count) && bytes.filter { $0 == UInt8(ascii: "/") }.count == 1
            && bytes.allSatisfy { Names.isNameByte($0) || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "+")
                || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) }
    }

    /// Fills a template's parameters.
    static func render(_ template: String, _ parameters: [String: String]) -> String {
        template.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix("{") ? (parameters[String(segment.dropFirst().dropLast())] ?? "") : String(segment)
        }.joined(separator: "/")
    }

    /// The names of the path's parameters.
    var parameterNames: Set<String> {
        Set(segments.filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) })
    }

    /// Matches request segments; returns the parameters on success.
    func match(_ request: [Substring]) -> [String: String]? {
        let template = segments
        guard template.count == request.count else { return nil }
        var parameters: [String: String] = [:]
        for (t, r) in zip(template, request) {
            if t.hasPrefix("{") {
                parameters[String(t.dropFirst().dropLast())] = String(r)
            } else if t != r {
                return nil
            }
        }
        return parameters
    }

    /// The resource with parameters filled in.
    func renderResource(_ parameters: [String: String]) -> String? {
        resource.map { Self.render($0, parameters) }
    }
}

/// The route table an engine returns from `describe`.
struct RouteTable: Codable {
    var routes: [RouteSpec]
}

/// Name rules shared by mounts, engine types, operations and key ids.
public enum Names {
    /// Mount names and similar identifiers: 1-64 bytes of [a-z0-9_-], starting with a letter or digit.
    public static func isValidMountName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count), let first = bytes.first, isLowerAlnum(first) else { return false }
        return bytes.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }

    static func isLowerAlnum(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
    }

    static func isNameByte(_ b: UInt8) -> Bool {
        isLowerAlnum(b) || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
    }

    /// Validates a key an engine passes to its storage view (audit #48): printable ASCII without spaces,
    /// at most 512 bytes, '/'-separated segments none of which is empty, "." or "..".
    static func storageKeyProblem(_ key: [UInt8], allowEmpty: Bool = false, trailingSlash: Bool = false) -> String? {
        if key.isEmpty { return allowEmpty ? nil : "the storage key is empty" }
        guard key.count <= 512 else { return "the storage key is \(key.count) bytes, more than 512" }
        guard key.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            return "the storage key contains a byte outside printable ASCII (NUL, control, space or non-ASCII)"
        }
        var segments = key.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        if trailingSlash {
            guard segments.last?.isEmpty == true else { return "a list prefix must end in '/'" }
            segments.removeLast()
        }
        for segment in segments {
            if segment.isEmpty { return "the storage key has an empty segment (leading, trailing or double '/')" }
            if segment.elementsEqual([UInt8(ascii: ".")]) || segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                return "the storage key has a '.' or '..' segment"
            }
        }
        return nil
    }
}
