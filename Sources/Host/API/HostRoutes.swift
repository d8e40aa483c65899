import FoundationEssentials
import MetacryptJSON
import MetacryptCrypto

/// The host's own routes. Each declares its access like any engine route.
extension API {
    struct InitBody: Decodable {
        let password: String
        let argon2: Argon2Parameters?
        let adminUsername: String?
        let adminPassword: String?

        enum CodingKeys: String, CodingKey {
            case password, argon2
            case adminUsername = "admin_username"
            case adminPassword = "admin_password"
        }
    }

    struct LoginBody: Decodable {
        let username: String
        let password: String
    }

    struct AccountBody: Decodable {
        let password: String?
        let roles: [Role]?
        let disabled: Bool?
    }

    struct TokenAnswer: Encodable {
        let token: String
        let expiresAt: Int64
        let username: String
        enum CodingKeys: String, CodingKey {
            case token, username
            case expiresAt = "expires_at"
        }
    }

    struct InitAnswer: Encodable {
        let adminUsername: String
        let adminPassword: String?
        let adminToken: String
        enum CodingKeys: String, CodingKey {
            case adminUsername = "admin_username"
            case adminPassword = "admin_password"
            case adminToken = "admin_token"
        }
    }

    struct WhoAmI: Encodable {
        let username: String
        let roles: [String]
        let admin: Bool
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
            HostRoute(
                spec: RouteSpec(
                    operation: operation, method: method, path: path, access: access,
                    sealed: sealed ? true : nil), handler: handler)
        }
        return [
            route("health", "GET", "sys/health", .public, sealed: true) { api, _ in
                let status = try api.barrier.status()
                let code = !status.initialized ? 501 : status.sealed ? 503 : 200
                return JSON.response(
                    code,
                    StatusBody(
                        initialized: status.initialized, sealed: status.sealed,
                        version: metacryptVersion))
            },
            route("status", "GET", "sys/status", .public, sealed: true) { api, _ in
                let status = try api.barrier.status()
                return JSON.response(
                    200,
                    StatusBody(
                        initialized: status.initialized, sealed: status.sealed,
                        version: metacryptVersion))
            },
            route("init", "POST", "sys/init", .public, sealed: true) { api, context in
                let body = try JSON.decode(InitBody.self, from: context.request.body)
                // XXX: the password arrived in a Swift String that cannot be wiped; the copy below is.
                let password = SecureBytes(copying: Array(body.password.utf8))
                let generated = body.adminPassword == nil ? Base64URL.encode(randomBytes(18)) : nil
                let username = body.adminUsername ?? "admin"
                let (token, _) = try api.initialize(
                    password: password, parameters: body.argon2 ?? api.sealArgon2, adminUsername: username,
                    adminPassword: body.adminPassword ?? generated!)
                api.logger.info("initialized and unsealed")
                return JSON.response(
                    200,
                    InitAnswer(
                        adminUsername: Usernames.normalise(username) ?? username,
                        adminPassword: generated, adminToken: token))
            },
            route("login", "POST", "auth/login", .public) { api, context in
                let body = try JSON.decode(LoginBody.self, from: context.request.body)
                guard let caller = try api.accounts.authenticate(username: body.username, password: body.password)
                else {
                    throw APIError(401, "invalid_credentials", "wrong username or password")
                }
                context.trace.caller = caller
                let (token, expiresAt) = try api.tokens.create(for: caller.name)
                return JSON.response(200, TokenAnswer(token: token, expiresAt: expiresAt, username: caller.name))
            },
            route("logout", "POST", "auth/logout", .token) { api, context in
                if let token = context.token { try api.tokens.revoke(token) }
                return JSON.response(200, ["logged_out": true])
            },
            route("whoami", "GET", "auth/whoami", .token) { _, context in
                JSON.response(
                    200,
                    WhoAmI(
                        username: context.caller.name, roles: context.caller.roles,
                        admin: context.caller.isAdmin))
            },
            route("list-accounts", "GET", "sys/accounts", .admin) { api, _ in
                JSON.response(200, ["accounts": try api.accounts.list()])
            },
            route("read-account", "GET", "sys/accounts/{username}", .admin) { api, context in
                let name = context.parameters["username"] ?? ""
                guard let account = try api.accounts.get(name) else {
                    throw APIError.notFound("no account named \(name)")
                }
                return JSON.response(200, api.accounts.summary(account))
            },
            route("create-account", "POST", "sys/accounts/{username}", .admin) { api, context in
                let body = try JSON.decode(AccountBody.self, from: context.request.body)
                guard let password = body.password else { throw APIError.badRequest("missing field password") }
                let summary = try api.accounts.create(
                    username: context.parameters["username"] ?? "", password: password,
                    roles: body.roles ?? [.user])
                return JSON.response(201, summary)
            },
            route("update-account", "PATCH", "sys/accounts/{username}", .admin) { api, context in
                let body = try JSON.decode(AccountBody.self, from: context.request.body)
                return JSON.response(
                    200,
                    try api.accounts.update(
                        context.parameters["username"] ?? "", password: body.password, roles: body.roles,
                        disabled: body.disabled))
            },
            route("delete-account", "DELETE", "sys/accounts/{username}", .admin) { api, context in
                let name = context.parameters["username"] ?? ""
                guard try api.accounts.delete(name) else { throw APIError.notFound("no account named \(name)") }
                return JSON.response(200, ["deleted": name])
            },
            route("list-policy-rules", "GET", "sys/policy/rules", .admin) { api, _ in
                JSON.response(200, ["rules": api.policy.list()])
            },
            route("read-policy-rule", "GET", "sys/policy/rules/{id}", .admin) { api, context in
                let id = context.parameters["id"] ?? ""
                guard let rule = api.policy.get(id) else { throw APIError.notFound("no policy rule \(id)") }
                return JSON.response(200, rule)
            },
            route("write-policy-rule", "PUT", "sys/policy/rules/{id}", .admin) { api, context in
                var rule = try JSON.decode(PolicyRule.self, from: context.request.body)
                let id = context.parameters["id"] ?? ""
                guard rule.id.isEmpty || rule.id == id else {
                    throw APIError.badRequest("the body's id differs from the path's")
                }
                rule.id = id
                rule.users = try rule.users.map { user in
                    guard let name = Usernames.normalise(user) else {
                        throw APIError.badRequest("invalid username \(user) in users")
                    }
                    return name
                }
                try api.policy.put(rule)
                api.logger.info("policy rule written", ["policy.rule": id])
                return JSON.response(200, rule)
            },
            route("delete-policy-rule", "DELETE", "sys/policy/rules/{id}", .admin) { api, context in
                let id = context.parameters["id"] ?? ""
                guard try api.policy.delete(id) else { throw APIError.notFound("no policy rule \(id)") }
                return JSON.response(200, ["deleted": id])
            },
            route("unseal", "POST", "sys/unseal", .public, sealed: true) { api, context in
                let body = try JSON.decode(PasswordBody.self, from: context.request.body)
                try api.unseal(password: SecureBytes(copying: Array(body.password.utf8)))
                api.logger.info("unsealed")
                return JSON.response(
                    200,
                    StatusBody(
                        initialized: true, sealed: api.barrier.isSealed,
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
                guard let mount = api.mounts.mount(named: name) else {
                    throw APIError.notFound("no mount named \(name)")
                }
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
                    throw APIError.notFound("no running mount named \(body.mount)")
                }
                guard let spec = mount.engine.routes.first(where: { $0.operation == body.operation }) else {
                    throw APIError.notFound("engine \(mount.record.type) has no operation \(body.operation)")
                }
                guard spec.object == nil else {
                    throw APIError.badRequest(
                        "operation \(body.operation) is a public object: GET /v1/\(mount.record.type)/\(mount.record.name)/\(spec.path)"
                    )
                }
                // Exactly the route's path parameters, each a valid single segment: no extra names an engine
                // might read that policy never saw.
                let parameters = body.params ?? [:]
                let declared = spec.parameterNames
                if let extra = parameters.keys.first(where: { !declared.contains($0) }) {
                    throw APIError.badRequest("operation \(body.operation) has no parameter \(extra)")
                }
                for name in declared {
                    guard let value = parameters[name], !value.isEmpty, !value.contains("/"), value != ".",
                        value != "..",
                        value.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7f })
                    else { throw APIError.badRequest("parameter \(name) is missing or invalid") }
                }
                let inner = try body.body.map { try JSONEncoder().encode($0) }.map { Array($0) } ?? []
                return try api.callEngine(
                    mount: mount, spec: spec, request: context.request,
                    requestID: context.requestID, parameters: parameters, body: inner,
                    trace: context.trace)
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


extension API.InitBody: KnownBodyFields {
    static let knownFields: Set<String> = ["password", "argon2", "admin_username", "admin_password"]
}

extension API.PasswordBody: KnownBodyFields {
    static let knownFields: Set<String> = ["password", "new_password"]
}

extension API.MountBody: KnownBodyFields {
    static let knownFields: Set<String> = ["type"]
}

extension API.LoginBody: KnownBodyFields {
    static let knownFields: Set<String> = ["username", "password"]
}

extension API.AccountBody: KnownBodyFields {
    static let knownFields: Set<String> = ["password", "roles", "disabled"]
}

extension API.EngineRequestBody: KnownBodyFields {
    static let knownFields: Set<String> = ["mount", "operation", "params", "body"]
}

extension PolicyRule: KnownBodyFields {
    static let knownFields: Set<String> = ["id", "priority", "effect", "users", "roles", "resources", "actions"]
}
