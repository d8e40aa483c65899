/// The one error type of MetacryptCrypto.
///
/// Authentication failures (a wrong key, a flipped byte, wrong associated data) all surface as
/// ``Code/authenticationFailed`` with no further detail, so that a caller cannot learn which check failed.
public struct CryptoError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        public static let authenticationFailed = Code(name: "authentication_failed")
        public static let invalidInput = Code(name: "invalid_input")
        public static let library = Code(name: "library_failure")
    }

    public let code: Code
    public let reason: String
    public let location: String

    public init(_ code: Code, _ reason: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.location = "\(file):\(line)"
    }

    public var description: String { "\(code): \(reason)" }

    public static func == (lhs: CryptoError, rhs: CryptoError) -> Bool {
        lhs.code == rhs.code && lhs.reason == rhs.reason
    }

    /// The uniform error for any failed AEAD open.
    public static func authenticationFailed(file: String = #fileID, line: Int = #line) -> CryptoError {
        CryptoError(.authenticationFailed, "message authentication failed", file: file, line: line)
    }
}
