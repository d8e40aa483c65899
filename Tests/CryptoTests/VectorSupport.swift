import Foundation
import MetacryptCrypto

// Known-answer vectors come from the `cryptography-vectors` Python package (pyca/cryptography's test
// vectors, Apache-2.0 OR BSD-3-Clause; each file names its own source: NIST CAVP, RFCs, OpenSSL and
// BoringSSL tests). Install it with `scripts/install-deps --tests`. A missing package fails the tests:
// a known-answer test that silently skips proves nothing.

struct VectorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Vectors {
    /// The package directory, asked of python3 once per test process.
    static let located: Result<String, any Error> = Result { try locate() }

    static func directory() throws -> String { try located.get() }

    private static func locate() throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c", "import cryptography_vectors, os; print(os.path.dirname(cryptography_vectors.__file__))",
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw VectorError("cannot run python3 to locate cryptography_vectors: \(error)")
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw VectorError(
                "python3 cannot import cryptography_vectors (exit \(process.terminationStatus)); "
                    + "run scripts/install-deps --tests")
        }
        let path = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw VectorError("cryptography_vectors directory \(path) does not exist")
        }
        return path
    }

    static func text(_ relativePath: String) throws -> String {
        String(decoding: try data(relativePath), as: UTF8.self)
    }

    static func data(_ relativePath: String) throws -> [UInt8] {
        let path = try directory() + "/" + relativePath
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VectorError("vector file \(path) is missing")
        }
        return [UInt8](data)
    }

    /// Parses the `key = value` formats of NIST CAVP `.rsp` files and the RFC/OpenSSL/BoringSSL text files:
    /// `#` comments, `[section]` headers, records that begin with `startKey`, bare words such as `FAIL`.
    static func records(_ relativePath: String, startKey: String) throws -> [Record] {
        var records: [Record] = []
        var section: [String: String] = [:]
        var sectionNames: [String] = []
        var inHeaders = false
        var current: Record?
        // Split on any newline: "\r\n" is one Character in Swift, so splitting on "\n" alone misses CRLF files.
        for rawLine in try text(relativePath).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                // A run of headers opens a new group: bare names (`[P-256]`, `[P-256,SHA-256]`) start afresh,
                // `[Key = value]` headers override one by one.
                if !inHeaders { sectionNames = [] }
                inHeaders = true
                let inner = String(line.dropFirst().dropLast())
                if let (key, value) = split(inner) {
                    section[key] = value
                } else {
                    sectionNames.append(inner)
                }
                continue
            }
            inHeaders = false
            guard let (key, value) = split(line) else {
                current?.flags.insert(line)
                continue
            }
            if key.caseInsensitiveCompare(startKey) == .orderedSame {
                if let current { records.append(current) }
                current = Record(section: section, sectionNames: sectionNames)
            }
            current?.fields[key] = value
        }
        if let current { records.append(current) }
        return records
    }

    private static func split(_ line: String) -> (String, String)? {
        guard let equals = line.firstIndex(of: "=") else { return nil }
        let key = line[..<equals].trimmingCharacters(in: .whitespaces)
        let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        return (key, value)
    }
}

struct Record {
    var section: [String: String]
    /// Bare `[name]` headers above the record, outermost first.
    var sectionNames: [String]
    var fields: [String: String] = [:]
    var flags: Set<String> = []

    func string(_ key: String) throws -> String {
        guard let value = fields[key] else { throw VectorError("record \(fields) has no \(key)") }
        return value
    }

    /// A hex field (odd lengths get a leading zero) or a double-quoted text field.
    func bytes(_ key: String) throws -> [UInt8] {
        let value = try string(key)
        if value.hasPrefix("\"") && value.hasSuffix("\"") && value.count >= 2 {
            return Array(value.dropFirst().dropLast().utf8)
        }
        guard let bytes = Hex.decode(value.count % 2 == 1 ? "0" + value : value) else {
            throw VectorError("\(key) = \(value) is not hex")
        }
        return bytes
    }

    func secret(_ key: String) throws -> SecureBytes { SecureBytes(copying: try bytes(key)) }
}

/// Big-endian `bytes` left-padded with zeros to `size`; longer values are returned unchanged.
func leftPadded(_ bytes: [UInt8], to size: Int) -> [UInt8] {
    bytes.count >= size ? bytes : [UInt8](repeating: 0, count: size - bytes.count) + bytes
}

func hex(_ text: String) -> [UInt8] {
    guard let bytes = Hex.decode(text) else { preconditionFailure("bad hex literal in a test: \(text)") }
    return bytes
}
