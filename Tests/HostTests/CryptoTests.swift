import MetacryptCrypto
import Testing

@Suite("Crypto primitives")
struct CryptoTests {
    @Test func aesGCMMatchesTheNISTTestCase() throws {
        // NIST GCM test vectors (gcmEncryptExtIV256.rsp, Count 0 of the 96-bit IV, 128-bit PT, 0 AAD set).
        let key = SecureBytes(copying: Hex.decode("31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22")!)
        let nonce = Hex.decode("0d18e06c7c725ac9e362e1ce")!
        let plaintext = Hex.decode("2db5168e932556f8089a0622981d017d")!
        let sealed = try AESGCM.seal(plaintext, key: key, nonce: nonce, aad: [UInt8]())
        #expect(
            Hex.encode(Array(sealed.dropFirst(12))) == "fa4362189661d163fcd6a56d8bf0405a"
                + "d636ac1bbedd5cc3ee727dc2ab4a9489")
        #expect(try AESGCM.open(sealed, key: key, aad: [UInt8]()).unsafeArray() == plaintext)
    }

    @Test func secureBytesPrintsRedactedAndComparesByValue() {
        let a = SecureBytes(copying: [1, 2, 3])
        #expect("\(a)" == "<redacted>")
        #expect(a == SecureBytes(copying: [1, 2, 3]))
        #expect(a != SecureBytes(copying: [1, 2, 4]))
        #expect(a != SecureBytes(copying: [1, 2]))
    }

    @Test func secureBytesCopiesOnWrite() {
        let a = SecureBytes(copying: [1, 2, 3])
        var b = a
        b.withUnsafeMutableBytes { $0[0] = 9 }
        #expect(a.unsafeArray() == [1, 2, 3])
        #expect(b.unsafeArray() == [9, 2, 3])
    }

    @Test func wipeZeroesEveryByte() {
        // audit #45: the wipe goes through sodium_memzero, which the compiler cannot elide.
        var bytes: [UInt8] = Array(repeating: 0xaa, count: 64)
        secureWipe(&bytes)
        #expect(bytes == Array(repeating: 0, count: 64))
    }

    @Test func argon2idIsDeterministicAndDependsOnTheSalt() throws {
        // Derivation is deterministic: the same inputs give the same key, other salts differ.
        let salt = Array(repeating: UInt8(2), count: 16)
        let a = try Argon2id.deriveKey(password: Array("password".utf8), salt: salt, parameters: .minimum)
        let b = try Argon2id.deriveKey(password: Array("password".utf8), salt: salt, parameters: .minimum)
        let c = try Argon2id.deriveKey(
            password: Array("password".utf8), salt: Array(repeating: 3, count: 16),
            parameters: .minimum)
        #expect(a == b)
        #expect(a != c)
    }

    @Test func argon2ParametersBelowTheFloorAreRefused() {
        #expect(Argon2Parameters(time: 1, memoryKiB: 1024, lanes: 1).problem() != nil)
        #expect(Argon2Parameters(time: 0, memoryKiB: 8192, lanes: 1).problem() != nil)
        #expect(Argon2Parameters.recommended.problem() == nil)
    }
}
