/// The one error type of the barrier.
public struct BarrierError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case sealed
        case notInitialized = "not_initialized"
        case alreadyInitialized = "already_initialized"
        /// A wrong password or a damaged seal configuration: deliberately one error.
        case unsealFailed = "unseal_failed"
        /// A DEK could not be unwrapped during unseal (audit #41).
        case keyLoadFailed = "key_load_failed"
        case unknownKey = "unknown_key"
        case keyExists = "key_exists"
        /// A stored entry failed to open: modified, moved, or of an unknown format.
        case corrupt
        case invalidPath = "invalid_path"
        case invalidArgument = "invalid_argument"
        case busy
    }

    public let code: Code
    public let reason: String
    public let location: String

    public init(_ code: Code, _ reason: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.location = "\(file):\(line)"
    }

    public var description: String { "\(code.rawValue): \(reason)" }

    public static func == (a: BarrierError, b: BarrierError) -> Bool { a.code == b.code && a.reason == b.reason }

    static func sealed(file: String = #fileID, line: Int = #line) -> BarrierError {
        BarrierError(.sealed, "the barrier is sealed", file: file, line: line)
    }

    static func unsealFailed(file: String = #fileID, line: Int = #line) -> BarrierError {
        BarrierError(.unsealFailed, "unseal failed: wrong password or damaged seal configuration", file: file, line: line)
    }
}
