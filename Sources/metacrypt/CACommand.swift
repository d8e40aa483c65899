import FoundationEssentials
import Glibc
import Host
import HTTPClient

// `metacrypt ca ...`: the CA engine's client. Certificates, chains, CRLs and keys are written to PEM files;
// a generated private key is written with mode 0600 and never printed.

let caUsage = """
    usage: metacrypt ca [--mount M] COMMAND   (mount default: ca)
      issuer create NAME [--key-type T] [--cn CN] [--ttl D] [--parent P] [--org O] [--country C]
      issuer read NAME | list | csr NAME --cn CN --out FILE | set-signed NAME CERT.pem [CHAIN.pem]
      issuer cert NAME --out FILE | chain NAME --out FILE
      profile write NAME FILE|- | read NAME | list | delete NAME
      issue PROFILE --cn CN [--alt N]... [--ip A]... [--uri U]... [--ttl D] [--key-type T] --out PREFIX
      sign PROFILE CSR.pem [--ttl D] --out PREFIX
      renew SERIAL [--ttl D] --out PREFIX
      revoke SERIAL [--reason R]
      list | read SERIAL
      crl ISSUER --out FILE [--der] | crl ISSUER --rebuild
    issue, sign and renew write PREFIX.crt, PREFIX.chain.pem and (issue, renew of an issued key) PREFIX.key.
    """

func runCACommand(_ arguments: [String]) throws {
    var args = arguments
    var mount = "ca"
    if let i = args.firstIndex(of: "--mount"), i + 1 < args.count {
        mount = args[i + 1]
        args.removeSubrange(i...(i + 1))
    }
    let client = Client.fromEnvironment()
    let base = "/v1/ca/\(mount)"
    let positional = args.enumerated().filter { i, a in !a.hasPrefix("--") && (i == 0 || !args[i - 1].hasPrefix("--")) }
        .map(\.element)
    func flag(_ name: String) -> String? { flagValue(args, name) }
    func flags(_ name: String) -> [J] {
        args.indices.filter { args[$0] == name && $0 + 1 < args.count }.map { J.string(args[$0 + 1]) }
    }
    func out() -> String {
        guard let path = flag("--out") else { fail("--out is required\n\(caUsage)") }
        return path
    }
    func subject() -> [String: J] {
        var body: [String: J] = [:]
        if let v = flag("--cn") { body["common_name"] = .string(v) }
        if let v = flag("--key-type") { body["key_type"] = .string(v) }
        if let v = flag("--ttl") { body["ttl"] = .string(v) }
        if let v = flag("--parent") { body["parent"] = .string(v) }
        if let v = flag("--org") { body["organization"] = .string(v) }
        if let v = flag("--country") { body["country"] = .string(v) }
        return body
    }

    switch (positional.first ?? "", positional.dropFirst().first ?? "") {
    case ("issuer", "list"): printBody(try client.request("GET", "\(base)/issuers"))
    case ("issuer", "create") where positional.count == 3:
        printBody(try client.request("POST", "\(base)/issuers/\(positional[2])", body: encode(subject())))
    case ("issuer", "read") where positional.count == 3:
        printBody(try client.request("GET", "\(base)/issuers/\(positional[2])"))
    case ("issuer", "csr") where positional.count == 3:
        let answer = try checked(client.request("POST", "\(base)/issuers/\(positional[2])/csr", body: encode(subject())))
        try writeText(out(), string(answer, "csr"))
    case ("issuer", "set-signed") where positional.count >= 4:
        var body: [String: J] = ["certificate": .string(try readText(positional[3]))]
        if positional.count > 4 { body["chain"] = .string(try readText(positional[4])) }
        printBody(try client.request("POST", "\(base)/issuers/\(positional[2])/set-signed", body: encode(body)))
    case ("issuer", "cert") where positional.count == 3, ("issuer", "chain") where positional.count == 3:
        let response = try client.request("GET", "\(base)/issuers/\(positional[2])/\(positional[1])")
        guard response.status == 200 else { printBody(response); return }
        try writeBytes(out(), response.body, mode: 0o644)

    case ("profile", "list"): printBody(try client.request("GET", "\(base)/profiles"))
    case ("profile", "read") where positional.count == 3:
        printBody(try client.request("GET", "\(base)/profiles/\(positional[2])"))
    case ("profile", "delete") where positional.count == 3:
        printBody(try client.request("DELETE", "\(base)/profiles/\(positional[2])"))
    case ("profile", "write") where positional.count == 4:
        let body = positional[3] == "-" ? readAllStandardInput() : try readFile(positional[3])
        printBody(try client.request("PUT", "\(base)/profiles/\(positional[2])", body: body))

    case ("issue", _) where positional.count == 2:
        var body: [String: J] = [:]
        if let v = flag("--cn") { body["common_name"] = .string(v) }
        if let v = flag("--ttl") { body["ttl"] = .string(v) }
        if let v = flag("--key-type") { body["key_type"] = .string(v) }
        for (name, field) in [("--alt", "alt_names"), ("--ip", "ip_sans"), ("--uri", "uri_sans")] where !flags(name).isEmpty {
            body[field] = .array(flags(name))
        }
        try saveLeaf(try checked(client.request("POST", "\(base)/issue/\(positional[1])", body: encode(body))), prefix: out())
    case ("sign", _) where positional.count == 3:
        var body: [String: J] = ["csr": .string(try readText(positional[2]))]
        if let v = flag("--ttl") { body["ttl"] = .string(v) }
        try saveLeaf(try checked(client.request("POST", "\(base)/sign/\(positional[1])", body: encode(body))), prefix: out())
    case ("renew", _) where positional.count == 2:
        var body: [String: J] = ["serial_number": .string(positional[1])]
        if let v = flag("--ttl") { body["ttl"] = .string(v) }
        try saveLeaf(try checked(client.request("POST", "\(base)/renew", body: encode(body))), prefix: out())
    case ("revoke", _) where positional.count == 2:
        var body: [String: J] = ["serial_number": .string(positional[1])]
        if let v = flag("--reason") { body["reason"] = .string(v) }
        printBody(try client.request("POST", "\(base)/revoke", body: encode(body)))
    case ("list", _): printBody(try client.request("GET", "\(base)/certs"))
    case ("read", _) where positional.count == 2: printBody(try client.request("GET", "\(base)/certs/\(positional[1])"))
    case ("crl", _) where positional.count == 2:
        if args.contains("--rebuild") {
            printBody(try client.request("POST", "\(base)/issuers/\(positional[1])/crl", body: []))
            return
        }
        let der = args.contains("--der")
        let response = try client.http.request(
            "GET", "\(base)/issuers/\(positional[1])/crl",
            headers: ["Accept: \(der ? "application/pkix-crl" : "application/x-pem-file")"], body: nil)
        guard response.status == 200 else { printBody(response); return }
        try writeBytes(out(), response.body, mode: 0o644)
    default:
        fail(caUsage)
    }
}

