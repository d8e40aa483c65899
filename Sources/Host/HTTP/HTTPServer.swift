import CMicroHTTPD
import Glibc
import Synchronization

/// One HTTP request as the server hands it to the API.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path as it arrived, still percent-encoded, without the query string.
    public var path: String
    /// Query arguments, decoded.
    public var query: [String: String]
    /// Header names lowercased.
    public var headers: [String: String]
    public var body: [UInt8]
    /// Set when the body exceeded the limit; `body` is then empty.
    public var bodyTooLarge: Bool
    /// Set when a query argument had a malformed escape.
    public var malformedQuery: Bool
    /// Set when the request repeats Content-Length or Authorization, or mixes Content-Length with
    /// Transfer-Encoding.
    public var ambiguousHeaders: Bool

    public init(method: String, path: String, query: [String: String] = [:], headers: [String: String] = [:],
                body: [UInt8] = [], bodyTooLarge: Bool = false, malformedQuery: Bool = false,
                ambiguousHeaders: Bool = false) {
        self.malformedQuery = malformedQuery
        self.ambiguousHeaders = ambiguousHeaders
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.bodyTooLarge = bodyTooLarge
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

public struct HTTPServerError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// HTTPS over GNU libmicrohttpd: TLS 1.3 only, a thread pool, body and header limits, timeouts, and a
/// certificate that can be replaced while running.
public final class HTTPServer: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var host: String = "127.0.0.1"
        public var port: UInt16 = 8443
        public var threads: Int = 4
        public var maxBodyBytes: Int = 1 << 20
        /// Per-connection memory for the request line and headers; larger headers get 431.
        public var headerMemoryBytes: Int = 32 * 1024
        public var connectionTimeoutSeconds: Int = 30
        public var maxConnections: Int = 1024
        /// GnuTLS priorities: TLS 1.3 and nothing older.
        public var tlsPriorities: String = "NORMAL:-VERS-ALL:+VERS-TLS1.3"

        public init() {}
    }

    public typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse

    let configuration: Configuration
    let handler: Handler
    private var daemon: OpaquePointer?
    private let inFlight = Atomic<Int>(0)
    private var priorities: UnsafeMutablePointer<CChar>?

    public init(configuration: Configuration, handler: @escaping Handler) {
        self.configuration = configuration
        self.handler = handler
    }

    deinit {
        stop()
        free(priorities)
    }

    /// Loads the TLS certificate chain and key (PEM). Call before ``start()``; call again to reload.
    /// New handshakes use the new certificate; open connections keep theirs.
    public func setCertificate(chainPEM: [UInt8], keyPEM: [UInt8]) throws {
        let rc = chainPEM.withUnsafeBufferPointer { c in
            keyPEM.withUnsafeBufferPointer { k in
                c.withMemoryRebound(to: CChar.self) { cc in
                    k.withMemoryRebound(to: CChar.self) { kk in
                        mc_tls_set_credentials(cc.baseAddress, cc.count, kk.baseAddress, kk.count)
                    }
                }
            }
        }
        guard rc == 0 else {
            throw HTTPServerError(reason: "cannot load TLS certificate and key: \(String(cString: mc_tls_strerror(rc)))")
        }
    }

    /// Starts listening. Returns the bound port (useful when the configured port is 0).
    @discardableResult
    public func start() throws -> UInt16 {
        var address = sockaddr_in6()
        var address4 = sockaddr_in()
        let useIPv6 = configuration.host.contains(":")
        if useIPv6 {
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = configuration.port.bigEndian
            guard inet_pton(AF_INET6, configuration.host, &address.sin6_addr) == 1 else {
                throw HTTPServerError(reason: "cannot parse listen address \(configuration.host)")
            }
        } else {
            address4.sin_family = sa_family_t(AF_INET)
            address4.sin_port = configuration.port.bigEndian
            guard inet_pton(AF_INET, configuration.host, &address4.sin_addr) == 1 else {
                throw HTTPServerError(reason: "cannot parse listen address \(configuration.host)")
            }
        }
        priorities = strdup(configuration.tlsPriorities)

        let flags = MHD_USE_TLS.rawValue | MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_EPOLL.rawValue
            | MHD_USE_ITC.rawValue | (useIPv6 ? MHD_USE_IPv6.rawValue : 0)
        let cls = Unmanaged.passUnretained(self).toOpaque()

        let started: OpaquePointer? = withUnsafeMutableBytes(of: &address) { a6 in
            withUnsafeMutableBytes(of: &address4) { a4 in
                let sockaddrPointer = useIPv6 ? a6.baseAddress! : a4.baseAddress!
                var options: [MHD_OptionItem] = [
                    item(MHD_OPTION.SOCK_ADDR, pointer: sockaddrPointer),
                    item(MHD_OPTION.HTTPS_PRIORITIES, pointer: priorities),
                    item(MHD_OPTION.HTTPS_CERT_CALLBACK, pointer: mc_tls_certificate_callback()),
                    item(MHD_OPTION.THREAD_POOL_SIZE, value: configuration.threads),
                    item(MHD_OPTION.CONNECTION_MEMORY_LIMIT, value: configuration.headerMemoryBytes),
                    item(MHD_OPTION.CONNECTION_TIMEOUT, value: configuration.connectionTimeoutSeconds),
                    item(MHD_OPTION.CONNECTION_LIMIT, value: configuration.maxConnections),
                    item(MHD_OPTION.NOTIFY_COMPLETED,
                         function: unsafeBitCast(requestCompleted, to: UnsafeMutableRawPointer.self), closure: cls),
                    item(MHD_OPTION.NOTIFY_CONNECTION, function: mc_mhd_nodelay_callback()),
                    item(MHD_OPTION.UNESCAPE_CALLBACK, function: mc_mhd_identity_unescape_callback()),
                    item(MHD_OPTION.END, value: 0),
                ]
                return options.withUnsafeMutableBufferPointer { opts in
                    mc_mhd_start(flags, accessHandler, cls, opts.baseAddress)
                }
            }
        }
        guard let started else {
            throw HTTPServerError(
                reason: "cannot listen on \(configuration.host):\(configuration.port) (address in use, or no TLS certificate)")
        }
        daemon = started
        return mc_mhd_bound_port(started)
    }

    /// Stops accepting new connections; requests in flight continue.
    public func quiesce() {
        guard let daemon else { return }
        let fd = MHD_quiesce_daemon(daemon)
        if fd >= 0 { close(fd) }
    }

    /// Waits until no request is in flight, up to `timeoutSeconds`. True if none remained.
    public func drain(timeoutSeconds: Double) -> Bool {
        var waited = 0.0
        while inFlight.load(ordering: .acquiring) > 0 && waited < timeoutSeconds {
            usleep(10_000)
            waited += 0.01
        }
        return inFlight.load(ordering: .acquiring) == 0
    }

    /// Stops the daemon and closes every connection.
    public func stop() {
        guard let daemon else { return }
        MHD_stop_daemon(daemon)
        self.daemon = nil
    }

    fileprivate func requestStarted() { inFlight.add(1, ordering: .relaxed) }
    fileprivate func requestFinished() { inFlight.subtract(1, ordering: .releasing) }
}

