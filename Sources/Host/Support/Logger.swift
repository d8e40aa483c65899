import Glibc
import FoundationEssentials
import Synchronization

/// A small logger: levels, messages built only when the level is on, metadata under dotted keys.
///
/// Never pass key material, plaintext, tokens or passwords; log names, versions and request ids.
public struct Logger: Sendable {
    public enum Level: Int, Sendable, Comparable, CustomStringConvertible {
        case error = 1, warning, info, debug

        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String {
            switch self {
            case .error: "error"
            case .warning: "warn"
            case .info: "info"
            case .debug: "debug"
            }
        }
    }

    public let label: String
    public let level: Level
    let sink: LogSink

    public init(label: String, level: Level = .info, sink: LogSink = .standardError) {
        self.label = label
        self.level = level
        self.sink = sink
    }

    public func with(label: String) -> Logger { Logger(label: label, level: level, sink: sink) }

    public func log(
        _ messageLevel: Level, _ message: @autoclosure () -> String,
        _ metadata: @autoclosure () -> KeyValuePairs<String, String> = [:]
    ) {
        guard messageLevel <= level else { return }
        var line = "\(timestamp()) \(messageLevel) [\(label)] \(message())"
        for (key, value) in metadata() {
            line += " \(key)=\(quoted(value))"
        }
        sink.write(line + "\n")
    }

    public func error(_ m: @autoclosure () -> String, _ md: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        log(.error, m(), md())
    }
    public func warning(_ m: @autoclosure () -> String, _ md: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        log(.warning, m(), md())
    }
    public func info(_ m: @autoclosure () -> String, _ md: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        log(.info, m(), md())
    }
    public func debug(_ m: @autoclosure () -> String, _ md: @autoclosure () -> KeyValuePairs<String, String> = [:]) {
        log(.debug, m(), md())
    }

    private func timestamp() -> String {
        iso8601(Date().timeIntervalSince1970)
    }

    private func quoted(_ value: String) -> String {
        let plain = value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") }
        if plain && !value.isEmpty { return value }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Where log lines go. The standard error sink writes each line with one `write(2)`.
public final class LogSink: Sendable {
    private let writeLine: @Sendable (String) -> Void

    public init(_ writeLine: @escaping @Sendable (String) -> Void) { self.writeLine = writeLine }

    func write(_ line: String) { writeLine(line) }

    public static let standardError = LogSink { line in
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// Collects lines in memory, for tests.
    public static func memory() -> (LogSink, @Sendable () -> [String]) {
        let lines = Locked<[String]>([])
        let sink = LogSink { line in lines.withLock { $0.append(line) } }
        return (sink, { lines.withLock { $0 } })
    }
}
