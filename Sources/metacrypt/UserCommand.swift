import Envelope
import FoundationEssentials
import Glibc
import HTTPClient
import MetacryptCrypto

// `metacrypt user …`: the client of the user engine, and `open-envelope`, which decrypts on this machine
// with a key the server has never seen. The envelope code is the engine's own (the Envelope module).

let userUsage = """
    usage:
      metacrypt user register [--username NAME] [--algorithm x25519|p256] [--client-key NEW-FILE]
      metacrypt user rotate [--username NAME] [--algorithm x25519|p256] [--client-key NEW-FILE]
      metacrypt user key NAME
      metacrypt user encrypt --to NAME[,NAME...] [--aad TEXT]   (plaintext on standard input)
      metacrypt user decrypt | re-encrypt                       (envelope on standard input)
      metacrypt user open-envelope --key FILE [--username NAME] (envelope on standard input; offline)
    Every command but open-envelope takes --mount NAME (default: user).
    With --client-key, the key pair is made here, the private key written to NEW-FILE (mode 0600) and only
    the public key sent: the server never sees the private key.
    """

/// The private key file `--client-key` writes and `open-envelope --key` reads (docs/user.md, "Key files").
struct UserKeyFile: Codable {
    static let formatName = "metacrypt-user-key-v1"

    let format: String
    let username: String
    let algorithm: String
    let privateKey: String

    enum CodingKeys: String, CodingKey {
        case format, username, algorithm
        case privateKey = "private_key"
    }
}

func runUserCommand(_ args: [String]) throws {
    guard let sub = args.first else { fail(userUsage) }
    let rest = Array(args.dropFirst())
    let mount = flagValue(rest, "--mount") ?? "user"
    let base = "/v1/user/\(mount)"
    let client = Client.fromEnvironment()

    switch sub {
    case "register", "rotate":
        var body: [String: J] = [:]
        if let username = flagValue(rest, "--username") { body["username"] = .string(username) }
        let algorithmName = flagValue(rest, "--algorithm")
        if let algorithmName { body["algorithm"] = .string(algorithmName) }
        var pending: (path: String, fd: Int32, key: KeyAgreementPrivateKey)?
        if let path = flagValue(rest, "--client-key") {
            guard let algorithm = RecipientAlgorithm(name: algorithmName ?? "x25519") else {
                fail("--algorithm must be x25519 or p256")
            }
            // The file is created before the server hears of the key, so an existing file (perhaps an older
            // key version still needed) stops the command before anything changes on the server.
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { fail("cannot create \(path): \(String(cString: strerror(errno)))") }
            let key = try KeyAgreementPrivateKey.generate(algorithm.keyAgreement)
            body["public_key"] = .string(Base64.encode(key.publicKey.rawRepresentation))
            body["algorithm"] = .string(algorithm.name)
            pending = (path, fd, key)
        }
        let response: HTTPClient.Response
        do {
            response = try client.request("POST", "\(base)/\(sub == "register" ? "register" : "rotate-key")",
                                          body: encode(body))
        } catch {
            if let pending { discardKeyFile(pending.path, pending.fd) }
            throw error
        }
        if let (path, fd, key) = pending {
            // The private key is written only once the server has accepted its public half.
            guard response.status < 300,
                  let answer = try? JSONDecoder().decode([String: JSONScalar].self, from: Data(response.body)),
                  case .string(let username)? = answer["username"]
            else {
                discardKeyFile(path, fd)
                printBody(response)
                fail("the server did not accept the key")
            }
            try writeKeyFile(path, fd, username: username, key: key)
        }
        printBody(response)

    case "key":
        guard let name = rest.first else { fail(userUsage) }
        printBody(try client.request("GET", "\(base)/keys/\(name)"))

    case "encrypt":
        guard let to = flagValue(rest, "--to") else { fail("encrypt needs --to NAME[,NAME...]") }
        var body: [String: J] = [
            "recipients": .array(to.split(separator: ",").map { .string(String($0)) }),
            "plaintext": .string(Base64.encode(readAllStandardInput())),
        ]
        if let aad = flagValue(rest, "--aad") { body["aad"] = .string(Base64.encode(Array(aad.utf8))) }
        print(try envelopeField(client.request("POST", "\(base)/encrypt", body: encode(body)), "envelope"))

    case "decrypt":
        let body = encode(["envelope": .string(readEnvelopeText())])
        let text = try envelopeField(client.request("POST", "\(base)/decrypt", body: body), "plaintext")
        guard var plaintext = Base64.decode(text) else { fail("the server's plaintext is not base64") }
        writeStandardOutput(plaintext)
        secureWipe(&plaintext)

    case "re-encrypt":
        let body = encode(["envelope": .string(readEnvelopeText())])
        print(try envelopeField(client.request("POST", "\(base)/re-encrypt", body: body), "envelope"))

    case "open-envelope":
        guard let path = flagValue(rest, "--key") else { fail("open-envelope needs --key FILE") }
        let file = try readKeyFile(path)
        let username = flagValue(rest, "--username") ?? file.username
        guard let algorithm = RecipientAlgorithm(name: file.algorithm), var raw = Base64.decode(file.privateKey)
        else { fail("\(path) is not a \(UserKeyFile.formatName) key file") }
        // XXX: the key file's text and the decoded String stay in ordinary memory until the process exits.
        let scalar = SecureBytes(consuming: &raw)
        let key = try KeyAgreementPrivateKey(rawRepresentation: scalar, algorithm: algorithm.keyAgreement)
        guard let bytes = Base64.decode(readEnvelopeText()),
              let plaintext = try? Envelope(parsing: bytes).open(username: username, privateKey: key)
        else { fail(EnvelopeError.cannotOpenMessage) }
        writeStandardOutput(plaintext)

    default:
        fail(userUsage)
    }
}

