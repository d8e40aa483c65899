import CCurl
import FoundationEssentials
import Glibc

/// A small HTTPS client over libcurl: the CLI's client to the server, and the host's client to an
/// OAuth 2.0 introspection endpoint. TLS 1.2 at least for outside endpoints, certificates verified.
public struct HTTPClient: Sendable {
    public let address: String
    public let caCertificate: String?
    public let minimumTLS13: Bool
    public let timeoutSeconds: Int

    public init(address: String, caCertificate: String?, minimumTLS13: Bool = true, timeoutSeconds: Int = 30) {
        self.address = address
        self.caCertificate = caCertificate
        self.minimumTLS13 = minimumTLS13
        self.timeoutSeconds = timeoutSeconds
    }

    public struct Response: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    /// Sends one request to `address + path` with the given headers ("Name: value").
    public func request(_ method: String, _ path: String, headers extra: [String] = [], body: [UInt8]? = nil) throws -> Response {
        guard let curl = curl_easy_init() else { throw HTTPClientError("libcurl failed to initialise") }
        defer { curl_easy_cleanup(curl) }
        let collector = Collector()
        var headers: UnsafeMutablePointer<curl_slist>? = nil
        for header in extra { headers = curl_slist_append(headers, header) }
        defer { curl_slist_free_all(headers) }

        _ = mc_curl_setopt_string(curl, CURLOPT_URL, address + path)
        _ = mc_curl_setopt_string(curl, CURLOPT_CUSTOMREQUEST, method)
        _ = mc_curl_setopt_long(curl, CURLOPT_SSLVERSION, Int(minimumTLS13 ? CURL_SSLVERSION_TLSv1_3 : CURL_SSLVERSION_TLSv1_2))
        _ = mc_curl_setopt_long(curl, CURLOPT_TIMEOUT, timeoutSeconds)
        _ = mc_curl_setopt_long(curl, CURLOPT_NOSIGNAL, 1)
        _ = mc_curl_setopt_string(curl, CURLOPT_PROTOCOLS_STR, "https")
        if let caCertificate { _ = mc_curl_setopt_string(curl, CURLOPT_CAINFO, caCertificate) }
        _ = mc_curl_setopt_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        _ = mc_curl_setopt_write(curl) { data, size, count, context in
            guard let data, let context else { return 0 }
            let collector = Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue()
            data.withMemoryRebound(to: UInt8.self, capacity: size * count) {
                collector.bytes.append(contentsOf: UnsafeBufferPointer(start: $0, count: size * count))
            }
            return size * count
        }
        _ = mc_curl_setopt_pointer(curl, CURLOPT_WRITEDATA, Unmanaged.passUnretained(collector).toOpaque())
        let payload = body ?? []
        let result: CURLcode = payload.withUnsafeBytes { bytes in
            if body != nil {
                _ = mc_curl_setopt_pointer(curl, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
                _ = mc_curl_setopt_long(curl, CURLOPT_POSTFIELDSIZE, bytes.count)
            }
            return curl_easy_perform(curl)
        }
        guard result == CURLE_OK else {
            throw HTTPClientError("cannot reach \(address): \(String(cString: curl_easy_strerror(result)))")
        }
        var status = 0
        _ = mc_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return Response(status: status, body: collector.bytes)
    }

    private final class Collector {
        var bytes: [UInt8] = []
    }
}

public struct HTTPClientError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads a secret from the terminal without echo, or a line from standard input when it is not a terminal.
/// Never from the command line, where other users could read it.
public func readSecret(prompt: String) throws -> String {
    if isatty(0) == 1 {
        FileHandleStandardError.write(prompt)
        var old = termios()
        tcgetattr(0, &old)
        var silent = old
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSAFLUSH, &silent)
        defer {
            tcsetattr(0, TCSAFLUSH, &old)
            FileHandleStandardError.write("\n")
        }
        return readLine(strippingNewline: true) ?? ""
    }
    guard let line = readLine(strippingNewline: true) else { throw HTTPClientError("no password on standard input") }
    return line
}

public enum FileHandleStandardError {
    public static func write(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