private func item(_ option: MHD_OPTION, value: Int = 0, pointer: UnsafeMutableRawPointer? = nil) -> MHD_OptionItem {
    MHD_OptionItem(option: option, value: value, ptr_value: pointer)
}

/// Options that take a callback and its closure: in an option array the callback goes in `value`.
private func item(_ option: MHD_OPTION, function: UnsafeMutableRawPointer?, closure: UnsafeMutableRawPointer? = nil)
    -> MHD_OptionItem {
    MHD_OptionItem(option: option, value: Int(bitPattern: function), ptr_value: closure)
}

private func item(_ option: MHD_OPTION, pointer: UnsafeMutablePointer<CChar>?) -> MHD_OptionItem {
    MHD_OptionItem(option: option, value: 0, ptr_value: UnsafeMutableRawPointer(pointer))
}

/// The state of one request between libmicrohttpd's calls.
private final class RequestState {
    var body: [UInt8] = []
    var tooLarge = false
    /// A response was queued on the first call; later calls only drain.
    var answered = false
    /// Conflicting framing or identity headers.
    var ambiguous = false
}

/// Percent-decodes one path segment or query component; nil if an escape is malformed or the result is
/// not UTF-8.
public func percentDecode(_ text: Substring, plusAsSpace: Bool = false) -> String? {
    var out: [UInt8] = []
    var bytes = text.utf8.makeIterator()
    while let b = bytes.next() {
        if b == UInt8(ascii: "%") {
            guard let h = bytes.next(), let l = bytes.next(), let hi = hexValue(h), let lo = hexValue(l) else { return nil }
            out.append(hi << 4 | lo)
        } else if plusAsSpace && b == UInt8(ascii: "+") {
            out.append(UInt8(ascii: " "))
        } else {
            out.append(b)
        }
    }
    return String(validating: out, as: UTF8.self)
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
}

private let accessHandler: MHD_AccessHandlerCallback = {
    cls, connection, url, method, _, uploadData, uploadDataSize, requestContext in
    guard let cls, let connection, let requestContext, let uploadDataSize else { return MHD_Result.NO }
    let server = Unmanaged<HTTPServer>.fromOpaque(cls).takeUnretainedValue()

    // First call: headers only. Answer an announced oversized body at once, before reading any of it.
    guard let raw = requestContext.pointee else {
        let state = RequestState()
        requestContext.pointee = Unmanaged.passRetained(state).toOpaque()
        server.requestStarted()
        // Ambiguous framing or identity is refused before the body is read, and the connection closed:
        // two Content-Lengths, or one beside Transfer-Encoding, let a proxy and this server disagree on
        // where the request ends (request smuggling); two Authorization headers, on who is asking.
        let counts = headerCounts(connection)
        if counts["content-length", default: 0] > 1 || counts["authorization", default: 0] > 1
            || (counts["content-length", default: 0] > 0 && counts["transfer-encoding", default: 0] > 0) {
            state.ambiguous = true
            state.answered = true
            return respond(server, connection, url, method, state)
        }
        if let length = lookupHeader(connection, "Content-Length"), let n = Int(length),
           n > server.configuration.maxBodyBytes {
            state.tooLarge = true
            state.answered = true
            return respond(server, connection, url, method, state)
        }
        return MHD_Result.YES
    }
    let state = Unmanaged<RequestState>.fromOpaque(raw).takeUnretainedValue()

    // Body chunks: collect up to the limit, then discard.
    if uploadDataSize.pointee > 0 || state.answered {
        let count = uploadDataSize.pointee
        if !state.tooLarge, let uploadData {
            if state.body.count + count > server.configuration.maxBodyBytes {
                state.tooLarge = true
                state.body = []
            } else {
                uploadData.withMemoryRebound(to: UInt8.self, capacity: count) {
                    state.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: count))
                }
            }
        }
        uploadDataSize.pointee = 0
        return MHD_Result.YES
    }

    // Final call: hand the whole request to the API and queue its response.
    return respond(server, connection, url, method, state)
}

