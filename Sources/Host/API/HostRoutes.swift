import FoundationEssentials
import MetacryptCrypto

/// The host's own routes. Each declares its access like any engine route.
extension API {
    struct InitBody: Decodable {
        let password: String
        let argon2: Argon2Parameters?
    }

    struct PasswordBody: Decodable {
        let password: String
        let newPassword: String?

        enum CodingKeys: String, CodingKey {
            case password
            case newPassword = "new_password"
        }
    }

    struct MountBody: Decodable {
        let type: String
    }

    struct StatusBody: Encodable {
        let initialized: Bool
        let sealed: Bool
        let version: String
    }

    struct EngineRequestBody: Decodable {
        let mount: String
        let operation: String
        let params: [String: String]?
        let body: JSONValue?
    }

    static func makeHostRoutes() -> [HostRoute] {
        func route(
            _ operation: String, _ method: String, _ path: String, _ access: Access, sealed: Bool = false,
            _ handler: @escaping @Sendable (API, Context) throws -> HTTPResponse
        ) -> HostRoute {
            HostRoute(spec: RouteSpec(operation: operation, method: method, path: path, access: access,
                                      sealed: sealed ? true : nil), handler: handler)
        }
        return [
            route("health", "GET", "sys/health", .public, sealed: true) { api, _ in
                let status = try api.barrier.status()
                let code = !status.initialized ? 501 : status.sealed ? 503 : 200
                return JSON.response(code, StatusBody(initialized: status.initialized, sealed: status.sealed,
                                                      version: metacryptVersion))
            },
            route("status", "GET", "sys/status", .public, sealed: true) { api, _ in
                let status = try api.barrier.status()
                return JSON.response(200, StatusBody(initialized: status.initialized, sealed: status.sealed,
                                                     version: metacryptVersion))
            },
            route("init", "POST", "sys/init", .public, sealed: true) { api, context in
                let body = try JSON.decode(InitBody.self, from: context.request.body)
                // XXX: the password arrived in a Swift String that cannot be wiped; the copy below is.
                let password = SecureBytes(copying: Array(body.password.utf8))
                try api.barrier.initialize(password: password, parameters: body.argon2 ?? .recommended)
                let token = try api.tokens.create(
                    for: Caller(name: "admin", roles: ["admin"], isAdmin: true), ttlSeconds: nil)
                api.logger.info("initialized and unsealed")
                return JSON.response(200, ["admin_token": token])
            },
            route("unseal", "POST", "sys/unseal", .public, sealed: true) { api, context in
                let body = try JSON.decode(PasswordBody.self, from: context.request.body)
                try api.unseal(password: SecureBytes(copying: Array(body.password.utf8)))
                api.logger.info("unsealed")
                return JSON.response(200, StatusBody(initialized: true, sealed: api.barrier.isSealed,
                                                     version: metacryptVersion))
            },
            route("seal", "POST", "sys/seal", .admin) { api, _ in
                api.seal()
                api.logger.info("sealed by request")
                return JSON.response(200, StatusBody(initialized: true, sealed: true, version: metacryptVersion))
            },
            route("rotate-mek", "POST", "sys/rotate/mek", .admin) { api, context in
                let body = try JSON.decode(PasswordBody.self, from: context.request.body)
                try api.barrier.rotateMEK(
                    password: SecureBytes(copying: Array(body.password.utf8)),
                    newPassword: body.newPassword.map { SecureBytes(copying: Array($0.utf8)) })
                api.logger.info("MEK rotated")
                return JSON.response(200, ["rotated": "mek"])
            },
            route("rotate-key", "POST", "sys/rotate/key/{key}", .admin) { api, context in
                let name = context.parameters["key"] ?? ""
                let keyID = name == Barrier.systemKeyID ? name : MountContext.keyID(for: name)
                let version = try api.barrier.rotateKey(keyID)
                api.scheduleReencryption(keyID)
                api.logger.info("data key rotated", ["key.id": keyID, "key.version": String(version)])
                return JSON.response(200, RotateAnswer(keyID: keyID, version: version))
            },
            route("list-keys", "GET", "sys/keys", .admin) { api, _ in
                JSON.response(200, ["keys": try api.barrier.keyStatus()])
            },
            route("list-mounts", "GET", "sys/mounts", .admin) { api, _ in
                JSON.response(200, MountsAnswer(mounts: api.mounts.list(), unavailable: api.mounts.unavailableMounts()))
            },
            route("read-mount", "GET", "sys/mounts/{name}", .admin) { api, context in
                let name = context.parameters["name"] ?? ""
                guard let mount = api.mounts.mount(named: name) else { throw APIError.notFound("no mount named \(name)") }
                return JSON.response(200, mount.record)
            },
            route("create-mount", "POST", "sys/mounts/{name}", .admin) { api, context in
                let body = try JSON.decode(MountBody.self, from: context.request.body)
                let record = try api.mounts.create(name: context.parameters["name"] ?? "", type: body.type)
                api.logger.info("mounted", ["mount.name": record.name, "engine.type": record.type])
                return JSON.response(201, record)
            },
            route("delete-mount", "DELETE", "sys/mounts/{name}", .admin) { api, context in
                let name = context.parameters["name"] ?? ""
                try api.mounts.delete(name: name)
                api.logger.info("unmounted", ["mount.name": name])
                return JSON.response(200, ["deleted": name])
            },
            route("list-engines", "GET", "sys/engines", .admin) { api, _ in
                let engines = api.mounts.engines.values.sorted { $0.type < $1.type }.map {
                    EngineAnswer(type: $0.type, version: $0.version, path: $0.path)
                }
                return JSON.response(200, EnginesAnswer(engines: engines, refused: api.engineRefusals))
            },
            route("list-routes", "GET", "sys/routes", .admin) { api, _ in
                JSON.response(200, ["routes": api.allRoutes()])
            },
            route("engine-request", "POST", "engine/request", .public, sealed: true) { api, context in
                // The generic route: resolves the target and then runs the target route's own checks.
                let body = try JSON.decode(EngineRequestBody.self, from: context.request.body)
                guard let mount = api.mounts.mount(named: body.mount) else {
                    if api.barrier.isSealed { throw APIError.sealed }
                    throw APIError.notFound("no mount named \(body.mount)")
                }
                guard let spec = mount.engine.routes.first(where: { $0.operation == body.operation }) else {
                    throw APIError.notFound("engine \(mount.record.type) has no operation \(body.operation)")
                }
                let parameters = body.params ?? [:]
                for segment in spec.segments where segment.hasPrefix("{") {
                    let name = String(segment.dropFirst().dropLast())
                    guard let value = parameters[name], !value.isEmpty, !value.contains("/"), value != ".", value != ".."
                    else { throw APIError.badRequest("parameter \(name) is missing or invalid") }
                }
                let inner = try body.body.map { try JSONEncoder().encode($0) }.map { Array($0) } ?? []
                return try api.callEngine(mount: mount, spec: spec, request: context.request,
                                          requestID: context.requestID, parameters: parameters, body: inner)
            },
        ]
    }

    struct RotateAnswer: Encodable {
        let keyID: String
        let version: UInt32
        enum CodingKeys: String, CodingKey {
            case keyID = "key_id"
            case version
        }
    }

    struct MountsAnswer: Encodable {
        let mounts: [MountRecord]
        let unavailable: [String: String]
    }

    struct EngineAnswer: Encodable {
        let type: String
        let version: String
        let path: String
    }

    struct EnginesAnswer: Encodable {
        let engines: [EngineAnswer]
        let refused: [EngineRefusal]
    }
}

/// Any JSON value, for passing an engine request body through unchanged.
indirect enum JSONValue: Codable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}
