import EngineABI
import FoundationEssentials
import Glibc
import MetacryptCrypto

// EngineKit: the Swift side of the engine ABI. An engine written in Swift describes itself with an
// `EngineDefinition` and exports it from its one C entry point:
//
//     @_cdecl("metacrypt_engine_v1")
//     public func entry(_ abi: UInt32, _ host: UnsafePointer<mc_host>?) -> UnsafePointer<mc_engine>? {
//         EngineExport.entry(MyEngine.definition, hostABI: abi, host: host)
//     }
//
// Each engine is its own shared object with its own copy of this module, so the globals below are
// per engine.

/// An error an engine answers with: an ABI result code and a reason for the caller.
public struct EngineError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let reason: String

    public init(code: Int32, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }

    public static func invalid(_ reason: String) -> EngineError { EngineError(code: MC_ERR_INVALID, reason) }
    public static func notFound(_ reason: String) -> EngineError { EngineError(code: MC_ERR_NOT_FOUND, reason) }
    public static func exists(_ reason: String) -> EngineError { EngineError(code: MC_ERR_EXISTS, reason) }
    public static func denied(_ reason: String) -> EngineError { EngineError(code: MC_ERR_DENIED, reason) }
    public static func conflict(_ reason: String) -> EngineError { EngineError(code: MC_ERR_CONFLICT, reason) }
    public static let sealed = EngineError(code: MC_ERR_SEALED, "sealed")
}

/// Who may call a route.
public enum RouteAccess: String, Codable, Sendable {
    case `public`, authenticated, admin
}

/// One route of an engine's route table (see docs/engines.md).
public struct RouteDeclaration: Codable, Sendable {
    public var operation: String
    public var method: String
    public var path: String
    public var access: RouteAccess
    public var action: String?
    public var resource: String?
    public var sealed: Bool?
    public var object: String?
    public var objectTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case operation, method, path, access, action, resource, sealed, object
        case objectTypes = "object_types"
    }

    public init(
        _ operation: String, _ method: String, _ path: String, access: RouteAccess, action: String? = nil,
        resource: String? = nil
    ) {
        self.operation = operation
        self.method = method
        self.path = path
        self.access = access
        self.action = action
        self.resource = resource
    }

    /// A public GET the host answers itself from the mount's public objects, sealed or not (ABI 1.1):
    /// `object` names the object (with the path's parameters), `types` the content types it is stored in,
    /// the first being the default.
    public static func publicObject(_ operation: String, _ path: String, object: String, types: [String])
        -> RouteDeclaration
    {
        var route = RouteDeclaration(operation, "GET", path, access: .public)
        route.sealed = true
        route.object = object
        route.objectTypes = types
        return route
    }
}

/// The caller of a request, as the host authenticated it.
public struct EngineCaller: Sendable {
    public let name: String
    public let roles: [String]
    public let isAdmin: Bool
}

/// One request, decoded from the ABI.
public struct EngineRequest {
    public let operation: String
    public let method: String
    public let requestID: String
    public let caller: EngineCaller
    public let parameters: [String: String]
    public let query: [String: String]
    public let body: [UInt8]
    public let accept: String
    let hostRequest: UnsafeMutableRawPointer?

    /// Asks the host's policy whether the caller may perform `action` on `resource` (relative to the mount).
    public func isAllowed(action: String, resource: String) -> Bool {
        guard let host = EngineExport.host, let hostRequest else { return false }
        var reason: UnsafeMutablePointer<CChar>?
        let rc = host.pointee.policy_check(hostRequest, action, resource, &reason)
        host.pointee.release(reason)
        return rc == MC_OK
    }

