import CCurl
import FoundationEssentials
import Glibc

/// A small HTTPS client for the CLI, over libcurl, configured the way the vault CLI is: from
/// METACRYPT_ADDR, METACRYPT_TOKEN and METACRYPT_CACERT.
struct Client {
    let address: String
    let token: String?
    let caCertificate: String?

    static func fromEnvironment() -> Client {
        Client(address: environment("METACRYPT_ADDR") ?? "https://127.0.0.1:8443",
               token: environment("METACRYPT_TOKEN"), caCertificate: environment("METACRYPT_CACERT"))
    }

    struct Response {
        let status: Int
        let body: [UInt8]
    }

    func request(_ method: String, _ path: String, body: [UInt8]? = nil) throws -> Response {
        guard let curl = curl_easy_init() else { throw CLIError("libcurl failed to initialise") }
        defer { curl_easy_cleanup(curl) }
        let collector = Collector()
        var headers: UnsafeMutablePointer<curl_slist>? = curl_slist_append(nil, "Content-Type: application/json")
        if let token { headers = curl_slist_append(headers, "Authorization: Bearer \(token)") }
        defer { curl_slist_free_all(headers) }

        _ = mc_curl_setopt_string(curl, CURLOPT_URL, address + path)
        _ = mc_curl_setopt_string(curl, CURLOPT_CUSTOMREQUEST, method)
        _ = mc_curl_setopt_long(curl, CURLOPT_SSLVERSION, Int(CURL_SSLVERSION_TLSv1_3))
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
            throw CLIError("cannot reach \(address): \(String(cString: curl_easy_strerror(result)))")
        }
        var status = 0
        _ = mc_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return Response(status: status, body: collector.bytes)
    }

    private final class Collector {
        var bytes: [UInt8] = []
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
}

/// Reads a secret from the terminal without echo, or a line from standard input when it is not a terminal.
/// Never from the command line, where other users could read it.
func readSecret(prompt: String) throws -> String {
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
    guard let line = readLine(strippingNewline: true) else { throw CLIError("no password on standard input") }
    return line
}

enum FileHandleStandardError {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
