import FoundationEssentials
import Glibc
import Host

// The metacrypt command: the server, and a client for operators. Kept free of C callbacks: those live
// in other files, where they do not inherit the main actor.

let usage = """
    usage:
      metacrypt server [--dev] [--config FILE] [--listen HOST:PORT] [--data DIR]
      metacrypt operator init [--argon2-time N --argon2-memory-kib N --argon2-lanes N]
      metacrypt operator unseal | seal | status | rotate-mek [--new-password]
      metacrypt operator rotate-key KEY   (KEY: "system" or a mount name)
      metacrypt operator keys
      metacrypt mount list | enable NAME TYPE | disable NAME

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

func printBody(_ response: Client.Response) {
    print(String(decoding: response.body, as: UTF8.self))
    if response.status >= 400 { exit(2) }
}

/// A JSON value for request bodies.
indirect enum J: Encodable {
    case string(String)
    case int(Int)
    case object([String: J])

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
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

    case "help", "--help", "-h":
        print(usage)
    default:
        fail("unknown command \(command)\n\(usage)")
    }
} catch {
    fail("\(error)")
}
