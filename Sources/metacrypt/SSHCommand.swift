import FoundationEssentials
import MetacryptJSON
import Glibc
import Host
import HTTPClient

// `metacrypt ssh …`: the SSH CA engine's client. Certificates are written next to the key the way
// `ssh-keygen -s` does: id_ed25519.pub -> id_ed25519-cert.pub.

let sshUsage = """
    usage:
      metacrypt ssh sign-user [--mount M] [--principal P]... [--ttl T] [--profile P] [--key-id K] KEY.pub
      metacrypt ssh sign-host [--mount M] --hostname H... [--ttl T] [--key-id K] KEY.pub
      metacrypt ssh ca [--mount M]
      metacrypt ssh krl [--mount M] --out FILE        (writes FILE and FILE.sig)
      metacrypt ssh revoke [--mount M] SERIAL... | [--mount M] --key KEY.pub
      metacrypt ssh list [--mount M]
    The mount defaults to "sshca".
    """

/// Splits `--flag value` pairs (repeatable) from positional arguments.
private func sshOptions(_ args: [String], flags: Set<String>) -> (values: [String: [String]], rest: [String]) {
    var values: [String: [String]] = [:]
    var rest: [String] = []
    var i = 0
    while i < args.count {
        if flags.contains(args[i]) {
            guard i + 1 < args.count else { fail("\(args[i]) needs a value") }
            values[args[i], default: []].append(args[i + 1])
            i += 2
        } else if args[i].hasPrefix("--") {
            fail("unknown flag \(args[i])\n\(sshUsage)")
        } else {
            rest.append(args[i])
            i += 1
        }
    }
    return (values, rest)
}

/// The certificate path `ssh-keygen -s` would write for a public key path.
func certificatePath(forKey path: String) -> String {
    (path.hasSuffix(".pub") ? String(path.dropLast(4)) : path) + "-cert.pub"
}

private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    guard let file = fopen(path, "wb") else { throw HTTPClientError("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(file) }
    guard bytes.isEmpty || fwrite(bytes, 1, bytes.count, file) == bytes.count else {
        throw HTTPClientError("cannot write \(path)")
    }
}

private func answer(_ response: HTTPClient.Response) -> [String: JSONValue] {
    guard response.status < 400 else { printBody(response); exit(2) }
    return (try? JSONDecoder().decode([String: JSONValue].self, from: Data(response.body))) ?? [:]
}

func runSSHCommand(_ args: [String]) throws {
    let client = Client.fromEnvironment()
    guard let sub = args.first else { fail(sshUsage) }
    let parsed = sshOptions(Array(args.dropFirst()),
                            flags: ["--mount", "--principal", "--ttl", "--profile", "--key-id", "--hostname", "--out", "--key"])
    let mount = parsed.values["--mount"]?.last ?? "sshca"
    let base = "/v1/sshca/\(mount)"

    switch sub {
    case "sign-user", "sign-host":
        guard parsed.rest.count == 1 else { fail(sshUsage) }
        let keyPath = parsed.rest[0]
        let publicKey = String(decoding: try readFile(keyPath), as: UTF8.self)
        var body: [String: J] = ["public_key": .string(publicKey)]
        if let ttl = parsed.values["--ttl"]?.last { body["ttl"] = .string(ttl) }
        if let keyID = parsed.values["--key-id"]?.last { body["key_id"] = .string(keyID) }
        if sub == "sign-user" {
            if let principals = parsed.values["--principal"] { body["principals"] = .array(principals.map { .string($0) }) }
            if let profile = parsed.values["--profile"]?.last { body["profile"] = .string(profile) }
        } else {
            guard let hosts = parsed.values["--hostname"] else { fail("sign-host needs --hostname") }
            body["hostnames"] = .array(hosts.map { .string($0) })
        }
        let result = answer(try client.request("POST", "\(base)/\(sub)", body: encode(body)))
        guard let signed = result["signed_key"]?.string else { fail("the server answered without signed_key") }
        let out = certificatePath(forKey: keyPath)
        try writeFile(out, Array((signed + "\n").utf8))
        print("Signed \(sub == "sign-user" ? "user" : "host") key \(out): serial \(result["serial"]?.string ?? "?")"
              + " id \"\(result["key_id"]?.string ?? "")\"")

    case "ca":
        let response = try client.request("GET", "\(base)/ca")
        guard response.status == 200 else { printBody(response); exit(2) }
        print(String(decoding: response.body, as: UTF8.self), terminator: "")

    case "krl":
        guard let out = parsed.values["--out"]?.last else { fail("krl needs --out FILE") }
        let krl = try client.request("GET", "\(base)/krl")
        guard krl.status == 200 else { printBody(krl); exit(2) }
        let signature = try client.request("GET", "\(base)/krl.sig")
        guard signature.status == 200 else { printBody(signature); exit(2) }
        try writeFile(out, krl.body)
        try writeFile(out + ".sig", signature.body)
        print("Wrote \(out) (\(krl.body.count) bytes) and \(out).sig")

    case "revoke":
        var body: [String: J] = [:]
        if let key = parsed.values["--key"]?.last {
            body["public_key"] = .string(String(decoding: try readFile(key), as: UTF8.self))
        }
        if !parsed.rest.isEmpty { body["serials"] = .array(parsed.rest.map { .string($0) }) }
        guard !body.isEmpty else { fail(sshUsage) }
        printBody(try client.request("POST", "\(base)/revoke", body: encode(body)))

    case "list":
        printBody(try client.request("GET", "\(base)/certs"))

    default:
        fail(sshUsage)
    }
}
