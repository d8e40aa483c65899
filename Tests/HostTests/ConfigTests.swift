import Testing
@testable import Host

@Suite("Configuration")
struct ConfigTests {
    static let root = String(#filePath.split(separator: "/").dropLast(3).joined(separator: "/").prepending("/"))

    @Test func theExampleConfigurationParsesWithEverySection() throws {
        let config = try ServerConfig.load(path: Self.root + "/deploy/config.example.json")
        #expect(config.listen == "0.0.0.0:8443")
        #expect(config.tls?.certificate == "/etc/metacrypt/tls.crt")
        #expect(config.seal?.argon2?.problem() == nil)
        #expect(config.auth?.passwordArgon2?.problem() == nil)
        #expect(config.rateLimits?.identity == RateLimiter.Limit(rate: 200, burst: 400))
        #expect(config.audit?.keepFiles == 10)
        #expect(config.engines?.first?.type == "transit")
    }

    @Test func aConfigurationThatIsNotJSONIsRefusedWithItsPath() throws {
        let path = temporaryDatabasePath() + ".json"
        try writeFile(path, Array("{ not json".utf8), mode: 0o600)
        let error = #expect(throws: ServerError.self) { try ServerConfig.load(path: path) }
        #expect(error?.description.contains(path) == true)
    }
}

extension String {
    func prepending(_ prefix: String) -> String { prefix + self }
}
