import CSystem
import FoundationEssentials
import Glibc
import MetacryptCrypto

/// The server's configuration file (JSON). docs/operator.md documents every field.
public struct ServerConfig: Codable, Sendable {
    public struct TLS: Codable, Sendable {
        public var certificate: String
        public var key: String
    }

    public struct Limits: Codable, Sendable {
        public var maxBodyBytes: Int?
        public var maxHeaderBytes: Int?
        public var connectionTimeoutSeconds: Int?
        public var maxConnections: Int?
        public var threads: Int?

        enum CodingKeys: String, CodingKey {
            case maxBodyBytes = "max_body_bytes"
            case maxHeaderBytes = "max_header_bytes"
            case connectionTimeoutSeconds = "connection_timeout_seconds"
            case maxConnections = "max_connections"
            case threads
        }
    }

    public struct Seal: Codable, Sendable {
        /// Argon2id cost used by `init` when its request names none; afterwards the stored parameters apply.
        public var argon2: Argon2Parameters?
    }

    public struct Auth: Codable, Sendable {
        /// Argon2id cost of account password hashes (the cost of a login).
        public var passwordArgon2: Argon2Parameters?
        public var tokenTTLSeconds: Int64?
        public var introspection: IntrospectionProvider.Configuration?

        enum CodingKeys: String, CodingKey {
            case introspection
            case passwordArgon2 = "password_argon2"
            case tokenTTLSeconds = "token_ttl_seconds"
        }
    }

    public struct StorageSettings: Codable, Sendable {
        /// "full" (default) or "normal": see ``SQLiteStorage/Durability``.
        public var durability: SQLiteStorage.Durability?
    }

    public struct RateLimits: Codable, Sendable {
        public var identity: RateLimiter.Limit?
        public var mount: RateLimiter.Limit?
    }

    public var listen: String?
    public var dataDir: String?
    public var tls: TLS?
    public var limits: Limits?
    public var seal: Seal?
    public var auth: Auth?
    public var rateLimits: RateLimits?
    public var storage: StorageSettings?
    public var audit: AuditLog.Configuration?
    public var engines: [EngineConfig]?
    public var logLevel: String?

    enum CodingKeys: String, CodingKey {
        case listen, tls, limits, seal, auth, audit, engines, storage
        case dataDir = "data_dir"
        case logLevel = "log_level"
        case rateLimits = "rate_limits"
    }

    public init() {}

