import EngineABI
import FoundationEssentials
import Glibc
import MetacryptCrypto

/// An engine listed in the configuration.
public struct EngineConfig: Codable, Sendable {
    public var path: String
    /// Hex SHA-256 of the shared object; loading refuses any other file.
    public var sha256: String
    /// If set, the engine must report this type name.
    public var type: String?

    public init(path: String, sha256: String, type: String? = nil) {
        self.path = path
        self.sha256 = sha256
        self.type = type
    }
}

/// An engine the loader refused, and why: reported at start-up and by `GET /v1/sys/engines`.
public struct EngineRefusal: Codable, Sendable {
    public var path: String
    public var reason: String
}

/// A loaded engine: its C table and its validated route table.
public final class LoadedEngine: @unchecked Sendable {  // immutable after load; the table is static C data
    public let type: String
    public let version: String
    public let path: String
    public let routes: [RouteSpec]
    let table: UnsafePointer<mc_engine>

    init(type: String, version: String, path: String, routes: [RouteSpec], table: UnsafePointer<mc_engine>) {
        self.type = type
        self.version = version
        self.path = path
        self.routes = routes
        self.table = table
    }

    /// Copies and releases a buffer the engine returned.
    func take(_ pointer: UnsafeMutableRawPointer?, count: Int) -> [UInt8] {
        guard let pointer else { return [] }
        let bytes = Array(UnsafeRawBufferPointer(start: pointer, count: count))
        table.pointee.release(pointer)
        return bytes
    }

    /// Copies and releases a reason string the engine returned.
    func takeReason(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
        guard let pointer else { return nil }
        let text = String(cString: pointer)
        table.pointee.release(pointer)
        return text
    }
}

/// Loads engines: checks the file, its pin and its ABI before trusting any of its code's answers.
public enum EngineLoader {
    /// The smallest engine table the host understands (ABI 1.0: up to and including `release`).
    static let minimumEngineTableSize = MemoryLayout<mc_engine>.size

    public struct Failure: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// Loads one engine. Throws a ``Failure`` naming the file and the reason.
    public static func load(_ config: EngineConfig) throws -> LoadedEngine {
        let path = config.path
        func refuse(_ why: String) -> Failure { Failure(reason: "engine \(path) refused: \(why)") }

        // Open once, and check and hash the very file that will be loaded (no swap between check and load).
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw refuse("cannot open: \(String(cString: strerror(errno)))") }
        // Once dlopen has seen "/proc/self/fd/N", the descriptor stays open for the life of the process:
        // the dynamic loader knows a library by that name, and a reused number would hand a later engine
        // the earlier one's code. Engines are never unloaded, so nothing is lost.
        var keepOpen = false
        defer { if !keepOpen { close(fd) } }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw refuse("not a regular file") }
        guard info.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw refuse("the file is writable by group or others (mode \(String(info.st_mode & 0o777, radix: 8)))")
        }
        guard info.st_uid == 0 || info.st_uid == geteuid() else {
            throw refuse("the file is owned by uid \(info.st_uid), neither root nor the service user")
        }

        // Compare the pin before a single byte of the engine runs.
        let digest: [UInt8]
        do {
            digest = try hashFile(fd: fd, size: Int(info.st_size))
        } catch let failure as Failure {
            throw refuse(failure.reason)
        }
        guard let pin = Hex.decode(config.sha256), pin.count == SHA256.size else {
            throw refuse("the configured sha256 pin is not 64 hex digits")
        }
        guard constantTimeEquals(digest, pin) else {
            throw refuse("SHA-256 \(Hex.encode(digest)) does not match the pin \(config.sha256.lowercased())")
        }

        // Load it; engines are never unloaded (RTLD_NODELETE), and their symbols stay private.
        keepOpen = true
        guard let handle = dlopen("/proc/self/fd/\(fd)", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            throw refuse("dlopen failed: \(String(cString: dlerror()))")
        }
        guard let symbol = dlsym(handle, MC_ENGINE_ENTRY_SYMBOL) else {
            throw refuse("it does not export the entry symbol \(MC_ENGINE_ENTRY_SYMBOL)")
        }
        let entry = unsafeBitCast(symbol, to: mc_engine_entry_fn.self)
        guard let table = entry(UInt32(MC_ABI_VERSION), HostABI.table) else {
            throw refuse("its entry point declined this host (host ABI \(abiString(UInt32(MC_ABI_VERSION))))")
        }

        // Check the table's ABI version and size before reading any member.
        let version = table.pointee.abi_version
        guard version >> 16 == UInt32(MC_ABI_VERSION_MAJOR) else {
            throw refuse("it was built for ABI \(abiString(version)); this host speaks ABI \(abiString(UInt32(MC_ABI_VERSION)))")
        }
        guard Int(table.pointee.size) >= minimumEngineTableSize else {
            throw refuse("its engine table is \(table.pointee.size) bytes, smaller than ABI 1.0's \(minimumEngineTableSize)")
        }
        let t = table.pointee
        guard let namePointer = t.name, t.describe != nil, t.mount_init != nil, t.unseal != nil, t.seal != nil,
              t.handle != nil, t.mount_free != nil, t.release != nil
        else { throw refuse("its engine table has a NULL entry") }
        let type = String(cString: namePointer)
        guard Names.isValidMountName(type), !type.contains("_"), !["sys", "auth", "engine", "system"].contains(type) else {
            throw refuse("invalid engine name \(type): lowercase letters, digits and '-', and not sys, auth, engine or system")
        }
        if let expected = config.type, expected != type {
            throw refuse("it reports type \(type), the configuration expects \(expected)")
        }

        // Read and validate the route table.
        let engine = LoadedEngine(
            type: type, version: t.version.map { String(cString: $0) } ?? "", path: path, routes: [], table: table)
        var json: UnsafeMutablePointer<UInt8>?
        var length = 0
        var reason: UnsafeMutablePointer<CChar>?
        let rc = t.describe(&json, &length, &reason)
        let body = engine.take(json, count: length)
        let why = engine.takeReason(reason)
        guard rc == MC_OK else { throw refuse("describe failed (\(rc)): \(why ?? "no reason given")") }
        let routeTable: RouteTable
        do {
            routeTable = try JSONDecoder().decode(RouteTable.self, from: Data(body))
        } catch {
            throw refuse("its route table is not valid JSON of the documented shape")
        }
        var seen = Set<String>()
        for route in routeTable.routes {
            if let problem = route.problem() { throw refuse(problem) }
            guard seen.insert(route.operation).inserted else { throw refuse("duplicate operation \(route.operation)") }
        }
        return LoadedEngine(type: type, version: engine.version, path: path, routes: routeTable.routes, table: table)
    }

    /// SHA-256 of a file's contents.
    public static func hashFile(path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(reason: "cannot open \(path)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw Failure(reason: "cannot stat \(path)") }
        return try hashFile(fd: fd, size: Int(info.st_size))
    }

    static func hashFile(fd: Int32, size: Int) throws -> [UInt8] {
        guard size >= 0, size <= 512 << 20 else { throw Failure(reason: "engine file size \(size) is unreasonable") }
        var contents = [UInt8](repeating: 0, count: size)
        var offset = 0
        while offset < size {
            let n = contents.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + offset, size - offset, off_t(offset)) }
            guard n > 0 else { throw Failure(reason: "cannot read the engine file") }
            offset += n
        }
        return SHA256.hash(contents)
    }

    static func abiString(_ v: UInt32) -> String { "\(v >> 16).\(v & 0xffff)" }
}