/// A string field of a successful JSON answer; an error answer is printed and the command fails.
private func envelopeField(_ response: HTTPClient.Response, _ field: String) throws -> String {
    guard response.status < 300,
          let answer = try? JSONDecoder().decode([String: JSONScalar].self, from: Data(response.body)),
          case .string(let value)? = answer[field]
    else {
        printBody(response)
        fail("unexpected answer from the server")
    }
    return value
}

/// A JSON value of an answer object that we only need to read strings from.
private enum JSONScalar: Decodable {
    case string(String)
    case other

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = (try? container.decode(String.self)).map { .string($0) } ?? .other
    }
}


/// The envelope's base64 text from standard input, surrounding whitespace removed.
private func readEnvelopeText() -> String {
    let text = String(decoding: readAllStandardInput(), as: UTF8.self)
    return String(text.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
}

private func writeStandardOutput(_ bytes: some ByteView) {
    bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(1, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { fail("cannot write to standard output") }
            offset += n
        }
    }
}

/// Fills the key file created (mode 0600, exclusively) before the request.
private func writeKeyFile(_ path: String, _ fd: Int32, username: String, key: KeyAgreementPrivateKey) throws {
    defer { close(fd) }
    let file = UserKeyFile(format: UserKeyFile.formatName, username: username,
                           algorithm: RecipientAlgorithm(key.algorithm).name,
                           privateKey: Base64.encode(try key.rawRepresentation()))
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    // XXX: the encoded JSON and the base64 String hold the private key in ordinary memory; the array is
    // wiped below, the String is not ours to wipe.
    var bytes = Array(try encoder.encode(file)) + [0x0a]
    defer { secureWipe(&bytes) }
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == bytes.count, fsync(fd) == 0 else {
        fail("cannot write \(path) (the server has the public key; the private key is lost: rotate again)")
    }
}

/// Removes a key file that was created but never filled.
private func discardKeyFile(_ path: String, _ fd: Int32) {
    close(fd)
    unlink(path)
}

private func readKeyFile(_ path: String) throws -> UserKeyFile {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { break }
        bytes += chunk[0..<n]
        guard bytes.count <= 65536 else { fail("\(path) is too large to be a key file") }
    }
    defer {
        secureWipe(&bytes)
        secureWipe(&chunk)
    }
    guard let file = try? JSONDecoder().decode(UserKeyFile.self, from: Data(bytes)),
          file.format == UserKeyFile.formatName
    else { fail("\(path) is not a \(UserKeyFile.formatName) key file") }
    return file
}