    /// Decodes the JSON body; a malformed body is the caller's error (400). A type conforming to
    /// ``KnownFields`` also refuses fields it does not name.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        if let unknown = try unknownFields(for: T.self).first {
            throw EngineError.invalid("unknown field \(unknown)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.isEmpty ? Array("{}".utf8) : body))
        } catch let DecodingError.keyNotFound(key, _) {
            throw EngineError.invalid("missing field \(key.stringValue)")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw EngineError.invalid(
                "field \(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            throw EngineError.invalid(
                "field \(context.codingPath.map(\.stringValue).joined(separator: ".")) has an invalid value")
        } catch let error as EngineError {
            throw error
        } catch {
            throw EngineError.invalid("the body is not valid JSON")
        }
    }

    /// A path parameter that the route table guarantees.
    public func parameter(_ name: String) throws -> String {
        guard let value = parameters[name] else { throw EngineError.invalid("missing path parameter \(name)") }
        return value
    }
}

/// What an engine answers on success.
public struct EngineResponse {
    public enum ContentType: Sendable {
        case json, pem, pkixCert, pkixCRL, octetStream

        var cString: StaticString {
            switch self {
            case .json: "application/json"
            case .pem: "application/x-pem-file"
            case .pkixCert: "application/pkix-cert"
            case .pkixCRL: "application/pkix-crl"
            case .octetStream: "application/octet-stream"
            }
        }
    }

    public var status: Int32
    public var body: [UInt8]
    /// A body holding secrets (a generated private key): handed to the host from self-wiping memory and
    /// used instead of `body`.
    public var secretBody: SecureBytes?
    public var contentType: ContentType

    public init(status: Int32 = 200, body: [UInt8], contentType: ContentType = .json) {
        self.status = status
        self.body = body
        self.contentType = contentType
    }

    /// A response whose body carries secrets; no plain array ever holds it (audit #52).
    public init(status: Int32 = 200, secretBody: SecureBytes, contentType: ContentType = .json) {
        self.init(status: status, body: [], contentType: contentType)
        self.secretBody = secretBody
    }

    public static func json(_ value: some Encodable, status: Int32 = 200) throws -> EngineResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return EngineResponse(status: status, body: Array(try encoder.encode(value)))
    }
}

/// The mount's storage view: scoped to the mount and encrypted by the host. Keys are validated by the
/// host; values come back in ``SecureBytes``.
public struct MountStorage: @unchecked Sendable {  // the host mount pointer lives as long as the mount; host calls are thread-safe
    let hostMount: UnsafeMutableRawPointer

    public func get(_ key: String) throws -> SecureBytes? {
        let host = try EngineExport.requireHost()
        var value: UnsafeMutablePointer<UInt8>?
        var length = 0
        var reason: UnsafeMutablePointer<CChar>?
        let rc = key.withCString { host.pointee.storage_get(hostMount, $0, strlen($0), &value, &length, &reason) }
        let message = EngineExport.takeHostReason(reason)
        if rc == MC_ERR_NOT_FOUND { return nil }
        guard rc == MC_OK else { throw EngineError(code: rc, message ?? "storage get failed") }
        // Hand-off: copy into a self-wiping buffer, then give the host's buffer back (it wipes on release).
        let secure = SecureBytes(copying: Array(UnsafeRawBufferPointer(start: value, count: length)))
        host.pointee.release(value)
        return secure
    }

    /// Stores `value`. With `createOnly`, throws an `exists` error instead of replacing.
    public func put(_ key: String, _ value: some ByteView, createOnly: Bool = false) throws {
        let host = try EngineExport.requireHost()
        var reason: UnsafeMutablePointer<CChar>?
        let rc = key.withCString { k in
            value.withUnsafeBytes { v in
                host.pointee.storage_put(
                    hostMount, k, strlen(k), v.bindMemory(to: UInt8.self).baseAddress, v.count,
                    createOnly ? UInt32(MC_PUT_CREATE_ONLY) : 0, &reason)
            }
        }
        let message = EngineExport.takeHostReason(reason)
        guard rc == MC_OK else { throw EngineError(code: rc, message ?? "storage put failed") }
    }

    /// Deletes `key`; false if it was absent.
    @discardableResult
    public func delete(_ key: String) throws -> Bool {
        let host = try EngineExport.requireHost()
        var reason: UnsafeMutablePointer<CChar>?
        let rc = key.withCString { host.pointee.storage_delete(hostMount, $0, strlen($0), &reason) }
        let message = EngineExport.takeHostReason(reason)
        if rc == MC_ERR_NOT_FOUND { return false }
        guard rc == MC_OK else { throw EngineError(code: rc, message ?? "storage delete failed") }
        return true
    }

