import EngineABI
import FoundationEssentials
import Glibc
import Synchronization

/// A mount as persisted in the barrier (system key) at `sys/mounts/<name>`.
public struct MountRecord: Codable, Sendable, Equatable {
    public var name: String
    public var type: String
    public var createdAt: Int64
    /// Engine-specific configuration, a JSON object, passed to `mount_init`.
    public var config: String

    enum CodingKeys: String, CodingKey {
        case name, type, config
        case createdAt = "created_at"
    }
}

/// A reader-writer lock that prefers writers, so sealing is never starved by a stream of requests.
final class ReadWriteLock: @unchecked Sendable {
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)

    init() {
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withReadLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withWriteLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// A live mount: its engine, its context and the engine's state while unsealed.
public final class Mount: @unchecked Sendable {  // `state` is guarded by `lock`
    public let record: MountRecord
    let engine: LoadedEngine
    let context: MountContext
    private let contextPointer: UnsafeMutableRawPointer
    let lock = ReadWriteLock()
    private var state: UnsafeMutableRawPointer?
    private var active = false

    init(record: MountRecord, engine: LoadedEngine, context: MountContext) {
        self.record = record
        self.engine = engine
        self.context = context
        self.contextPointer = Unmanaged.passRetained(context).toOpaque()
    }

    deinit {
        Unmanaged<MountContext>.fromOpaque(contextPointer).release()
    }

    /// mount_init then unseal.
    func activate() throws {
        try lock.withWriteLock {
            guard !active else { return }
            var mount = mc_mount(size: UInt32(MemoryLayout<mc_mount>.size), name: nil, type: nil, config: nil,
                                 config_len: 0, host_mount: contextPointer)
            var newState: UnsafeMutableRawPointer?
            var reason: UnsafeMutablePointer<CChar>?
            let t = engine.table.pointee
            let rc: Int32 = record.name.withCString { name in
                record.type.withCString { type in
                    Array(record.config.utf8).withUnsafeBufferPointer { config in
                        mount.name = name
                        mount.type = type
                        mount.config = config.baseAddress
                        mount.config_len = config.count
                        return t.mount_init(&mount, &newState, &reason)
                    }
                }
            }
            if rc != MC_OK {
                throw APIError(500, "engine_failed", "engine \(engine.type) could not initialise mount \(record.name): "
                    + (engine.takeReason(reason) ?? "code \(rc)"))
            }
            let unsealRC = t.unseal(newState, &reason)
            if unsealRC != MC_OK {
                t.mount_free(newState)
                throw APIError(500, "engine_failed", "engine \(engine.type) could not unseal mount \(record.name): "
                    + (engine.takeReason(reason) ?? "code \(unsealRC)"))
            }
            state = newState
            active = true
        }
    }

    /// seal then mount_free; waits for requests in flight on this mount.
    func deactivate() {
        lock.withWriteLock {
            guard active else { return }
            engine.table.pointee.seal(state)
            engine.table.pointee.mount_free(state)
            state = nil
            active = false
        }
    }

    /// Calls the engine's `handle` under the mount's read lock.
    func handle(
        route: RouteSpec, method: String, requestID: String, caller: Caller, parameters: [String: String],
        query: [String: String], body: [UInt8], accept: String, authorize: @escaping (String, String) -> Bool
    ) throws -> HTTPResponse {
        try lock.withReadLock {
            guard active else { throw APIError.sealed }
            let requestContext = EngineRequestContext(authorize: authorize)
            let params = JSONWriter.stringMap(parameters)
            let queryJSON = JSONWriter.stringMap(query)
            let roles = caller.roles.map { strdup($0) }
            defer { roles.forEach { free($0) } }
            var rolePointers = roles.map { UnsafePointer($0) }

            var response = mc_response(size: UInt32(MemoryLayout<mc_response>.size), status: 0, body: nil, body_len: 0,
                                       content_type: nil)
            var reason: UnsafeMutablePointer<CChar>?
            var rc = MC_ERR_INTERNAL
            withExtendedLifetime(requestContext) {
                caller.name.withCString { name in
                    rolePointers.withUnsafeMutableBufferPointer { rolesBuffer in
                        var mcCaller = mc_caller(
                            size: UInt32(MemoryLayout<mc_caller>.size), name: name, roles: rolesBuffer.baseAddress,
                            role_count: rolesBuffer.count, flags: caller.isAdmin ? UInt32(MC_CALLER_ADMIN) : 0)
                        route.operation.withCString { operation in
                            method.withCString { methodC in
                                requestID.withCString { rid in
                                    accept.withCString { acceptC in
                                        params.withUnsafeBufferPointer { p in
                                            queryJSON.withUnsafeBufferPointer { q in
                                                body.withUnsafeBufferPointer { b in
                                                  withUnsafePointer(to: &mcCaller) { callerPointer in
                                                    var request = mc_request(
                                                        size: UInt32(MemoryLayout<mc_request>.size),
                                                        operation: operation, method: methodC, request_id: rid,
                                                        caller: callerPointer, params: p.baseAddress, params_len: p.count,
                                                        query: q.baseAddress, query_len: q.count,
                                                        body: b.baseAddress, body_len: b.count, accept: acceptC,
                                                        host_request: Unmanaged.passUnretained(requestContext).toOpaque())
                                                    rc = engine.table.pointee.handle(state, &request, &response, &reason)
                                                  }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }

            let responseBody = engine.take(response.body, count: response.body_len)
            let message = engine.takeReason(reason)
            guard rc == MC_OK else { throw Mount.apiError(rc, message) }
            let status = response.status == 0 ? 200 : Int(response.status)
            guard (200...399).contains(status) else {
                throw APIError(500, "engine_failed", "engine \(engine.type) answered success with status \(status)")
            }
            let contentType = response.content_type.map { String(cString: $0) } ?? "application/json"
            return HTTPResponse(status: status, headers: [("Content-Type", contentType)], body: responseBody)
        }
    }

    static func apiError(_ code: Int32, _ message: String?) -> APIError {
        let text = message ?? "no reason given"
        switch code {
        case MC_ERR_INVALID: return APIError(400, "invalid_request", text)
        case MC_ERR_NOT_FOUND: return APIError(404, "not_found", text)
        case MC_ERR_EXISTS: return APIError(409, "exists", text)
        case MC_ERR_DENIED: return APIError(403, "permission_denied", text)
        case MC_ERR_SEALED: return .sealed
        case MC_ERR_TOO_LARGE: return APIError(413, "too_large", text)
        case MC_ERR_UNSUPPORTED: return APIError(400, "unsupported", text)
        case MC_ERR_CONFLICT: return APIError(409, "conflict", text)
        case MC_ERR_LIMIT: return APIError(429, "rate_limited", text)
        case MC_ERR_BAD_KEY: return APIError(400, "invalid_request", text)
        default: return APIError(500, "engine_failed", "the engine failed: \(text)")
        }
    }
}

/// The mount table: which engine serves which mount.
public final class Mounts: Sendable {
    static let recordPrefix = "sys/mounts/"
    /// Names a mount may not take: they would be ambiguous in host routes or key ids.
    static let reservedNames: Set<String> = ["system", "sys", "auth", "engine"]

    let barrier: Barrier
    let engines: [String: LoadedEngine]
    let logger: Logger
    private let mounts = Locked<[String: Mount]>([:])
    /// Mounts whose engine is not loaded or failed to start: kept, reported, not served.
    private let unavailable = Locked<[String: String]>([:])
    /// Name to engine type, from the plaintext copy: routes public objects while sealed.
    private let routing = Locked<[String: String]>([:])
    private let changes = Locked<Void>(())

    init(barrier: Barrier, engines: [String: LoadedEngine], logger: Logger) {
        self.barrier = barrier
        self.engines = engines
        self.logger = logger
        let known = (try? barrier.storage.read { try $0.mountRouting() }) ?? [:]
        routing.withLock { $0 = known }
    }

    func mount(named name: String) -> Mount? { mounts.withLock { $0[name] } }

    /// The engine type of a mount, from the plaintext routing copy (available while sealed).
    func routedType(of name: String) -> String? { routing.withLock { $0[name] } }

    public func list() -> [MountRecord] { mounts.withLock { $0.values.map(\.record) }.sorted { $0.name < $1.name } }

    public func unavailableMounts() -> [String: String] { unavailable.withLock { $0 } }

    /// After unseal: start every stored mount that is not running. A mount whose engine is missing or
    /// fails is reported and skipped; the others still start. Also brings the plaintext routing copy
    /// in line with the barrier's table, and removes keys of mounts whose record is gone (a deletion
    /// interrupted by a crash).
    func activateAll() throws {
        try changes.withLock { _ in
            var records: [MountRecord] = []
            for path in try barrier.list(prefix: Self.recordPrefix) {
                guard let bytes = try barrier.get(path) else { continue }
                records.append(try JSONDecoder().decode(MountRecord.self, from: Data(bytes.unsafeArray())))
            }

            // Reconcile the routing copy and orphaned mount keys with the records.
            let names = Set(records.map(\.name))
            try barrier.storage.write { tx in
                for (name, _) in try tx.mountRouting() where !names.contains(name) { try tx.deleteMountRouting(name: name) }
                for record in records { try tx.putMountRouting(name: record.name, type: record.type) }
            }
            routing.withLock { $0 = Dictionary(records.map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a }) }
            for keyID in barrier.keyIDs() where keyID.hasPrefix("mount:") && !names.contains(String(keyID.dropFirst(6))) {
                logger.warning("removing the key of a mount that no longer exists", ["key.id": keyID])
                try barrier.destroyKey(keyID)
            }

            for record in records where mount(named: record.name) == nil {
                guard let engine = engines[record.type] else {
                    unavailable.withLock { $0[record.name] = "engine type \(record.type) is not loaded" }
                    logger.error("mount not started: its engine is not loaded",
                                 ["mount.name": record.name, "engine.type": record.type])
                    continue
                }
                let mount = Mount(record: record, engine: engine, context: context(record))
                do {
                    try mount.activate()
                    mounts.withLock { $0[record.name] = mount }
                    unavailable.withLock { $0[record.name] = nil }
                } catch {
                    unavailable.withLock { $0[record.name] = "\(error)" }
                    logger.error("mount not started", ["mount.name": record.name, "error": "\(error)"])
                }
            }
        }
    }

    /// Before seal: stop every mount, waiting for requests in flight on each.
    func deactivateAll() {
        changes.withLock { _ in
            let all = mounts.withLock { current in
                defer { current.removeAll() }
                return Array(current.values)
            }
            all.forEach { $0.deactivate() }
        }
    }

    /// Creates a mount: its DEK and its record in one transaction, then the engine's state. Undone if the
    /// engine refuses.
    public func create(name: String, type: String, config: String = "{}") throws -> MountRecord {
        guard Names.isValidMountName(name), !Self.reservedNames.contains(name) else {
            throw APIError.badRequest(
                "invalid mount name \(name): use 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit, "
                    + "and none of \(Self.reservedNames.sorted().joined(separator: ", "))")
        }
        guard let engine = engines[type] else { throw APIError.badRequest("no engine of type \(type) is loaded") }
        return try changes.withLock { _ in
            guard mounts.withLock({ $0[name] }) == nil, try barrier.get(Self.recordPrefix + name) == nil else {
                throw APIError(409, "exists", "a mount named \(name) exists")
            }
            let record = MountRecord(name: name, type: type, createdAt: Int64(Date().timeIntervalSince1970), config: config)
            let keyID = MountContext.keyID(for: name)
            if barrier.keyIDs().contains(keyID) { try barrier.destroyKey(keyID) }  // left by an interrupted deletion
            try barrier.createKey(keyID, record: (Self.recordPrefix + name, JSON.encode(record)))
            do {
                try barrier.storage.write { try $0.putMountRouting(name: name, type: type) }
                routing.withLock { $0[name] = type }
                let mount = Mount(record: record, engine: engine, context: context(record))
                try mount.activate()
                mounts.withLock { $0[name] = mount }
                return record
            } catch {
                try? remove(record)
                throw error
            }
        }
    }

    /// Removes a mount: its record, entries and DEK in one transaction, then its public objects.
    public func delete(name: String) throws {
        try changes.withLock { _ in
            guard let bytes = try barrier.get(Self.recordPrefix + name) else {
                throw APIError.notFound("no mount named \(name)")
            }
            let record = try JSONDecoder().decode(MountRecord.self, from: Data(bytes.unsafeArray()))
            if let mount = mounts.withLock({ $0.removeValue(forKey: name) }) { mount.deactivate() }
            try remove(record)
            unavailable.withLock { $0[name] = nil }
        }
    }

    private func remove(_ record: MountRecord) throws {
        try barrier.destroyKey(MountContext.keyID(for: record.name), deleting: [Self.recordPrefix + record.name]) { tx in
            try tx.deletePublicObjects(prefix: "engine/\(record.type)/\(record.name)/")
            try tx.deleteMountRouting(name: record.name)
        }
        routing.withLock { $0[record.name] = nil }
    }

    private func context(_ record: MountRecord) -> MountContext {
        MountContext(mountName: record.name, type: record.type, barrier: barrier,
                     logger: logger.with(label: "engine.\(record.type)"))
    }
}