/// The JSON object of a successful answer; otherwise prints the error and exits.
private func checked(_ response: HTTPClient.Response) throws -> [String: JSONAny] {
    guard response.status < 300 else {
        printBody(response)
        exit(2)
    }
    return try JSONDecoder().decode([String: JSONAny].self, from: Data(response.body))
}

private func string(_ object: [String: JSONAny], _ key: String) -> String {
    if case .string(let s)? = object[key] { return s }
    return ""
}

/// Writes PREFIX.crt, PREFIX.chain.pem and, when the answer holds one, PREFIX.key (0600); prints the serial.
private func saveLeaf(_ answer: [String: JSONAny], prefix: String) throws {
    try writeText(prefix + ".crt", string(answer, "certificate"))
    try writeText(prefix + ".chain.pem", string(answer, "chain"))
    let key = string(answer, "private_key")
    if !key.isEmpty {
        // XXX: the key passed through the HTTP client's buffers and a Swift String; neither can be wiped.
        try writeBytes(prefix + ".key", Array(key.utf8), mode: 0o600)
    }
    print("serial_number \(string(answer, "serial_number"))")
    print("not_after \(string(answer, "not_after"))")
    if case .array(let warnings)? = answer["warnings"] {
        for case .string(let w) in warnings { print("warning: \(w)") }
    }
}

private func readText(_ path: String) throws -> String { String(decoding: try readFile(path), as: UTF8.self) }

private func writeText(_ path: String, _ text: String) throws { try writeBytes(path, Array(text.utf8), mode: 0o644) }

private func writeBytes(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { fail("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    _ = fchmod(fd, mode)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written > 0 else { fail("cannot write \(path): \(String(cString: strerror(errno)))") }
        offset += written
    }
}

/// Any JSON value, for reading answers.
enum JSONAny: Decodable {
    case string(String), number(Double), bool(Bool), array([JSONAny]), object([String: JSONAny]), null

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(Double.self) { self = .number(v) }
        else if let v = try? c.decode([JSONAny].self) { self = .array(v) }
        else { self = .object(try c.decode([String: JSONAny].self)) }
    }
}
