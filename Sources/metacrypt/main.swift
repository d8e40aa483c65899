import FoundationEssentials
import Glibc
import Host
import HTTPClient

// The metacrypt command: the server, and a client for operators. Kept free of C callbacks: those live
// in other files, where they do not inherit the main actor.

let usage = """
    usage:
      metacrypt server [--dev] [--config FILE] [--listen HOST:PORT] [--data DIR]
      metacrypt operator init [--admin-username NAME] [--argon2-time N --argon2-memory-kib N --argon2-lanes N]
      metacrypt operator unseal | seal | status | rotate-mek [--new-password]
      metacrypt operator rotate-key KEY   (KEY: "system" or a mount name)
      metacrypt operator keys
      metacrypt login USERNAME | logout | whoami
      metacrypt account list | read NAME | create NAME [--role R]... | update NAME [--role R]... [--password]
                        [--disable | --enable] | delete NAME
      metacrypt policy list | read ID | write ID FILE|- | delete ID
      metacrypt mount list | enable NAME TYPE | disable NAME
      metacrypt ssh sign-user | sign-host | ca | krl | revoke | list   (metacrypt ssh help for details)
      metacrypt transit create|list|read|rotate|config|trim|delete|encrypt|decrypt|rewrap|sign|verify|hmac ...
      metacrypt ca issuer|profile|issue|sign|renew|revoke|list|crl ...   (metacrypt ca help)
      metacrypt audit verify FILE...   (oldest first, e.g. audit.log.2 audit.log.1 audit.log)
      metacrypt user register|rotate|key|encrypt|decrypt|re-encrypt|open-envelope ...   (metacrypt user help)

    Client commands read METACRYPT_ADDR, METACRYPT_TOKEN and METACRYPT_CACERT.
    Passwords are read from the terminal without echo, or from standard input.
    """

func fail(_ message: String) -> Never {
    FileHandleStandardError.write("metacrypt: \(message)\n")
    exit(1)
}

func flagValue(_ args: [String], _ name: String) -> String? {
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

/// The client to the server, configured the way the vault CLI is: METACRYPT_ADDR, METACRYPT_TOKEN,
/// METACRYPT_CACERT.
struct Client {
    let http: HTTPClient
    let token: String?

    static func fromEnvironment() -> Client {
        Client(http: HTTPClient(address: environment("METACRYPT_ADDR") ?? "https://127.0.0.1:8443",
                                caCertificate: environment("METACRYPT_CACERT")),
               token: environment("METACRYPT_TOKEN"))
    }

    func request(_ method: String, _ path: String, body: [UInt8]? = nil) throws -> HTTPClient.Response {
        var headers = ["Content-Type: application/json"]
        if let token { headers.append("Authorization: Bearer \(token)") }
        return try http.request(method, path, headers: headers, body: body)
    }
}

func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
}

/// All of standard input, bytes as they are (binary included).
func readAllStandardInput() -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        out += chunk[0..<n]
    }
    return out
}

func printBody(_ response: HTTPClient.Response) {
    print(String(decoding: response.body, as: UTF8.self))
    if response.status >= 400 { exit(2) }
}

/// A JSON value for request bodies.
indirect enum J: Encodable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case array([J])
    case object([String: J])

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .bool(let b): try c.encode(b)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

func encode(_ object: [String: J]) -> [UInt8] {
    Array((try? JSONEncoder().encode(object)) ?? Data())
}

let args = Array(CommandLine.arguments.dropFirst())
guard let command = args.first else { fail(usage) }