    public static func load(path: String) throws -> ServerConfig {
        let bytes = try readFile(path)
        do {
            return try JSONDecoder().decode(ServerConfig.self, from: Data(bytes))
        } catch {
            throw ServerError("config \(path) is not valid: \(error)")
        }
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Command-line options of `metacrypt server`.
public struct ServerOptions: Sendable {
    public var dev = false
    public var configPath: String?
    public var listen: String?
    public var dataDir: String?

    public init() {}
}

/// Runs the server until SIGTERM or SIGINT.
public enum Server {
    /// The engines `--dev` mounts when it finds them beside the binary, by file name.
    static let bundledEngines = ["libTransit.so", "libCA.so", "libSSHCA.so", "libUser.so"]

    public static func run(_ options: ServerOptions) throws -> Never {
        // Block the signals we handle before any thread starts, so every thread inherits the mask and the
        // main thread alone receives them through sigwait.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)
        // Argon2id allocates tens of MiB per hash. A fixed mmap threshold keeps such blocks out of the heap,
        // so they go back to the system when freed (glibc's default threshold rises after the first large
        // free and then keeps them resident for the life of the process).
        _ = mc_set_mmap_threshold(1 << 20)

        var config = try options.configPath.map(ServerConfig.load(path:)) ?? ServerConfig()
        if let listen = options.listen { config.listen = listen }
        if let dataDir = options.dataDir { config.dataDir = dataDir }
        let logger = Logger(label: "metacrypt", level: logLevel(config.logLevel))

        // Storage location.
        let dataDir: String
        if let configured = config.dataDir {
            dataDir = configured
            try makeDirectory(dataDir)
        } else if options.dev {
            var template = Array("/tmp/metacrypt-dev-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw ServerError("cannot create a temporary data folder") }
            dataDir = String(cString: made)
        } else {
            throw ServerError("no data folder: set data_dir in the config or pass --data DIR")
        }

        // TLS material.
        let certificatePath: String
        let keyPath: String
        let caPath: String?
        if let tls = config.tls {
            (certificatePath, keyPath, caPath) = (tls.certificate, tls.key, nil)
        } else if options.dev {
            (certificatePath, keyPath, caPath) = try developmentTLS(in: dataDir)
        } else {
            throw ServerError("no TLS certificate: set tls.certificate and tls.key in the config")
        }

        // Engines: each listed one, checked and pinned; in dev mode also those beside the binary.
        var engineConfigs = config.engines ?? []
        if options.dev {
            let directory = executableDirectory()
            for file in bundledEngines where access(directory + "/" + file, R_OK) == 0 {
                let path = directory + "/" + file
                guard !engineConfigs.contains(where: { $0.path == path }) else { continue }
                engineConfigs.append(
                    EngineConfig(path: path, sha256: Hex.encode(try EngineLoader.hashFile(path: path))))
            }
        }
        var engines: [LoadedEngine] = []
        var refusals: [EngineRefusal] = []
        for engineConfig in engineConfigs {
            do {
                var started = timespec()
                clock_gettime(CLOCK_MONOTONIC, &started)
                let engine = try EngineLoader.load(engineConfig)
                var finished = timespec()
                clock_gettime(CLOCK_MONOTONIC, &finished)
                let loadMilliseconds =
                    Double(finished.tv_sec - started.tv_sec) * 1e3
                    + Double(finished.tv_nsec - started.tv_nsec) / 1e6
                if engines.contains(where: { $0.type == engine.type }) {
                    throw EngineLoader.Failure(
                        reason: "engine \(engineConfig.path) refused: type \(engine.type) is already loaded")
                }
                engines.append(engine)
                logger.info(
                    "engine loaded",
                    [
                        "engine.type": engine.type, "engine.path": engine.path,
                        "load_ms": format3(loadMilliseconds),
                    ])
            } catch {
                refusals.append(EngineRefusal(path: engineConfig.path, reason: "\(error)"))
                logger.error("\(error)")
            }
        }

        // The barrier and the API.
        let storage = try SQLiteStorage(path: dataDir + "/metacrypt.db", durability: config.storage?.durability ?? .full)
        let barrier = Barrier(storage: storage)
        var settings = API.Settings()
        if let v = config.seal?.argon2 {
            if let problem = v.problem() { throw ServerError("seal.argon2: \(problem)") }
            settings.sealArgon2 = v
        }
        if let v = config.auth?.passwordArgon2 {
            if let problem = v.problem() { throw ServerError("auth.password_argon2: \(problem)") }
            settings.passwordArgon2 = v
        }
        if let v = config.auth?.tokenTTLSeconds { settings.tokenTTLSeconds = max(60, v) }
        if let v = config.rateLimits?.identity { settings.identityLimit = v }
        if let v = config.rateLimits?.mount { settings.mountLimit = v }
        let introspection = try config.auth?.introspection.map {
            try IntrospectionProvider(configuration: $0, logger: logger)
        }
        let auditConfig = config.audit ?? AuditLog.Configuration()
        let audit = try AuditLog(
            path: auditConfig.path ?? dataDir + "/audit.log", maxBytes: auditConfig.maxBytes ?? 100 << 20,
            keepFiles: auditConfig.keepFiles ?? 10, fsync: auditConfig.fsync ?? false)
        let api = API(
            barrier: barrier, engines: engines, engineRefusals: refusals, logger: logger, settings: settings,
            introspection: introspection, audit: audit)

        // The HTTPS listener.
        var http = HTTPServer.Configuration()
        let (host, port) = try parseListen(config.listen ?? "127.0.0.1:8443")
        http.host = host
        http.port = port
        if let limits = config.limits {
            if let v = limits.maxBodyBytes { http.maxBodyBytes = v }
            if let v = limits.maxHeaderBytes { http.headerMemoryBytes = v }
            if let v = limits.connectionTimeoutSeconds { http.connectionTimeoutSeconds = v }
            if let v = limits.maxConnections { http.maxConnections = v }
            if let v = limits.threads { http.threads = v }
        }
        let server = HTTPServer(configuration: http) { api.handle($0) }
        try loadCertificate(server, certificatePath, keyPath)
        let boundPort = try server.start()
        let address = "https://\(host.contains(":") ? "[\(host)]" : host):\(boundPort)"
        logger.info("listening", ["address": address])

        // Dev mode: initialise, unseal and mount everything, then say how to reach it.
        if options.dev {
            let token = try developmentSetUp(api: api, dataDir: dataDir, argon2: config.seal?.argon2, logger: logger)
            let text = { (file: String) in String(decoding: try readFile(dataDir + "/" + file), as: UTF8.self) }
            print("# Metacrypt development server. Data: \(dataDir)")
            print("# Copy these lines into your shell (each is a plain assignment; prefix with export):")
            print("METACRYPT_ADDR=\(address)")
            if let caPath { print("METACRYPT_CACERT=\(caPath)") }
            print("METACRYPT_TOKEN=\(token)")
            print("# Administrator account, and the unseal password (development only; kept in \(dataDir)):")
            print("METACRYPT_DEV_USERNAME=admin")
            print("METACRYPT_DEV_ADMIN_PASSWORD=\(try text("dev-admin-password"))")
            print("METACRYPT_DEV_PASSWORD=\(try text("dev-password"))")
            fflush(nil)
        }

        // Serve until told to stop; SIGHUP reloads the certificate without dropping the listener (audit #78).
        while true {
            var received: Int32 = 0
            sigwait(&signals, &received)
            if received == SIGHUP {
                do {
                    try loadCertificate(server, certificatePath, keyPath)
                    logger.info("TLS certificate reloaded", ["path": certificatePath])
                } catch {
                    logger.error("TLS reload failed; keeping the current certificate", ["error": "\(error)"])
                }
                continue
            }
            logger.info("stopping: no new connections, finishing requests in flight")
            server.quiesce()
            if !server.drain(timeoutSeconds: 30) {
                logger.warning("requests still running after 30 s; stopping anyway")
            }
            api.seal()
            server.stop()
            logger.info("sealed and stopped")
            exit(0)
        }
    }

    static func loadCertificate(_ server: HTTPServer, _ certificatePath: String, _ keyPath: String) throws {
        var key = try readFile(keyPath)
        defer { secureWipe(&key) }
        try server.setCertificate(chainPEM: try readFile(certificatePath), keyPEM: key)
    }

    /// Writes a development CA and server certificate into `dir` (once) and returns their paths.
    static func developmentTLS(in dir: String) throws -> (String, String, String?) {
        let (cert, key, ca) = (dir + "/tls.crt", dir + "/tls.key", dir + "/ca.pem")
        if access(cert, R_OK) != 0 || access(key, R_OK) != 0 {
            let tls = try DevelopmentTLS.generate(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"])
            try writeFile(ca, Array(tls.caCertificatePEM.utf8), mode: 0o644)
            try writeFile(cert, Array(tls.chainPEM.utf8), mode: 0o644)
            try writeFile(key, tls.privateKeyPEM.unsafeArray(), mode: 0o600)
        }
        return (cert, key, ca)
    }

    /// Initialises (first run) or unseals (later runs) with passwords kept in the data folder, mounts every
    /// loaded engine under its type name on first run, and returns a fresh administrator token.
    static func developmentSetUp(api: API, dataDir: String, argon2: Argon2Parameters?, logger: Logger) throws -> String
    {
        let passwordPath = dataDir + "/dev-password"
        let adminPath = dataDir + "/dev-admin-password"
        if try api.barrier.status().initialized {
            try api.unseal(password: SecureBytes(copying: try readFile(passwordPath)))
            return try api.tokens.create(for: "admin").token
        }
        let password = Base64URL.encode(randomBytes(18))
        let adminPassword = Base64URL.encode(randomBytes(18))
        try writeFile(passwordPath, Array(password.utf8), mode: 0o600)
        try writeFile(adminPath, Array(adminPassword.utf8), mode: 0o600)
        let (token, _) = try api.initialize(
            password: SecureBytes(copying: Array(password.utf8)),
            parameters: argon2 ?? api.sealArgon2, adminUsername: "admin",
            adminPassword: adminPassword)
        for type in api.loadedEngineTypes {
            _ = try api.createMount(name: type, type: type)
            logger.info("mounted", ["mount.name": type])
        }
        return token
    }

    static func parseListen(_ listen: String) throws -> (String, UInt16) {
        guard let colon = listen.lastIndex(of: ":"), let port = UInt16(listen[listen.index(after: colon)...]) else {
            throw ServerError("listen address \(listen) is not HOST:PORT")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    static func logLevel(_ name: String?) -> Logger.Level {
        switch name {
        case "debug": .debug
        case "warn", "warning": .warning
        case "error": .error
        default: .info
        }
    }

    static func executableDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
        guard n > 0 else { return "." }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    }
}

/// A number with three decimals, for log fields.
func format3(_ value: Double) -> String {
    let thousandths = Int((value * 1000).rounded())
    let fraction = String(abs(thousandths) % 1000)
    return "\(thousandths / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
}

/// Reads a whole file.
public func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ServerError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { throw ServerError("cannot read \(path)") }
        if n == 0 { break }
        out += chunk[0..<n]
    }
    secureWipe(&chunk)
    return out
}

/// Writes a whole file atomically (temporary file, fsync, rename) with the given mode.
public func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw ServerError("cannot write \(path): \(String(cString: strerror(errno)))") }
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
        guard n > 0 else {
            close(fd)
            throw ServerError("cannot write \(path)")
        }
        offset += n
    }
    fchmod(fd, mode)
    fsync(fd)
    close(fd)
    guard rename(temporary, path) == 0 else { throw ServerError("cannot rename into \(path)") }
}

func makeDirectory(_ path: String) throws {
    if mkdir(path, 0o700) != 0 && errno != EEXIST {
        throw ServerError("cannot create \(path): \(String(cString: strerror(errno)))")
    }
}