    /// Publishes non-secret bytes as a public object (ABI 1.1): served by the host for object routes, even
    /// while sealed. Never pass a secret: public objects are stored in plaintext.
    public func publish(_ name: String, _ value: [UInt8], contentType: String) throws {
        let host = try EngineExport.requireHost()
        guard hostHasPublicObjects(host) else {
            throw EngineError(code: MC_ERR_UNSUPPORTED, "the host predates ABI 1.1")
        }
        var reason: UnsafeMutablePointer<CChar>?
        let rc = name.withCString { n in
            value.withUnsafeBufferPointer { v in
                host.pointee.public_put(hostMount, n, strlen(n), v.baseAddress, v.count, contentType, &reason)
            }
        }
        let message = EngineExport.takeHostReason(reason)
        guard rc == MC_OK else { throw EngineError(code: rc, message ?? "publishing failed") }
    }

    /// Removes a public object in every content type.
    public func unpublish(_ name: String) throws {
        let host = try EngineExport.requireHost()
        guard hostHasPublicObjects(host) else {
            throw EngineError(code: MC_ERR_UNSUPPORTED, "the host predates ABI 1.1")
        }
        var reason: UnsafeMutablePointer<CChar>?
        let rc = name.withCString { host.pointee.public_delete(hostMount, $0, strlen($0), &reason) }
        let message = EngineExport.takeHostReason(reason)
        guard rc == MC_OK else { throw EngineError(code: rc, message ?? "unpublishing failed") }
    }

    /// Keys under `prefix` ("" or ending in '/'), relative to the mount, sorted.
    public func list(prefix: String) throws -> [String] {
        let host = try EngineExport.requireHost()
        var keys: UnsafeMutablePointer<CChar>?
        var length = 0
        var reason: UnsafeMutablePointer<CChar>?
        let rc = prefix.withCString { host.pointee.storage_list(hostMount, $0, strlen($0), &keys, &length, &reason) }
        let message = EngineExport.takeHostReason(reason)
        guard rc == MC_OK else { throw EngineError(code: rc, message ?? "storage list failed") }
        defer { host.pointee.release(keys) }
        guard let keys, length > 0 else { return [] }
        return UnsafeRawBufferPointer(start: keys, count: length).split(separator: 0).map {
            String(decoding: $0, as: UTF8.self)
        }
    }
}

/// What a mount is told when it is created.
public struct MountInfo: @unchecked Sendable {  // as MountStorage
    public let name: String
    public let type: String
    public let config: [UInt8]
    public let storage: MountStorage
    let hostMount: UnsafeMutableRawPointer

    /// Logs through the host. Never pass secrets.
    public func log(_ level: Int32, _ message: String) {
        guard let host = EngineExport.host else { return }
        var bytes = Array(message.utf8)
        bytes.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { host.pointee.log(hostMount, level, $0.baseAddress, $0.count) }
        }
    }
}

/// A mounted engine instance. `handle` may run on many threads at once; the host never calls `unseal`
/// or `seal` while a `handle` call for the same mount is running.
public protocol MountedEngine: AnyObject, Sendable {
    func unseal() throws
    func seal()
    func handle(_ request: EngineRequest) throws -> EngineResponse
}

/// Everything the host needs to know about an engine.
public struct EngineDefinition: Sendable {
    public let name: String
    public let version: String
    public let routes: [RouteDeclaration]
    public let makeMount: @Sendable (MountInfo) throws -> MountedEngine

    public init(
        name: String, version: String, routes: [RouteDeclaration],
        makeMount: @escaping @Sendable (MountInfo) throws -> MountedEngine
    ) {
        self.name = name
        self.version = version
        self.routes = routes
        self.makeMount = makeMount
    }
}

