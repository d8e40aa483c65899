import FoundationEssentials
import MetacryptJSON
import Glibc
import HTTPClient
import Host
import MetacryptCrypto

// `metacrypt transit ...`: the client of the transit engine (docs/transit.md §6). Data comes from a file or
// standard input, so plaintexts never appear on a command line; `-format=json` prints the server's answer.

let transitUsage = """
    usage: metacrypt transit COMMAND [-mount=NAME] [-format=text|json] ...
      create NAME [-type=TYPE] [-exportable] [-allow-deletion]
      list | read NAME | rotate NAME | delete NAME
      config NAME [-min-decryption-version=N] [-min-encryption-version=N]
      trim NAME -min-available-version=N
      encrypt NAME [FILE|-] [-context=TEXT]        prints the ciphertext
      decrypt NAME [FILE|-] [-context=TEXT]        writes the plaintext bytes
      rewrap NAME [FILE|-] [-context=TEXT]         prints the new ciphertext
      sign NAME [FILE|-]                           prints the signature
      verify NAME SIGNATURE [FILE|-]               prints valid or invalid (exit status 0 or 1)
      hmac NAME [FILE|-]                           prints the HMAC
    FILE defaults to standard input. The mount defaults to "transit".
    """

/// A JSON value of a server answer.
private typealias Answer = JSONValue

/// Reads all of a file, or of standard input for "-" or no name; bytes as they are, binary included.
private func readInput(_ path: String?) throws -> [UInt8] {
    if let path, path != "-" { return try readFile(path) }
    return readAllStandardInput()
}

/// A ciphertext or signature read from input: surrounding whitespace (a final newline) is not part of it.
private func envelopeText(_ bytes: [UInt8]) -> String {
    let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
    return String(decoding: bytes.drop(while: isSpace).reversed().drop(while: isSpace).reversed(), as: UTF8.self)
}

private func writeStandardOutput(_ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        offset += n
    }
}

