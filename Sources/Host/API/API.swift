import Dispatch
import FoundationEssentials
import MetacryptCrypto
import Synchronization

public let metacryptVersion = "0.1.0"

/// Decides whether a caller may perform an action on a resource. Default deny.
public protocol Authorizer: Sendable {
    func allows(_ caller: Caller, action: String, resource: String) -> Bool
}

/// Until policy rules exist, only administrators pass (default deny for everyone else).
public struct AdminOnlyAuthorizer: Authorizer {
    public init() {}
    public func allows(_ caller: Caller, action: String, resource: String) -> Bool { caller.isAdmin }
}

/// The one request pipeline. Every route, host or engine, typed or generic, passes through
/// ``handle(_:)`` in the same order: body limit, route match, sealed check, authentication,
/// authorization, the handler, and a JSON response (audit #23, #69).
public final class API: Sendable {
    struct Context {
        let request: HTTPRequest
        let requestID: String
        let caller: Caller
        let parameters: [String: String]
    }

    struct HostRoute {
        let spec: RouteSpec
        let handler: @Sendable (API, Context) throws -> HTTPResponse
    }

    let barrier: Barrier
    let mounts: Mounts
    let tokens: TokenStore
    let authorizer: any Authorizer
    let logger: Logger
    let engineRefusals: [EngineRefusal]
    let reencryption: DispatchQueue = DispatchQueue(label: "metacrypt.reencrypt")
    let now: @Sendable () -> Int64
    private let hostRoutes: [HostRoute]

    public init(
        barrier: Barrier, engines: [LoadedEngine], engineRefusals: [EngineRefusal], logger: Logger,
        authorizer: any Authorizer = AdminOnlyAuthorizer(),
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) {
        self.barrier = barrier
        self.mounts = Mounts(
            barrier: barrier, engines: Dictionary(engines.map { ($0.type, $0) }, uniquingKeysWith: { a, _ in a }),
            logger: logger)
        self.tokens = TokenStore(barrier: barrier, now: now)
        self.authorizer = authorizer
        self.logger = logger
        self.engineRefusals = engineRefusals
        self.now = now
        self.hostRoutes = API.makeHostRoutes()
        for route in hostRoutes {
            precondition(route.spec.problem() == nil, "host route \(route.spec.operation): \(route.spec.problem()!)")
        }
    }