/// True if the host's table includes `public_put` and `public_delete` (ABI 1.1).
func hostHasPublicObjects(_ host: UnsafePointer<mc_host>) -> Bool {
    Int(host.pointee.size) >= MemoryLayout<mc_host>.offset(of: \mc_host.public_delete)!
        + MemoryLayout<UnsafeRawPointer>.size
}

/// Builds the C table for a definition.
public enum EngineExport {
    nonisolated(unsafe) static var host: UnsafePointer<mc_host>?  // set once, by the entry point, before any use
    nonisolated(unsafe) static var definition: EngineDefinition?
    nonisolated(unsafe) static var table: UnsafeMutablePointer<mc_engine>?
    nonisolated(unsafe) static var namePointer: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) static var versionPointer: UnsafeMutablePointer<CChar>?

    static func requireHost() throws -> UnsafePointer<mc_host> {
        guard let host else { throw EngineError(code: MC_ERR_INTERNAL, "the engine was not initialised") }
        return host
    }

    static func takeHostReason(_ reason: UnsafeMutablePointer<CChar>?) -> String? {
        guard let reason else { return nil }
        defer { host?.pointee.release(reason) }
        return String(cString: reason)
    }

    /// The entry point's body. Returns nil for a host of another ABI major or one too old for ABI 1.0.
    public static func entry(
        _ definition: EngineDefinition, hostABI: UInt32, host: UnsafePointer<mc_host>?
    ) -> UnsafePointer<mc_engine>? {
        // Any 1.x host will do: members after 1.0 are checked where they are used.
        guard hostABI >> 16 == UInt32(MC_ABI_VERSION_MAJOR), let host,
            Int(host.pointee.size) >= MemoryLayout<mc_host>.offset(of: \mc_host.policy_check)!
                + MemoryLayout<UnsafeRawPointer>.size
        else { return nil }
        if let table { return UnsafePointer(table) }
        self.host = host
        self.definition = definition
        namePointer = strdup(definition.name)
        versionPointer = strdup(definition.version)
        let table = UnsafeMutablePointer<mc_engine>.allocate(capacity: 1)
        table.initialize(
            to: mc_engine(
                size: UInt32(MemoryLayout<mc_engine>.size), abi_version: UInt32(MC_ABI_VERSION),
                name: UnsafePointer(namePointer), version: UnsafePointer(versionPointer),
                describe: { json, length, reason in
                    EngineExport.call(reason) {
                        guard let json, let length, let definition = EngineExport.definition else {
                            throw EngineError.invalid("NULL argument")
                        }
                        let encoder = JSONEncoder()
                        encoder.outputFormatting = [.sortedKeys]
                        let bytes = Array(try encoder.encode(["routes": definition.routes]))
                        json.pointee = EngineExport.allocate(bytes)?.assumingMemoryBound(to: UInt8.self)
                        length.pointee = bytes.count
                    }
                },
                mount_init: { mount, state, reason in
                    EngineExport.call(reason) {
                        guard let mount, let state, let hostMount = mount.pointee.host_mount,
                            let definition = EngineExport.definition
                        else { throw EngineError.invalid("NULL argument") }
                        let info = MountInfo(
                            name: String(cString: mount.pointee.name), type: String(cString: mount.pointee.type),
                            config: Array(
                                UnsafeRawBufferPointer(start: mount.pointee.config, count: mount.pointee.config_len)),
                            storage: MountStorage(hostMount: hostMount), hostMount: hostMount)
                        let engine = try definition.makeMount(info)
                        state.pointee = Unmanaged.passRetained(engine as AnyObject).toOpaque()
                    }
                },
                unseal: { state, reason in
                    EngineExport.call(reason) { try EngineExport.mounted(state).unseal() }
                },
                seal: { state in
                    guard let engine = try? EngineExport.mounted(state) else { return }
                    engine.seal()
                },
                handle: { state, request, response, reason in
                    EngineExport.call(reason) {
                        guard let request, let response else { throw EngineError.invalid("NULL argument") }
                        let engine = try EngineExport.mounted(state)
                        let answer = try engine.handle(EngineExport.decode(request.pointee))
                        response.pointee.status = answer.status
                        if let secret = answer.secretBody {
                            // Hand-off: the host copies and then releases (wipes) this engine memory.
                            response.pointee.body = WipingAllocator.allocate(copying: secret)?
                                .assumingMemoryBound(to: UInt8.self)
                            response.pointee.body_len = secret.count
                        } else {
                            response.pointee.body = EngineExport.allocate(answer.body)?.assumingMemoryBound(to: UInt8.self)
                            response.pointee.body_len = answer.body.count
                        }
                        response.pointee.content_type = UnsafeRawPointer(answer.contentType.cString.utf8Start)
                            .assumingMemoryBound(to: CChar.self)
                    }
                },
                mount_free: { state in
                    guard let state else { return }
                    Unmanaged<AnyObject>.fromOpaque(state).release()
                },
                release: { pointer in EngineExport.release(pointer) }))
        self.table = table
        return UnsafePointer(table)
    }

    static func mounted(_ state: UnsafeMutableRawPointer?) throws -> MountedEngine {
        guard let state, let engine = Unmanaged<AnyObject>.fromOpaque(state).takeUnretainedValue() as? MountedEngine
        else { throw EngineError(code: MC_ERR_INTERNAL, "no mount state") }
        return engine
    }

    static func decode(_ r: mc_request) -> EngineRequest {
        func json(_ pointer: UnsafePointer<UInt8>?, _ count: Int) -> [String: String] {
            guard let pointer, count > 0 else { return [:] }
            return
                (try? JSONDecoder().decode(
                    [String: String].self, from: Data(UnsafeBufferPointer(start: pointer, count: count)))) ?? [:]
        }
        var roles: [String] = []
        let caller = r.caller?.pointee
        if let caller, let list = caller.roles {
            for i in 0..<caller.role_count { if let role = list[i] { roles.append(String(cString: role)) } }
        }
        return EngineRequest(
            operation: String(cString: r.operation), method: String(cString: r.method),
            requestID: r.request_id.map { String(cString: $0) } ?? "",
            caller: EngineCaller(
                name: caller?.name.map { String(cString: $0) } ?? "", roles: roles,
                isAdmin: (caller?.flags ?? 0) & UInt32(MC_CALLER_ADMIN) != 0),
            parameters: json(r.params, r.params_len), query: json(r.query, r.query_len),
            body: r.body.map { Array(UnsafeBufferPointer(start: $0, count: r.body_len)) } ?? [],
            accept: r.accept.map { String(cString: $0) } ?? "", hostRequest: r.host_request)
    }

    /// Runs an ABI function body: errors become a code and an engine-allocated reason. Starts at
    /// MC_ERR_INTERNAL, so a path that forgets to set a result fails closed.
    static func call(_ reason: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ body: () throws -> Void) -> Int32
    {
        var result = MC_ERR_INTERNAL
        var message = "internal error"
        do {
            try body()
            result = MC_OK
        } catch let error as EngineError {
            result = error.code
            message = error.reason
        } catch {
            message = "internal error: \(type(of: error))"
        }
        if result != MC_OK, let reason {
            // A reason crosses as a C string: a NUL from the caller's input would cut it short, so control
            // bytes are written as \u{..} escapes.
            reason.pointee = allocate(Array(escapingControlBytes(message).utf8) + [0])?.assumingMemoryBound(to: CChar.self)
        }
        return result
    }

    /// Engine allocations come from the wiping allocator, so `release` wipes them whole.
    static func allocate(_ bytes: [UInt8]) -> UnsafeMutableRawPointer? { WipingAllocator.allocate(copying: bytes) }

    static func release(_ pointer: UnsafeMutableRawPointer?) { WipingAllocator.release(pointer) }
}

/// `text` with every control character written as a \u{hex} escape.
func escapingControlBytes(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else { return text }
    var out = ""
    for scalar in text.unicodeScalars {
        if scalar.value < 0x20 || scalar.value == 0x7f {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
