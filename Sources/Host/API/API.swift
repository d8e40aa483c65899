import Dispatch
import FoundationEssentials
import MetacryptCrypto
import Synchronization

public let metacryptVersion = "0.1.0"

/// Decides whether a caller may perform an action on a resource. Default deny.
public protocol Authorizer: Sendable {
    func allows(_ caller: Caller, action: String, resource: String) -> Bool
}

/// The one request pipeline. Every route, host or engine, typed or generic, passes through
/// ``handle(_:)`` in the same order (audit #23, #69): body limit, route match, sealed check,
/// authentication, authorization, rate limit, audit of the request, the handler, audit of the outcome,
/// and a JSON response.
public final class API: Sendable {
    /// What the API is configured with beyond its collaborators.
    public struct Settings: Sendable {
        /// Argon2id cost for the KWK when `init` names none.
        public var sealArgon2: Argon2Parameters = .recommended
        /// Argon2id cost for account passwords (login cost).
        public var passwordArgon2: Argon2Parameters = Argon2Parameters(time: 2, memoryKiB: 19 * 1024, lanes: 1)
        public var tokenTTLSeconds: Int64 = 12 * 3600
        /// Per caller identity, over engine operations.
        public var identityLimit = RateLimiter.Limit(rate: 200, burst: 400)
        /// Per mount, over engine operations; rate 0 disables.
        public var mountLimit = RateLimiter.Limit(rate: 0, burst: 0)

        public init() {}
    }

    struct Context {
        let request: HTTPRequest
        let requestID: String
        let caller: Caller
        let token: String?
        let parameters: [String: String]
        let trace: Trace
    }

    struct HostRoute {
        let spec: RouteSpec
        let handler: @Sendable (API, Context) throws -> HTTPResponse
    }

    /// What the pipeline learns about a request, for its audit lines.
    final class Trace {
        var caller = Caller.anonymous
        var operation = "-"
        var mount: String?
        var resource: String?
        var audited = true
    }

    let barrier: Barrier
    let mounts: Mounts
    let accounts: AccountStore
    let tokens: TokenStore
    let policy: Policy
    let introspection: IntrospectionProvider?
    let audit: AuditLog?
    let identityLimiter: RateLimiter
    let mountLimiter: RateLimiter
    let unsealBackoff = UnsealBackoff()
    let logger: Logger
    let engineRefusals: [EngineRefusal]
    let reencryption = DispatchQueue(label: "metacrypt.reencrypt")
    let now: @Sendable () -> Double
    let sealArgon2: Argon2Parameters
    private let hostRoutes: [HostRoute]

    public init(
        barrier: Barrier, engines: [LoadedEngine], engineRefusals: [EngineRefusal], logger: Logger,
        settings: Settings = Settings(), introspection: IntrospectionProvider? = nil, audit: AuditLog? = nil,
        now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.barrier = barrier
        self.mounts = Mounts(
            barrier: barrier, engines: Dictionary(engines.map { ($0.type, $0) }, uniquingKeysWith: { a, _ in a }),
            logger: logger)
        let seconds: @Sendable () -> Int64 = { Int64(now()) }
        self.accounts = AccountStore(barrier: barrier, parameters: settings.passwordArgon2, now: seconds)
        self.tokens = TokenStore(barrier: barrier, accounts: accounts, ttlSeconds: settings.tokenTTLSeconds, now: seconds)
        self.policy = Policy(barrier: barrier)
        self.introspection = introspection
        self.audit = audit
        self.identityLimiter = RateLimiter(limit: settings.identityLimit)
        self.mountLimiter = RateLimiter(limit: settings.mountLimit)
        self.logger = logger
        self.engineRefusals = engineRefusals
        self.now = now
        self.sealArgon2 = settings.sealArgon2
        self.hostRoutes = API.makeHostRoutes()
        for route in hostRoutes {
            let problem = route.spec.problem(forEngine: false)
            precondition(problem == nil, "host route \(route.spec.operation): \(problem ?? "")")
        }
    }

