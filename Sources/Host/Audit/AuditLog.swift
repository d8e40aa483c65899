import FoundationEssentials
import Glibc
import MetacryptCrypto
import Synchronization

/// One audit event. Never carries secrets: no bodies, keys, plaintext, passwords or tokens.
public struct AuditEvent: Codable, Sendable {
    public var time: String
    /// "request" before the handler runs; "response" with the outcome.
    public var type: String
    public var requestID: String
    public var caller: String
    public var roles: [String]
    public var mount: String?
    public var operation: String
    public var resource: String?
    public var status: Int?
    public var error: String?
    /// SHA-256 (hex) of the previous line, chaining the log.
    public var prev: String

    enum CodingKeys: String, CodingKey {
        case time, type, caller, roles, mount, operation, resource, status, error, prev
        case requestID = "request_id"
    }
}

/// An append-only, hash-chained JSON-lines audit log with size-based rotation (audit #7).
///
/// Each line carries the SHA-256 of the line before it, across rotated files too, so that editing,
/// deleting or reordering a line breaks the chain at the next line. `metacrypt audit verify` checks it.
public final class AuditLog: Sendable {
    public static let genesis = String(repeating: "0", count: 64)

    public struct Configuration: Codable, Sendable {
        public var path: String?
        /// Rotate when the file reaches this size (default 100 MiB).
        public var maxBytes: Int?
        /// Rotated files kept (default 10).
        public var keepFiles: Int?
        /// fsync after every line (default false: the line is written before the response, but may sit
        /// in the page cache for a few seconds).
        public var fsync: Bool?

        enum CodingKeys: String, CodingKey {
            case path, fsync
            case maxBytes = "max_bytes"
            case keepFiles = "keep_files"
        }
    }

    private struct State {
        var fd: Int32
        var size: Int
        var previous: String
    }

    let path: String
    let maxBytes: Int
    let keepFiles: Int
    let syncEveryLine: Bool
    private let state: Locked<State>

    public init(path: String, maxBytes: Int = 100 << 20, keepFiles: Int = 10, fsync: Bool = false) throws {
        self.path = path
        self.maxBytes = max(4096, maxBytes)
        self.keepFiles = max(1, keepFiles)
        self.syncEveryLine = fsync
        let previous = try Self.lastLineHash(path) ?? Self.lastLineHash(path + ".1") ?? Self.genesis
        let fd = try Self.open(path)
        var info = stat()
        fstat(fd, &info)
        state = Locked(State(fd: fd, size: Int(info.st_size), previous: previous))
    }

    deinit { state.withLock { if $0.fd >= 0 { _ = close($0.fd) } } }

    /// Appends an event (its `prev` is filled in). Throws if the line cannot be written: the caller must
    /// then fail the request.
    public func append(_ event: AuditEvent) throws {
        try state.withLock { s in
            // After a failed rotation there is no open file: try again, and refuse while it fails.
            if s.fd < 0 {
                s.fd = try Self.open(path)
                s.size = 0
            }
            var event = event
            event.prev = s.previous
            let line = event.jsonLine()
            let bytes = line + [UInt8(ascii: "\n")]
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { write(s.fd, $0.baseAddress! + offset, bytes.count - offset) }
                guard n > 0 else { throw ServerError("audit log \(path) cannot be written: \(String(cString: strerror(errno)))") }
                offset += n
            }
            if syncEveryLine, fsync(s.fd) != 0 { throw ServerError("audit log \(path) cannot be synced") }
            s.previous = Hex.encode(SHA256.hash(line))
            s.size += bytes.count
            if s.size >= maxBytes { try rotate(&s) }
        }
    }

    private func rotate(_ s: inout State) throws {
        fsync(s.fd)
        close(s.fd)
        // Never keep a closed number: the next accepted socket could get it, and audit lines would go there.
        s.fd = -1
        unlink("\(path).\(keepFiles)")
        for n in stride(from: keepFiles - 1, through: 1, by: -1) { rename("\(path).\(n)", "\(path).\(n + 1)") }
        rename(path, path + ".1")
        s.fd = try Self.open(path)
        s.size = 0
    }

    private static func open(_ path: String) throws -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServerError("cannot open audit log \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    /// The hash of the last line of `path`, nil if the file is missing or empty.
    static func lastLineHash(_ path: String) throws -> String? {
        guard access(path, R_OK) == 0 else { return nil }
        let bytes = try readFile(path)
        let lines = bytes.split(separator: UInt8(ascii: "\n"))
        guard let last = lines.last else { return nil }
        return Hex.encode(SHA256.hash(Array(last)))
    }

    public struct Verification: Sendable {
        public var lines: Int
        /// Nil if the chain holds; otherwise where and why it breaks.
        public var failure: String?
    }

    /// Checks the chain across `files` (oldest first). The first line may continue an older file that
    /// is gone; every later line must carry the hash of the line before it.
    public static func verify(files: [String]) throws -> Verification {
        var previous: String?
        var count = 0
        for file in files {
            let bytes = try readFile(file)
            var lineNumber = 0
            for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                lineNumber += 1
                if line.isEmpty { continue }
                count += 1
                guard let event = try? JSONDecoder().decode(AuditEvent.self, from: Data(line)) else {
                    return Verification(lines: count, failure: "\(file):\(lineNumber): not a valid audit event")
                }
                if let expected = previous, event.prev != expected {
                    return Verification(lines: count, failure:
                        "\(file):\(lineNumber): chain broken: this line does not follow the line before it "
                        + "(that line, or this one, was changed, removed or moved)")
                }
                previous = Hex.encode(SHA256.hash(Array(line)))
            }
        }
        return Verification(lines: count, failure: nil)
    }
}
