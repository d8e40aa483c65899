import MetacryptCrypto
import Testing

@Suite("HMAC and HKDF known answers")
struct MACAndKDFTests {
    @Test(arguments: [
        (HMAC.Algorithm.sha256, "HMAC/rfc-4231-sha256.txt"),
        (HMAC.Algorithm.sha512, "HMAC/rfc-4231-sha512.txt"),
    ])
    func hmacMatchesTheRFC4231Vectors(algorithm: HMAC.Algorithm, path: String) throws {
        var count = 0
        for record in try Vectors.records(path, startKey: "Len") {
            let key = try record.secret("Key")
            let message = try record.bytes("Msg")
            let expected = try record.bytes("MD")

            #expect(HMAC.authenticationCode(for: message, key: key, algorithm: algorithm) == expected)
            #expect(HMAC.isValidAuthenticationCode(expected, for: message, key: key, algorithm: algorithm))
            var flipped = expected
            flipped[flipped.count - 1] ^= 0x80
            #expect(!HMAC.isValidAuthenticationCode(flipped, for: message, key: key, algorithm: algorithm))
            count += 1
        }
        print("HMAC-\(algorithm.rawValue.uppercased()): \(count) RFC 4231 vectors run")
        #expect(count > 0)
    }

    @Test func hmacVerificationRejectsTruncatedAndEmptyCodes() {
        let key = SecureBytes(randomCount: 32)
        let code = HMAC.authenticationCode(for: [1, 2, 3], key: key)
        #expect(code.count == 32)
        #expect(!HMAC.isValidAuthenticationCode(Array(code.prefix(16)), for: [1, 2, 3], key: key))
        #expect(!HMAC.isValidAuthenticationCode([UInt8](), for: [1, 2, 3], key: key))
        #expect(!HMAC.isValidAuthenticationCode(code, for: [1, 2, 4], key: key))
        #expect(!HMAC.isValidAuthenticationCode(code, for: [1, 2, 3], key: SecureBytes(randomCount: 32)))
    }

    @Test func hmacAcceptsAnEmptyKeyAndMessage() {
        // RFC 2104 pads any key to the block size; an empty key is weak but well defined.
        let code = HMAC.authenticationCode(for: [UInt8](), key: SecureBytes(zeroes: 0), algorithm: .sha512)
        #expect(code.count == 64)
    }

    @Test func hkdfSHA256MatchesTheRFC5869AndLongOutputVectors() throws {
        var count = 0
        let records =
            try Vectors.records("KDF/rfc-5869-HKDF-SHA256.txt", startKey: "COUNT")
            + Vectors.records("KDF/hkdf-generated.txt", startKey: "COUNT")
        for record in records where record.fields["Hash"] == "SHA-256" {
            let ikm = try record.secret("IKM")
            let salt = try record.bytes("salt")
            let info = try record.bytes("info")
            let length = Int(try record.string("L"))!
            let okm = try record.bytes("OKM")

            let derived = try HKDF.deriveKey(inputKeyMaterial: ikm, salt: salt, info: info, outputCount: length)
            #expect(derived.unsafeArray() == okm)
            if record.fields["PRK"] != nil {
                let prk = try HKDF.extract(inputKeyMaterial: ikm, salt: salt)
                #expect(prk.unsafeArray() == (try record.bytes("PRK")))
                let expanded = try HKDF.expand(pseudorandomKey: prk, info: info, outputCount: length)
                #expect(expanded.unsafeArray() == okm)
            }
            count += 1
        }
        print("HKDF-SHA256: \(count) vectors run")
        #expect(count > 0)
    }

    @Test func hkdfRefusesOutputLengthsOutsideTheRFCRange() throws {
        let ikm = SecureBytes(randomCount: 32)
        for bad in [0, HKDF.maximumOutputCount + 1] {
            let error = #expect(throws: CryptoError.self) {
                try HKDF.deriveKey(inputKeyMaterial: ikm, salt: [UInt8](), info: [UInt8](), outputCount: bad)
            }
            #expect(error?.code == .invalidInput)
        }
        let longest = try HKDF.deriveKey(
            inputKeyMaterial: ikm, salt: [UInt8](), info: [UInt8](), outputCount: HKDF.maximumOutputCount)
        #expect(longest.count == HKDF.maximumOutputCount)
        #expect(throws: CryptoError.self) {
            try HKDF.expand(pseudorandomKey: SecureBytes(randomCount: 16), info: [UInt8](), outputCount: 32)
        }
    }

    @Test func hkdfOutputsForDifferentInfoAreIndependent() throws {
        let ikm = SecureBytes(randomCount: 32)
        let a = try HKDF.deriveKey(inputKeyMaterial: ikm, salt: [UInt8](), info: Array("a".utf8), outputCount: 32)
        let b = try HKDF.deriveKey(inputKeyMaterial: ikm, salt: [UInt8](), info: Array("b".utf8), outputCount: 32)
        #expect(a != b)
    }
}
