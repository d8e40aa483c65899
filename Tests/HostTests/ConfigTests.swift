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

import EngineKit
import MetacryptCrypto

@Suite("Shared parsers")
struct SharedParserTests {
    @Test func durationsAcceptOneWholeNumberAndOneUnit() throws {
        #expect(try Durations.seconds("90") == 90)
        #expect(try Durations.seconds("90s") == 90)
        #expect(try Durations.seconds("15m") == 900)
        #expect(try Durations.seconds("24h") == 86_400)
        #expect(try Durations.seconds("30d") == 2_592_000)
        for bad in ["", "h", "-5s", "+5s", "1.5h", "1h30m", "05m", "10y", " 5s", "5 s", "99999999999999d"] {
            #expect(throws: EngineError.self, "\(bad)") { try Durations.seconds(bad) }
        }
    }

    @Test func base64DecodesOnlyCanonicalStandardEncodings() {
        #expect(Base64.decode("aGVsbG8=") == Array("hello".utf8))
        #expect(Base64.decode("") == [])
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
        for bad in ["aGVsbG8", "aGVsbG8==", "aGVs bG8=", "aGVsbG9=", "a-_v", "aGVs\nbG8=", "=aGV", "aG=s"] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
    }
}

@Suite("Timestamps")
struct TimestampTests {
    @Test func auditTimestampsAreRFC3339InUTC() {
        #expect(iso8601(0) == "1970-01-01T00:00:00Z")
        #expect(iso8601(1_796_317_477.9) == "2026-12-03T17:04:37Z")
        #expect(iso8601(951_782_400) == "2000-02-29T00:00:00Z")
    }
}