do {
    switch command {
    case "server":
        var options = ServerOptions()
        var rest = Array(args.dropFirst())
        while let flag = rest.first {
            rest.removeFirst()
            switch flag {
            case "--dev": options.dev = true
            case "--config", "--listen", "--data":
                guard let value = rest.first else { fail("\(flag) needs a value") }
                rest.removeFirst()
                if flag == "--config" { options.configPath = value }
                if flag == "--listen" { options.listen = value }
                if flag == "--data" { options.dataDir = value }
            default: fail("unknown flag \(flag)\n\(usage)")
            }
        }
        try Server.run(options)

    case "operator":
        let client = Client.fromEnvironment()
        let sub = args.dropFirst().first ?? ""
        let rest = Array(args.dropFirst(2))
        switch sub {
        case "init":
            let password = try readSecret(prompt: "New unseal password: ")
            if isatty(0) == 1, try readSecret(prompt: "Repeat it: ") != password { fail("the passwords differ") }
            var body: [String: J] = ["password": .string(password)]
            if let admin = flagValue(rest, "--admin-username") { body["admin_username"] = .string(admin) }
            // The administrator's password: asked on a terminal; on standard input, an optional second line.
            if let adminPassword = try? readSecret(prompt: "Administrator password (empty: generate one): "),
               !adminPassword.isEmpty {
                body["admin_password"] = .string(adminPassword)
            }
            if let t = flagValue(rest, "--argon2-time"), let m = flagValue(rest, "--argon2-memory-kib"),
               let l = flagValue(rest, "--argon2-lanes"), let t = Int(t), let m = Int(m), let l = Int(l) {
                body["argon2"] = .object(["time": .int(t), "memory_kib": .int(m), "lanes": .int(l)])
            }
            printBody(try client.request("POST", "/v1/sys/init", body: encode(body)))
        case "unseal":
            let password = try readSecret(prompt: "Unseal password: ")
            printBody(try client.request("POST", "/v1/sys/unseal", body: encode(["password": .string(password)])))
        case "seal":
            printBody(try client.request("POST", "/v1/sys/seal", body: []))
        case "status":
            printBody(try client.request("GET", "/v1/sys/status"))
        case "keys":
            printBody(try client.request("GET", "/v1/sys/keys"))
        case "rotate-mek":
            let password = try readSecret(prompt: "Unseal password: ")
            var body: [String: J] = ["password": .string(password)]
            if rest.contains("--new-password") { body["new_password"] = .string(try readSecret(prompt: "New unseal password: ")) }
            printBody(try client.request("POST", "/v1/sys/rotate/mek", body: encode(body)))
        case "rotate-key":
            guard let key = rest.first else { fail("rotate-key needs a key: system or a mount name") }
            printBody(try client.request("POST", "/v1/sys/rotate/key/\(key)", body: []))
        default:
            fail(usage)
        }

    case "login":
        guard let username = args.dropFirst().first else { fail("login needs a username") }
        let password = try readSecret(prompt: "Password for \(username): ")
        let response = try Client.fromEnvironment().request(
            "POST", "/v1/auth/login", body: encode(["username": .string(username), "password": .string(password)]))
        printBody(response)

    case "logout":
        printBody(try Client.fromEnvironment().request("POST", "/v1/auth/logout", body: []))

    case "whoami":
        printBody(try Client.fromEnvironment().request("GET", "/v1/auth/whoami"))

    case "account":
        let client = Client.fromEnvironment()
        let rest = Array(args.dropFirst())
        let roles = rest.indices.filter { rest[$0] == "--role" && $0 + 1 < rest.count }.map { J.string(rest[$0 + 1]) }
        switch (rest.first ?? "", rest.count) {
        case ("list", 1): printBody(try client.request("GET", "/v1/sys/accounts"))
        case ("read", 2): printBody(try client.request("GET", "/v1/sys/accounts/\(rest[1])"))
        case ("delete", 2): printBody(try client.request("DELETE", "/v1/sys/accounts/\(rest[1])"))
        case ("create", 2...):
            let password = try readSecret(prompt: "Password for \(rest[1]): ")
            var body: [String: J] = ["password": .string(password)]
            if !roles.isEmpty { body["roles"] = .array(roles) }
            printBody(try client.request("POST", "/v1/sys/accounts/\(rest[1])", body: encode(body)))
        case ("update", 2...):
            var body: [String: J] = [:]
            if !roles.isEmpty { body["roles"] = .array(roles) }
            if rest.contains("--password") { body["password"] = .string(try readSecret(prompt: "New password: ")) }
            if rest.contains("--disable") { body["disabled"] = .bool(true) }
            if rest.contains("--enable") { body["disabled"] = .bool(false) }
            printBody(try client.request("PATCH", "/v1/sys/accounts/\(rest[1])", body: encode(body)))
        default: fail(usage)
        }

    case "policy":
        let client = Client.fromEnvironment()
        let rest = Array(args.dropFirst())
        switch (rest.first ?? "", rest.count) {
        case ("list", 1): printBody(try client.request("GET", "/v1/sys/policy/rules"))
        case ("read", 2): printBody(try client.request("GET", "/v1/sys/policy/rules/\(rest[1])"))
        case ("delete", 2): printBody(try client.request("DELETE", "/v1/sys/policy/rules/\(rest[1])"))
        case ("write", 3):
            let body = rest[2] == "-" ? Array(readAllStandardInput()) : try readFile(rest[2])
            printBody(try client.request("PUT", "/v1/sys/policy/rules/\(rest[1])", body: body))
        default: fail(usage)
        }

    case "audit":
        let files = Array(args.dropFirst(2))
        guard args.dropFirst().first == "verify", !files.isEmpty else { fail(usage) }
        let result = try AuditLog.verify(files: files)
        if let failure = result.failure {
            print("audit chain BROKEN after \(result.lines) lines: \(failure)")
            exit(1)
        }
        print("audit chain intact: \(result.lines) lines")

    case "mount":
        let client = Client.fromEnvironment()
        let rest = Array(args.dropFirst())
        switch rest.first ?? "" {
        case "list": printBody(try client.request("GET", "/v1/sys/mounts"))
        case "enable" where rest.count == 3:
            printBody(try client.request("POST", "/v1/sys/mounts/\(rest[1])", body: encode(["type": .string(rest[2])])))
        case "disable" where rest.count == 2:
            printBody(try client.request("DELETE", "/v1/sys/mounts/\(rest[1])"))
        default: fail(usage)
        }

    case "ssh": try runSSHCommand(Array(args.dropFirst()))
    case "transit": try runTransitCommand(Array(args.dropFirst()))
    case "ca": try runCACommand(Array(args.dropFirst()))
    case "user": try runUserCommand(Array(args.dropFirst()))
    case "help", "--help", "-h":
        print(usage)
    default:
        fail("unknown command \(command)\n\(usage)")
    }
} catch {
    fail("\(error)")
}
