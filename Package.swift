// swift-tools-version:6.0
import PackageDescription

// Engines export exactly one symbol (the ABI entry point) so that two engines
// linking the same Swift modules never bind to each other's copies.
let engineLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(["-Xlinker", "--version-script=Plugins/engine.map"]),
]

let package = Package(
    name: "Metacrypt",
    products: [
        .executable(name: "metacrypt", targets: ["metacrypt"]),
        .library(name: "Transit", type: .dynamic, targets: ["Transit"]),
        .library(name: "SSHCA", type: .dynamic, targets: ["SSHCA"]),
        .library(name: "CA", type: .dynamic, targets: ["CA"]),
        .library(name: "User", type: .dynamic, targets: ["User"]),
    ],
    targets: [
        // The stable engine ABI: one pure C header shared by the host and every engine.
        .target(name: "EngineABI", path: "Sources/EngineABI"),

        // Thin C modules over the system libraries; each is imported by exactly one Swift module.
        .target(
            name: "COpenSSL", path: "Sources/COpenSSL",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(name: "CSodium", path: "Sources/CSodium", linkerSettings: [.linkedLibrary("sodium")]),
        .target(name: "CArgon2", path: "Sources/CArgon2", linkerSettings: [.linkedLibrary("argon2")]),
        .target(name: "CSQLite", path: "Sources/CSQLite", linkerSettings: [.linkedLibrary("sqlite3")]),
        .target(
            name: "CMicroHTTPD", path: "Sources/CMicroHTTPD",
            linkerSettings: [.linkedLibrary("microhttpd"), .linkedLibrary("gnutls")]),

        .target(name: "CCurl", path: "Sources/CCurl", linkerSettings: [.linkedLibrary("curl")]),
        .target(name: "CSystem", path: "Sources/CSystem"),

        // Swift code shared by the host and the engines.
        .target(name: "MetacryptCrypto", dependencies: ["COpenSSL", "CSodium", "CArgon2"]),
        .target(name: "HTTPClient", dependencies: ["CCurl"]),
        .target(name: "MetacryptJSON"),
        .target(name: "EngineKit", dependencies: ["EngineABI", "MetacryptCrypto"]),
        // The user engine's envelope format, shared by the engine and the client that opens envelopes locally.
        .target(name: "Envelope", dependencies: ["MetacryptCrypto"]),

        .target(
            name: "Host",
            dependencies: ["EngineABI", "MetacryptCrypto", "CSQLite", "CMicroHTTPD", "HTTPClient", "CSystem", "MetacryptJSON"]),
        .executableTarget(
            name: "metacrypt", dependencies: ["Host", "MetacryptCrypto", "HTTPClient", "Envelope", "MetacryptJSON"]),

        .target(
            name: "Transit", dependencies: ["EngineKit", "MetacryptCrypto", "MetacryptJSON"], path: "Plugins/Transit",
            linkerSettings: engineLinkerSettings),
        .target(
            name: "SSHCA", dependencies: ["EngineKit", "MetacryptCrypto"], path: "Plugins/SSHCA",
            linkerSettings: engineLinkerSettings),
        .target(
            name: "CA", dependencies: ["EngineKit", "MetacryptCrypto"], path: "Plugins/CA",
            linkerSettings: engineLinkerSettings),
        .target(
            name: "User", dependencies: ["EngineKit", "MetacryptCrypto", "Envelope"], path: "Plugins/User",
            linkerSettings: engineLinkerSettings),

        // Benchmarks (bench/run builds and runs them; never part of the test suite's pass or fail).
        .executableTarget(name: "barrier-bench", dependencies: ["Host", "MetacryptCrypto"], path: "bench/BarrierBench"),

        .testTarget(name: "HostTests", dependencies: ["Host", "MetacryptCrypto", "EngineKit", "MetacryptJSON"]),
        .testTarget(name: "CryptoTests", dependencies: ["MetacryptCrypto"]),
    ]
)