    // MARK: - The pipeline

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let requestID = Hex.encode(randomBytes(8))
        let trace = Trace()
        var response: HTTPResponse
        var errorCode: String?
        do {
            response = try route(request, requestID: requestID, trace: trace)
        } catch {
            let apiError = APIError.from(error)
            if apiError.status >= 500 && apiError.status != 503 {
                logger.error("request failed", ["request.id": requestID, "path": request.path, "error": "\(error)"])
            }
            errorCode = apiError.code
            response = JSON.error(apiError, requestID: requestID)
            if apiError.status == 429, let retry = (error as? RateLimited)?.retryAfter {
                response.headers.append(("Retry-After", String(Int(retry.rounded(.up)))))
            }
        }
        // The outcome line. If it cannot be written the response has already been decided; log loudly.
        if trace.audited {
            do {
                try auditLine("response", requestID, trace, status: response.status, error: errorCode)
            } catch {
                logger.error("audit log write failed for an outcome", ["request.id": requestID, "error": "\(error)"])
            }
        }
        response.headers.append(("X-Request-Id", requestID))
        response.headers.append(("Cache-Control", "no-store"))
        return response
    }

    private func route(_ request: HTTPRequest, requestID: String, trace: Trace) throws -> HTTPResponse {
        // Body limit (the server stopped reading at the limit).
        if request.bodyTooLarge { throw APIError(413, "too_large", "the request body exceeds the limit") }
        if request.malformedQuery { throw APIError.badRequest("the query string has a malformed escape") }
        if request.ambiguousHeaders {
            throw APIError.badRequest(
                "the request repeats Content-Length or Authorization, or mixes Content-Length with Transfer-Encoding")
        }

        // Route match: host routes first, then /v1/<type>/<mount>/... from the engines' tables.
        let segments = try Self.pathSegments(request.path)
        if segments.count >= 2, segments[0] == "v1" {
            let rest = Array(segments.dropFirst())
            var methodMismatch = false
            for route in hostRoutes {
                guard let parameters = route.spec.match(rest) else { continue }
                guard route.spec.method == request.method else { methodMismatch = true; continue }
                return try run(route.spec, request, requestID, parameters, target: nil, trace: trace) { context in
                    try route.handler(self, context)
                }
            }
            if methodMismatch { throw APIError(405, "method_not_allowed", "\(request.method) is not allowed here") }
            if rest.count >= 3 {
                return try engineRoute(type: String(rest[0]), mount: String(rest[1]), rest: Array(rest[2...]),
                                       request: request, requestID: requestID, trace: trace)
            }
        }
        throw APIError.notFound("no route for \(request.method) /\(segments.joined(separator: "/"))")
    }

    private func engineRoute(
        type: String, mount mountName: String, rest: [Substring], request: HTTPRequest, requestID: String, trace: Trace
    ) throws -> HTTPResponse {
        // A running mount, or (sealed, or its engine failed) one known only from the plaintext routing copy,
        // which can still serve its public objects.
        let mount = mounts.mount(named: mountName)
        let routedType = mount?.record.type ?? mounts.routedType(of: mountName)
        guard routedType == type, let engine = mount?.engine ?? mounts.engines[type] else {
            throw APIError.notFound("no mount \(mountName) of type \(type)")
        }
        let target = MountRef(name: mountName, type: type, mount: mount)
        var methodMismatch = false
        for spec in engine.routes {
            guard let parameters = spec.match(rest) else { continue }
            guard spec.method == request.method else { methodMismatch = true; continue }
            if spec.object != nil {
                return try run(spec, request, requestID, parameters, target: target, trace: trace) { _ in
                    try publicObject(spec, parameters, target, accept: request.headers["accept"] ?? "")
                }
            }
            guard let mount else {
                if barrier.isSealed { throw APIError.sealed }
                // The reason is for administrators (GET /v1/sys/mounts), not for whoever asks before authenticating.
                throw APIError(503, "mount_unavailable", "mount \(mountName) is not running")
            }
            return try callEngine(mount: mount, spec: spec, request: request, requestID: requestID,
                                  parameters: parameters, body: request.body, trace: trace)
        }
        if methodMismatch { throw APIError(405, "method_not_allowed", "\(request.method) is not allowed here") }
        throw APIError.notFound("no route for \(request.method) \(type)/\(mountName)/\(rest.joined(separator: "/"))")
    }

    /// Answers an object route from the mount's public objects: the first content type named in Accept that
    /// is stored, else the route's first listed type that is stored.
    private func publicObject(_ spec: RouteSpec, _ parameters: [String: String], _ target: MountRef, accept: String)
        throws -> HTTPResponse
    {
        let name = RouteSpec.render(spec.object ?? "", parameters)
        guard Names.storageKeyProblem(Array(name.utf8)) == nil else { throw APIError.badRequest("invalid object name") }
        let stored = try barrier.storage.read { try $0.publicObjects(path: "engine/\(target.type)/\(target.name)/\(name)") }
        let wanted = accept.split(separator: ",").map { item in
            String((item.split(separator: ";").first ?? "").filter { $0 != " " && $0 != "\t" })
        }
        let offered = spec.objectTypes ?? []
        let choice = wanted.lazy.filter(offered.contains).compactMap { type in stored.first { $0.contentType == type } }.first
            ?? offered.lazy.compactMap { type in stored.first { $0.contentType == type } }.first
        guard let choice else { throw APIError.notFound("no object \(name)") }
        return HTTPResponse(status: 200, headers: [("Content-Type", choice.contentType)], body: choice.value)
    }

    /// Calls an engine route through the same steps as every other route.
    func callEngine(
        mount: Mount, spec: RouteSpec, request: HTTPRequest, requestID: String, parameters: [String: String],
        body: [UInt8], trace: Trace
    ) throws -> HTTPResponse {
        let target = MountRef(name: mount.record.name, type: mount.record.type, mount: mount)
        return try run(spec, request, requestID, parameters, target: target, trace: trace) { context in
            let caller = context.caller
            let prefix = "\(mount.record.type)/\(mount.record.name)/"
            return try mount.handle(
                route: spec, method: request.method, requestID: requestID, caller: caller, parameters: parameters,
                query: request.query, body: body, accept: request.headers["accept"] ?? "",
                authorize: { [policy] action, resource in
                    // Finer questions from the engine, always inside the mount's namespace.
                    guard ResourcePattern.segments(resource) != nil else { return false }
                    return policy.allows(caller, action: action, resource: prefix + resource)
                })
        }
    }

    /// The common steps after route match.
    private func run(
        _ spec: RouteSpec, _ request: HTTPRequest, _ requestID: String, _ parameters: [String: String],
        target: MountRef?, trace: Trace, _ handler: (Context) throws -> HTTPResponse
    ) throws -> HTTPResponse {
        trace.operation = target.map { "\($0.type).\(spec.operation)" } ?? "sys.\(spec.operation)"
        trace.mount = target?.name
        // Health and status are polled constantly and carry no caller: not audited.
        trace.audited = !(target == nil && (spec.operation == "health" || spec.operation == "status"))
        let resource = spec.renderResource(parameters).map { relative in
            target.map { "\($0.type)/\($0.name)/\(relative)" } ?? relative
        }
        trace.resource = resource

        // Sealed? Only routes declared available while sealed go on.
        if spec.sealed != true && barrier.isSealed { throw APIError.sealed }

        // Authenticate.
        var caller = Caller.anonymous
        var token: String?
        if spec.access != .public {
            guard let header = request.headers["authorization"], header.hasPrefix("Bearer ") else {
                throw APIError.unauthenticated
            }
            let presented = String(header.dropFirst(7))
            guard let found = try authenticate(presented) else { throw APIError.unauthenticated }
            caller = found
            token = presented
            trace.caller = found
        }

        // Authorize: admin routes need an admin; authenticated routes need policy for action and resource.
        switch spec.access {
        case .public, .token: break
        case .admin:
            guard caller.isAdmin else { throw APIError.forbidden }
        case .authenticated:
            guard let action = spec.action, let resource, policy.allows(caller, action: action, resource: resource) else {
                throw APIError.forbidden
            }
        }

        // Rate limits on engine operations: per identity, then per mount (audit #21).
        if let target, spec.object == nil {
            let time = now()
            if let wait = identityLimiter.take("user:" + caller.name, now: time) { throw RateLimited(retryAfter: wait) }
            if let wait = mountLimiter.take(target.name, now: time) { throw RateLimited(retryAfter: wait) }
        }

        // Audit the request before acting on it: no line, no action (fail closed). The generic engine route
        // only names another route, whose own pass through these steps writes the line.
        let delegates = target == nil && spec.operation == "engine-request"
        if trace.audited && !delegates {
            do {
                try auditLine("request", requestID, trace, status: nil, error: nil)
            } catch {
                logger.error("audit log write failed; refusing the request", ["request.id": requestID, "error": "\(error)"])
                throw APIError(503, "audit_unavailable", "the audit log cannot be written; the request was not performed")
            }
        }

        return try handler(Context(request: request, requestID: requestID, caller: caller, token: token,
                                   parameters: parameters, trace: trace))
    }

    /// Local tokens first (they carry a prefix); anything else goes to the identity provider, if any.
    func authenticate(_ token: String) throws -> Caller? {
        if token.hasPrefix(TokenStore.tokenPrefix) { return try tokens.lookup(token) }
        guard let introspection, token.utf8.count <= 4096, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            return nil
        }
        return try introspection.lookup(token)
    }

    func auditLine(_ type: String, _ requestID: String, _ trace: Trace, status: Int?, error: String?) throws {
        guard let audit else { return }
        try audit.append(AuditEvent(
            time: iso8601(now()), type: type, requestID: requestID,
            caller: trace.caller.name, roles: trace.caller.roles, mount: trace.mount, operation: trace.operation,
            resource: trace.resource, status: status, error: error, prev: ""))
    }

    /// Splits a raw request path on '/', then percent-decodes each segment on its own, so an encoded '/'
    /// or NUL can neither add a segment nor cut the path short. Refuses empty, "." and ".." segments
    /// (encoded or not), segments holding '/', and control bytes.
    static func pathSegments(_ path: String) throws -> [Substring] {
        guard path.hasPrefix("/"), path.utf8.count <= 2048 else { throw APIError.badRequest("invalid request path") }
        var segments: [Substring] = []
        for raw in path.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            guard let segment = percentDecode(raw) else {
                throw APIError.badRequest("the request path has a malformed percent escape")
            }
            guard segment.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7f }) else {
                throw APIError.badRequest("the request path contains control characters")
            }
            guard !segment.isEmpty, segment != ".", segment != "..", !segment.contains("/") else {
                throw APIError.badRequest("the request path has an empty, '.', '..' or encoded '/' segment")
            }
            segments.append(Substring(segment))
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
        public var object: String?
        public var objectTypes: [String]?

        enum CodingKeys: String, CodingKey {
            case method, path, operation, access, action, resource, sealed, object
            case objectTypes = "object_types"
        }
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
                    resource: spec.resource.map { "\(record.type)/\(record.name)/\($0)" }, sealed: spec.sealed ?? false,
                    object: spec.object, objectTypes: spec.objectTypes))
            }
        }
        return listing
    }

    // MARK: - Lifecycle used by routes and by the server

    /// Unseals the barrier, loads policy and starts every mount; resumes unfinished re-encryption.
    /// Failed attempts back off after the third.
    public func unseal(password: SecureBytes) throws {
        // Already unsealed: nothing to do, and nothing is started twice.
        guard barrier.isSealed else { return }
        if let wait = unsealBackoff.check(now: now()) { throw RateLimited(retryAfter: wait) }
        do {
            try barrier.unseal(password: password)
        } catch let error as BarrierError where error.code == .unsealFailed {
            unsealBackoff.failed(now: now())
            throw error
        }
        unsealBackoff.succeeded()
        try policy.load()
        try mounts.activateAll()
        for keyID in (try? barrier.keysNeedingReencryption()) ?? [] { scheduleReencryption(keyID) }
    }

    /// Stops every mount (waiting for their requests in flight), then seals the barrier.
    public func seal() {
        mounts.deactivateAll()
        policy.clear()
        tokens.clearCache()
        accounts.clearCache()
        barrier.seal()
    }

    /// Initialises the barrier and creates the first administrator account and a token for it, all in
    /// one storage transaction: a crash cannot leave a barrier nobody can administer.
    public func initialize(password: SecureBytes, parameters: Argon2Parameters, adminUsername: String,
                           adminPassword: String) throws -> (token: String, expiresAt: Int64) {
        let account = try accounts.record(username: adminUsername, password: adminPassword, roles: [.admin])
        let token = tokens.record(for: account.username)
        try barrier.initialize(password: password, parameters: parameters,
                               entries: [(account.path, account.value), (token.path, token.value)])
        return (token.token, token.expiresAt)
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

/// The mount a route belongs to: its name and type, and the running mount if there is one.
struct MountRef {
    let name: String
    let type: String
    let mount: Mount?
}

/// A rate limit or back-off refused the request: 429 with Retry-After.
struct RateLimited: Error {
    let retryAfter: Double
}