func runTransitCommand(_ args: [String]) throws {
    // Split flags from positional arguments: -name=value, --name=value, or --name value like the other
    // subcommands; -exportable and -allow-deletion take no value.
    let switches: Set<String> = ["exportable", "allow-deletion"]
    let known: Set<String> = switches.union([
        "mount", "format", "type", "min-decryption-version", "min-encryption-version", "min-available-version",
        "context",
    ])
    if args.first.map({ ["help", "-h", "--help", "-help"].contains($0) }) ?? false {
        print(transitUsage)
        return
    }
    var flags: [String: String] = [:]
    var positional: [String] = []
    var index = 0
    while index < args.count {
        let arg = args[index]
        index += 1
        if arg.hasPrefix("-"), arg != "-" {
            let body = arg.drop { $0 == "-" }
            if let eq = body.firstIndex(of: "=") {
                flags[String(body[..<eq])] = String(body[body.index(after: eq)...])
            } else if known.contains(String(body)), !switches.contains(String(body)), index < args.count {
                flags[String(body)] = args[index]
                index += 1
            } else {
                flags[String(body)] = ""
            }
        } else {
            positional.append(arg)
        }
    }
    if let unknown = flags.keys.sorted().first(where: { !known.contains($0) }) {
        fail("unknown flag -\(unknown)\n\(transitUsage)")
    }
    let format = flags["format"] ?? "text"
    guard format == "text" || format == "json" else { fail("-format must be text or json") }
    guard let command = positional.first else { fail(transitUsage) }
    let mount = flags["mount"] ?? "transit"
    let client = Client.fromEnvironment()

    func call(_ method: String, _ path: String, _ body: [String: J]? = nil) throws -> Answer {
        let response = try client.request(method, "/v1/transit/\(mount)/\(path)", body: body.map(encode))
        let answer = (try? JSONDecoder().decode(Answer.self, from: Data(response.body))) ?? .null
        if response.status >= 400 {
            let message = answer["error"]?["message"]?.string ?? String(decoding: response.body, as: UTF8.self)
            FileHandleStandardError.write("metacrypt: \(response.status): \(message)\n")
            exit(2)
        }
        if format == "json" { print(String(decoding: response.body, as: UTF8.self)) }
        return answer
    }
    func name() -> String {
        guard positional.count >= 2 else { fail("\(command) needs a key name\n\(transitUsage)") }
        return positional[1]
    }
    func version(_ flag: String) -> J? {
        guard let text = flags[flag] else { return nil }
        guard let n = Int(text), n > 0 else { fail("-\(flag) must be a positive whole number") }
        return .int(n)
    }
    func context(_ body: inout [String: J]) {
        if let text = flags["context"] { body["context"] = .string(Base64.encode(Array(text.utf8))) }
    }
    /// Prints one field of the answer in text mode.
    func show(_ answer: Answer, _ field: String) {
        if format == "text", let value = answer[field]?.string { print(value) }
    }

    let path: String
    switch command {
    case "list":
        let answer = try call("GET", "keys")
        if format == "text", case .array(let names)? = answer["keys"] {
            for name in names.compactMap(\.string) { print(name) }
        }
    case "read", "rotate", "create", "config", "trim":
        var body: [String: J] = [:]
        switch command {
        case "read": path = "keys/\(name())"
        case "rotate": path = "keys/\(name())/rotate"
        case "create":
            path = "keys/\(name())"
            if let type = flags["type"] { body["type"] = .string(type) }
            if flags["exportable"] != nil { body["exportable"] = .bool(true) }
            if flags["allow-deletion"] != nil { body["allow_deletion"] = .bool(true) }
        case "config":
            path = "keys/\(name())/config"
            body["min_decryption_version"] = version("min-decryption-version")
            body["min_encryption_version"] = version("min-encryption-version")
        default:
            path = "keys/\(name())/trim"
            guard let floor = version("min-available-version") else { fail("trim needs -min-available-version=N") }
            body["min_available_version"] = floor
        }
        let response = try client.request(
            command == "read" ? "GET" : "POST", "/v1/transit/\(mount)/\(path)",
            body: command == "read" ? nil : encode(body))
        // Metadata is structured: it prints as the server's JSON in both formats.
        printBody(response)
    case "delete":
        _ = try call("DELETE", "keys/\(name())")
    case "encrypt":
        var plaintext = try readInput(positional.count > 2 ? positional[2] : nil)
        var body: [String: J] = ["plaintext": .string(Base64.encode(plaintext))]
        secureWipe(&plaintext)
        context(&body)
        show(try call("POST", "encrypt/\(name())", body), "ciphertext")
    case "decrypt", "rewrap":
        let ciphertext = envelopeText(try readInput(positional.count > 2 ? positional[2] : nil))
        var body: [String: J] = ["ciphertext": .string(ciphertext)]
        context(&body)
        let answer = try call("POST", "\(command)/\(name())", body)
        if command == "rewrap" {
            show(answer, "ciphertext")
        } else if format == "text" {
            guard let encoded = answer["plaintext"]?.string, var plaintext = Base64.decode(encoded) else {
                fail("the server's answer has no plaintext")
            }
            writeStandardOutput(plaintext)
            secureWipe(&plaintext)
        }
    case "sign", "hmac":
        let input = try readInput(positional.count > 2 ? positional[2] : nil)
        show(
            try call("POST", "\(command)/\(name())", ["input": .string(Base64.encode(input))]),
            command == "sign" ? "signature" : "hmac")
    case "verify":
        guard positional.count >= 3 else { fail("verify needs a key name and a signature\n\(transitUsage)") }
        let input = try readInput(positional.count > 3 ? positional[3] : nil)
        let answer = try call(
            "POST", "verify/\(name())",
            ["input": .string(Base64.encode(input)), "signature": .string(positional[2])])
        guard case .bool(let valid)? = answer["valid"] else { fail("the server's answer has no verdict") }
        if format == "text" { print(valid ? "valid" : "invalid") }
        if !valid { exit(1) }
    default:
        fail("unknown transit command \(command)\n\(transitUsage)")
    }
}