    // MARK: - The pipeline

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let requestID = Hex.encode(randomBytes(8))
        var response: HTTPResponse
        do {
            response = try route(request, requestID: requestID)
        } catch {
            let apiError = APIError.from(error)
            if apiError.status >= 500 && apiError.status != 503 {
                logger.error("request failed", ["request.id": requestID, "path": request.path, "error": "\(error)"])
            }
            response = JSON.error(apiError, requestID: requestID)
        }
        response.headers.append(("X-Request-Id", requestID))
        response.headers.append(("Cache-Control", "no-store"))
        return response
    }

    private func route(_ request: HTTPRequest, requestID: String) throws -> HTTPResponse {
        // Body limit (the server stopped reading at the limit).
        if request.bodyTooLarge { throw APIError(413, "too_large", "the request body exceeds the limit") }

        // Route match: host routes first, then /v1/<type>/<mount>/... from the engines' tables.
        let segments = try Self.pathSegments(request.path)
        if segments.count >= 2, segments[0] == "v1" {
            let rest = Array(segments.dropFirst())
            var methodMismatch = false
            for route in hostRoutes {
                guard let parameters = route.spec.match(rest[...].map { $0 }) else { continue }
                guard route.spec.method == request.method else { methodMismatch = true; continue }
                return try run(route.spec, request, requestID, parameters, mountName: nil) { context in
                    try route.handler(self, context)
                }
            }
            if methodMismatch { throw APIError(405, "method_not_allowed", "\(request.method) is not allowed here") }
            if rest.count >= 3 {
                return try engineRoute(type: String(rest[0]), mount: String(rest[1]), rest: Array(rest[2...]),
                                       request: request, requestID: requestID)
            }
        }
        throw APIError.notFound("no route for \(request.method) \(request.path)")
    }

    private func engineRoute(
        type: String, mount mountName: String, rest: [Substring], request: HTTPRequest, requestID: String
    ) throws -> HTTPResponse {
        guard let mount = mounts.mount(named: mountName), mount.record.type == type else {
            if barrier.isSealed && mounts.engines[type] != nil { throw APIError.sealed }
            throw APIError.notFound("no mount \(mountName) of type \(type)")
        }
        var methodMismatch = false
        for spec in mount.engine.routes {
            guard let parameters = spec.match(rest) else { continue }
            guard spec.method == request.method else { methodMismatch = true; continue }
            return try callEngine(mount: mount, spec: spec, request: request, requestID: requestID,
                                  parameters: parameters, body: request.body)
        }
        if methodMismatch { throw APIError(405, "method_not_allowed", "\(request.method) is not allowed here") }
        throw APIError.notFound("no route for \(request.method) \(request.path)")
    }

    /// Calls an engine route through the same steps as every other route.
    func callEngine(
        mount: Mount, spec: RouteSpec, request: HTTPRequest, requestID: String, parameters: [String: String],
        body: [UInt8]
    ) throws -> HTTPResponse {
        try run(spec, request, requestID, parameters, mountName: mount.record.name) { context in
            let caller = context.caller
            let prefix = "\(mount.record.type)/\(mount.record.name)/"
            return try mount.handle(
                route: spec, method: request.method, requestID: requestID, caller: caller, parameters: parameters,
                query: request.query, body: body, accept: request.headers["accept"] ?? "",
                authorize: { [authorizer] action, resource in
                    // Finer questions from the engine, always inside the mount's namespace.
                    guard Names.storageKeyProblem(Array(resource.utf8)) == nil else { return false }
                    return authorizer.allows(caller, action: action, resource: prefix + resource)
                })
        }
    }

    /// The common steps: sealed check, authentication, authorization, then the handler.
    private func run(
        _ spec: RouteSpec, _ request: HTTPRequest, _ requestID: String, _ parameters: [String: String],
        mountName: String?, _ handler: (Context) throws -> HTTPResponse
    ) throws -> HTTPResponse {
        // Sealed? Only routes declared available while sealed go on.
        if spec.sealed != true && barrier.isSealed { throw APIError.sealed }

        // Authenticate.
        var caller = Caller.anonymous
        if spec.access != .public {
            guard let header = request.headers["authorization"], header.hasPrefix("Bearer ") else {
                throw APIError.unauthenticated
            }
            guard let found = try tokens.lookup(String(header.dropFirst(7))) else { throw APIError.unauthenticated }
            caller = found
        }

        // Authorize: admin routes need an admin; authenticated routes need policy for action and resource.
        switch spec.access {
        case .public: break
        case .admin:
            guard caller.isAdmin else { throw APIError.forbidden }
        case .authenticated:
            guard let action = spec.action, let relative = spec.renderResource(parameters) else { throw APIError.forbidden }
            let resource = mountName.map { name in
                "\(mounts.mount(named: name)?.record.type ?? "")/\(name)/\(relative)"
            } ?? relative
            guard authorizer.allows(caller, action: action, resource: resource) else { throw APIError.forbidden }
        }

        return try handler(Context(request: request, requestID: requestID, caller: caller, parameters: parameters))
    }

    /// Splits and checks a request path: no empty, "." or ".." segments, no control bytes.
    static func pathSegments(_ path: String) throws -> [Substring] {
        guard path.hasPrefix("/"), path.utf8.count <= 2048 else { throw APIError.badRequest("invalid request path") }
        guard path.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7f }) else {
            throw APIError.badRequest("the request path contains control characters")
        }
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for segment in segments where segment.isEmpty || segment == "." || segment == ".." {
            throw APIError.badRequest("the request path has an empty, '.' or '..' segment")
        }
        return segments
    }

    // MARK: - Every route, for documentation and generated tests

    public struct RouteListing: Codable, Sendable {
        public var method: String
        public var path: String
        public var operation: String
        public var access: Access
        public var action: String?
        public var resource: String?
        public var sealed: Bool
    }

    public func allRoutes() -> [RouteListing] {
        var listing = hostRoutes.map {
            RouteListing(method: $0.spec.method, path: "/v1/" + $0.spec.path, operation: $0.spec.operation,
                         access: $0.spec.access, action: $0.spec.action, resource: $0.spec.resource,
                         sealed: $0.spec.sealed ?? false)
        }
        for record in mounts.list() {
            guard let mount = mounts.mount(named: record.name) else { continue }
            for spec in mount.engine.routes {
                listing.append(RouteListing(
                    method: spec.method, path: "/v1/\(record.type)/\(record.name)/\(spec.path)", operation: spec.operation,
                    access: spec.access, action: spec.action,
                    resource: spec.resource.map { "\(record.type)/\(record.name)/\($0)" }, sealed: spec.sealed ?? false))
            }
        }
        return listing
    }

    // MARK: - Lifecycle used by routes and by the server

    /// Unseals the barrier and starts every mount; resumes any unfinished re-encryption.
    public func unseal(password: SecureBytes) throws {
        try barrier.unseal(password: password)
        try mounts.activateAll()
        for keyID in (try? barrier.keysNeedingReencryption()) ?? [] { scheduleReencryption(keyID) }
    }

    /// Stops every mount (waiting for their requests in flight), then seals the barrier.
    public func seal() {
        mounts.deactivateAll()
        barrier.seal()
    }

    public func createMount(name: String, type: String) throws -> MountRecord {
        try mounts.create(name: name, type: type)
    }

    public var loadedEngineTypes: [String] { mounts.engines.keys.sorted() }

    func scheduleReencryption(_ keyID: String) {
        reencryption.async { [barrier, logger] in
            do {
                let moved = try barrier.reencrypt(keyID)
                logger.info("re-encryption finished", ["key.id": keyID, "entries": String(moved)])
            } catch {
                logger.warning("re-encryption stopped; it resumes at the next unseal", ["key.id": keyID, "error": "\(error)"])
            }
        }
    }
}