private func respond(
    _ server: HTTPServer, _ connection: OpaquePointer, _ url: UnsafePointer<CChar>?, _ method: UnsafePointer<CChar>?,
    _ state: RequestState
) -> MHD_Result {
    var query: [String: String] = [:]
    var badQuery = false
    for (key, value) in collectValues(connection, MHD_ValueKind.GET_ARGUMENT_KIND, lowercaseKeys: false) {
        guard let k = percentDecode(Substring(key), plusAsSpace: true),
              let v = percentDecode(Substring(value), plusAsSpace: true)
        else { badQuery = true; continue }
        query[k] = v
    }
    let request = HTTPRequest(
        method: method.map { String(cString: $0) } ?? "GET",
        path: url.map { String(cString: $0) } ?? "/",
        query: query,
        headers: collectValues(connection, MHD_ValueKind.HEADER_KIND, lowercaseKeys: true),
        body: state.body,
        bodyTooLarge: state.tooLarge,
        malformedQuery: badQuery,
        ambiguousHeaders: state.ambiguous)
    let response = server.handler(request)

    let mhdResponse = response.body.withUnsafeBytes { bytes in
        MHD_create_response_from_buffer(bytes.count, UnsafeMutableRawPointer(mutating: bytes.baseAddress),
                                        MHD_ResponseMemoryMode.RESPMEM_MUST_COPY)
    }
    guard let mhdResponse else { return MHD_Result.NO }
    defer { MHD_destroy_response(mhdResponse) }
    for (name, value) in response.headers {
        _ = MHD_add_response_header(mhdResponse, name, value)
    }
    if state.tooLarge || state.ambiguous {
        // The unread body cannot be skipped reliably: close the connection after answering.
        _ = MHD_add_response_header(mhdResponse, "Connection", "close")
    }
    return MHD_queue_response(connection, UInt32(response.status), mhdResponse)
}

private let requestCompleted: MHD_RequestCompletedCallback = { cls, _, requestContext, _ in
    guard let cls, let requestContext, let raw = requestContext.pointee else { return }
    Unmanaged<RequestState>.fromOpaque(raw).release()
    requestContext.pointee = nil
    Unmanaged<HTTPServer>.fromOpaque(cls).takeUnretainedValue().requestFinished()
}

private func lookupHeader(_ connection: OpaquePointer, _ name: String) -> String? {
    MHD_lookup_connection_value(connection, MHD_ValueKind.HEADER_KIND, name).map { String(cString: $0) }
}

private final class ValueCollector {
    var values: [String: String] = [:]
    var counts: [String: Int] = [:]
    let lowercaseKeys: Bool
    init(lowercaseKeys: Bool) { self.lowercaseKeys = lowercaseKeys }
}

/// How many times each header name (lowercased) occurs.
private func headerCounts(_ connection: OpaquePointer) -> [String: Int] {
    let collector = ValueCollector(lowercaseKeys: true)
    _ = MHD_get_connection_values(connection, MHD_ValueKind.HEADER_KIND, { cls, _, key, _ in
        guard let cls, let key else { return MHD_Result.YES }
        let collector = Unmanaged<ValueCollector>.fromOpaque(cls).takeUnretainedValue()
        collector.counts[String(cString: key).lowercased(), default: 0] += 1
        return MHD_Result.YES
    }, Unmanaged.passUnretained(collector).toOpaque())
    return collector.counts
}

private func collectValues(_ connection: OpaquePointer, _ kind: MHD_ValueKind, lowercaseKeys: Bool) -> [String: String] {
    let collector = ValueCollector(lowercaseKeys: lowercaseKeys)
    let unmanaged = Unmanaged.passUnretained(collector)
    _ = MHD_get_connection_values(connection, kind, { cls, _, key, value in
        guard let cls, let key else { return MHD_Result.YES }
        let collector = Unmanaged<ValueCollector>.fromOpaque(cls).takeUnretainedValue()
        let name = String(cString: key)
        collector.values[collector.lowercaseKeys ? name.lowercased() : name] = value.map { String(cString: $0) } ?? ""
        return MHD_Result.YES
    }, unmanaged.toOpaque())
    return collector.values
}
