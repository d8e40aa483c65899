import MetacryptCrypto
import Testing

@Suite("Key agreement")
struct KeyAgreementTests {
    @Test func x25519MatchesTheRFC7748Vectors() throws {
        var count = 0
        for record in try Vectors.records("asymmetric/X25519/rfc7748.txt", startKey: "COUNT") {
            let key = try KeyAgreementPrivateKey(rawRepresentation: record.secret("INPUT_SCALAR"), algorithm: .x25519)
            let peer = try KeyAgreementPublicKey(rawRepresentation: record.bytes("INPUT_U"), algorithm: .x25519)
            #expect(try key.sharedSecret(with: peer).unsafeArray() == (try record.bytes("OUTPUT_U")))
            count += 1
        }
        print("X25519: \(count) RFC 7748 vectors run")
        #expect(count > 0)
    }

    @Test(arguments: KeyAgreementAlgorithm.allCases)
    func bothSidesAgreeOnTheSameSecretAndKeysRoundTrip(algorithm: KeyAgreementAlgorithm) throws {
        let alice = try KeyAgreementPrivateKey.generate(algorithm)
        let bob = try KeyAgreementPrivateKey.generate(algorithm)
        let ab = try alice.sharedSecret(with: bob.publicKey)
        #expect(ab.count == algorithm.sharedSecretSize)
        #expect(ab == (try bob.sharedSecret(with: alice.publicKey)))
        #expect(alice.publicKey.rawRepresentation.count == algorithm.rawPublicKeySize)

        let restored = try KeyAgreementPrivateKey(rawRepresentation: alice.rawRepresentation(), algorithm: algorithm)
        #expect(restored.publicKey.rawRepresentation == alice.publicKey.rawRepresentation)
        let peer = try KeyAgreementPublicKey(rawRepresentation: bob.publicKey.rawRepresentation, algorithm: algorithm)
        #expect(try restored.sharedSecret(with: peer) == ab)
        #expect(try alice.sharedSecret(with: KeyAgreementPrivateKey.generate(algorithm).publicKey) != ab)
    }

    @Test func x25519RefusesSmallOrderPointsThatWouldGiveAnAllZeroSecret() throws {
        let key = try KeyAgreementPrivateKey.generate(.x25519)
        // Points of order 1, 2, 4 and 8 on Curve25519 and its twist (from RFC 7748's discussion and libsodium's
        // blocklist): every scalar maps them to zero.
        let smallOrder = [
            hex("0000000000000000000000000000000000000000000000000000000000000000"),
            hex("0100000000000000000000000000000000000000000000000000000000000000"),
            hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
            hex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
            hex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        ]
        for point in smallOrder {
            let peer = try KeyAgreementPublicKey(rawRepresentation: point, algorithm: .x25519)
            let error = #expect(throws: CryptoError.self) { try key.sharedSecret(with: peer) }
            #expect(error?.code == .invalidInput)
        }
    }

    @Test func p256RefusesPointsOffTheCurveTheIdentityAndCompressedPoints() throws {
        let valid = try KeyAgreementPrivateKey.generate(.p256).publicKey.rawRepresentation
        var offCurve = valid
        offCurve[64] ^= 0x01
        let bad: [[UInt8]] = [
            offCurve,
            [0x00],
            [0x04] + [UInt8](repeating: 0, count: 64),
            Array(valid.prefix(33)),
            [0x05] + valid.dropFirst(),
            // x = p (the field prime) is out of range even though it is 32 bytes.
            [0x04] + hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff") + valid.suffix(32),
        ]
        for point in bad {
            let error = #expect(throws: CryptoError.self) {
                try KeyAgreementPublicKey(rawRepresentation: point, algorithm: .p256)
            }
            #expect(error?.code == .invalidInput)
        }
    }

    @Test func keysOfDifferentAlgorithmsCannotBeCombined() throws {
        let x = try KeyAgreementPrivateKey.generate(.x25519)
        let p = try KeyAgreementPrivateKey.generate(.p256)
        #expect(throws: CryptoError.self) { try x.sharedSecret(with: p.publicKey) }
        #expect(throws: CryptoError.self) { try p.sharedSecret(with: x.publicKey) }
        #expect(throws: CryptoError.self) {
            try KeyAgreementPublicKey(rawRepresentation: x.publicKey.rawRepresentation, algorithm: .p256)
        }
    }
}
