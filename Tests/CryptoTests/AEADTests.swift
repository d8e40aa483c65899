import MetacryptCrypto
import Testing

@Suite("AEAD known answers and security properties")
struct AEADTests {
    // MARK: AES-256-GCM (NIST CAVP gcmEncryptExtIV256.rsp / gcmDecrypt256.rsp)

    @Test func aesGCMEncryptionMatchesEveryNISTVectorWithA96BitNonce() throws {
        var fullTag = 0
        var truncatedTag = 0
        var otherNonceLength = 0
        for record in try Vectors.records("ciphers/AES/GCM/gcmEncryptExtIV256.rsp", startKey: "Count") {
            let nonce = try record.bytes("IV")
            // Our API takes only 96-bit nonces (the length GCM is designed around).
            guard nonce.count == AESGCM.nonceSize else {
                otherNonceLength += 1
                continue
            }
            let plaintext = try record.bytes("PT")
            let ciphertext = try record.bytes("CT")
            let tag = try record.bytes("Tag")
            let key = try record.secret("Key")

            let sealed = try AESGCM.seal(plaintext, key: key, nonce: nonce, aad: try record.bytes("AAD"))
            #expect(Array(sealed.prefix(AESGCM.nonceSize)) == nonce)
            #expect(Array(sealed.dropFirst(AESGCM.nonceSize).prefix(plaintext.count)) == ciphertext)
            // SP 800-38D truncates a tag to its leftmost bits, so a short expected tag is a prefix of ours.
            #expect(Array(sealed.suffix(AESGCM.tagSize).prefix(tag.count)) == tag)
            if tag.count == AESGCM.tagSize { fullTag += 1 } else { truncatedTag += 1 }
        }
        print(
            "AES-256-GCM encrypt: \(fullTag) vectors with 128-bit tags, \(truncatedTag) with truncated tags "
                + "(checked as a prefix of our tag), \(otherNonceLength) skipped for a nonce other than 96 bits")
        #expect(fullTag > 0)
        #expect(truncatedTag > 0)
    }

    @Test func aesGCMDecryptionAcceptsTheValidAndRejectsTheFailingNISTVectors() throws {
        var accepted = 0
        var rejected = 0
        var shortTag = 0
        var otherNonceLength = 0
        for record in try Vectors.records("ciphers/AES/GCM/gcmDecrypt256.rsp", startKey: "Count") {
            let nonce = try record.bytes("IV")
            let tag = try record.bytes("Tag")
            guard nonce.count == AESGCM.nonceSize else {
                otherNonceLength += 1
                continue
            }
            // `open` only takes full 16-byte tags; a truncated tag cannot be expressed in a sealed box.
            guard tag.count == AESGCM.tagSize else {
                shortTag += 1
                continue
            }
            let key = try record.secret("Key")
            let aad = try record.bytes("AAD")
            let sealed = nonce + (try record.bytes("CT")) + tag

            if record.flags.contains("FAIL") {
                #expect(throws: CryptoError.authenticationFailed()) { try AESGCM.open(sealed, key: key, aad: aad) }
                rejected += 1
            } else {
                #expect(try AESGCM.open(sealed, key: key, aad: aad).unsafeArray() == (try record.bytes("PT")))
                accepted += 1
            }
        }
        print(
            "AES-256-GCM decrypt: \(accepted) valid and \(rejected) FAIL vectors run; skipped \(shortTag) with tags "
                + "shorter than 128 bits and \(otherNonceLength) with a nonce other than 96 bits")
        #expect(accepted > 0)
        #expect(rejected > 0)
    }

    // MARK: ChaCha20-Poly1305 (RFC 7539/8439 vectors as collected by OpenSSL and BoringSSL)

    @Test func chaCha20Poly1305MatchesTheOpenSSLAndBoringSSLVectors() throws {
        var count = 0
        var rejected = 0
        let files: [(path: String, key: String, nonce: String, aad: String, plaintext: String, ciphertext: String)] = [
            ("ciphers/ChaCha20Poly1305/openssl.txt", "Key", "IV", "AAD", "Plaintext", "Ciphertext"),
            ("ciphers/ChaCha20Poly1305/boringssl.txt", "KEY", "NONCE", "AD", "IN", "CT"),
        ]
        for file in files {
            for record in try Vectors.records(file.path, startKey: "COUNT") {
                let key = try record.secret(file.key)
                let nonce = try record.bytes(file.nonce)
                let aad = try record.bytes(file.aad)
                let plaintext = try record.bytes(file.plaintext)
                let ciphertext = try record.bytes(file.ciphertext)
                let tag = try record.bytes(record.fields["Tag"] != nil ? "Tag" : "TAG")
                let sealed = nonce + ciphertext + tag
                #expect(nonce.count == ChaCha20Poly1305.nonceSize && tag.count == ChaCha20Poly1305.tagSize)

                if record.fields["Result"] != nil {
                    // The only Result these files use is a tag that must not verify.
                    #expect(throws: CryptoError.authenticationFailed()) {
                        try ChaCha20Poly1305.open(sealed, key: key, aad: aad)
                    }
                    rejected += 1
                } else {
                    #expect(try ChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, aad: aad) == sealed)
                    #expect(try ChaCha20Poly1305.open(sealed, key: key, aad: aad).unsafeArray() == plaintext)
                }
                count += 1
            }
        }
        print("ChaCha20-Poly1305: \(count) vectors run, \(rejected) of them expected to fail authentication")
        #expect(count > 0)
        #expect(rejected > 0)
    }

    // MARK: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03, section A.3.1)

    @Test func xChaCha20Poly1305MatchesTheDraftTestVector() throws {
        let key = SecureBytes(copying: hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
        let aad = hex("50515253c0c1c2c3c4c5c6c7")
        let plaintext = Array(
            ("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
                + "sunscreen would be it.").utf8)
        let ciphertext = hex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39"
            + "ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
            + "21f9664c97637da9768812f615c68b13b52e"
        )
        let tag = hex("c0875924c1c7987947deafd8780acf49")

        let sealed = try XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, aad: aad)
        #expect(sealed == nonce + ciphertext + tag)
        #expect(try XChaCha20Poly1305.open(sealed, key: key, aad: aad).unsafeArray() == plaintext)
        print("XChaCha20-Poly1305: 1 vector run")
    }

    // MARK: Security properties of the libsodium AEADs

    @Test func xChaChaSealedBytesDifferFromThePlaintextAndEachSealIsFresh() throws {
        let key = SecureBytes(randomCount: XChaCha20Poly1305.keySize)
        let plaintext = Array(repeating: UInt8(0x41), count: 64)
        let first = try XChaCha20Poly1305.seal(plaintext, key: key, aad: [UInt8]())
        let second = try XChaCha20Poly1305.seal(plaintext, key: key, aad: [UInt8]())
        #expect(first.count == plaintext.count + XChaCha20Poly1305.overhead)
        #expect(first != second)
        #expect(Array(first[XChaCha20Poly1305.nonceSize..<(XChaCha20Poly1305.nonceSize + 64)]) != plaintext)
    }

    @Test func everyFlippedBitOfAnXChaChaBoxFailsWithTheUniformError() throws {
        let key = SecureBytes(randomCount: 32)
        let sealed = try XChaCha20Poly1305.seal(Array("attack at dawn".utf8), key: key, aad: Array("path/a".utf8))
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x01
            #expect(throws: CryptoError.authenticationFailed()) {
                try XChaCha20Poly1305.open(tampered, key: key, aad: Array("path/a".utf8))
            }
        }
    }

    @Test func anXChaChaBoxOpensOnlyWithItsKeyAndAssociatedData() throws {
        let key = SecureBytes(randomCount: 32)
        let sealed = try XChaCha20Poly1305.seal([1, 2, 3], key: key, aad: Array("path/a".utf8))
        #expect(try XChaCha20Poly1305.open(sealed, key: key, aad: Array("path/a".utf8)).unsafeArray() == [1, 2, 3])
        #expect(throws: CryptoError.authenticationFailed()) {
            try XChaCha20Poly1305.open(sealed, key: key, aad: Array("path/b".utf8))
        }
        #expect(throws: CryptoError.authenticationFailed()) {
            try XChaCha20Poly1305.open(sealed, key: SecureBytes(randomCount: 32), aad: Array("path/a".utf8))
        }
        #expect(throws: CryptoError.authenticationFailed()) {
            try XChaCha20Poly1305.open(Array(sealed.prefix(XChaCha20Poly1305.overhead - 1)), key: key, aad: [UInt8]())
        }
    }

    @Test func emptyPlaintextsRoundTripThroughBothChaChaVariants() throws {
        let key = SecureBytes(randomCount: 32)
        let x = try XChaCha20Poly1305.seal([UInt8](), key: key, aad: [UInt8]())
        #expect(x.count == XChaCha20Poly1305.overhead)
        #expect(try XChaCha20Poly1305.open(x, key: key, aad: [UInt8]()).isEmpty)
        let c = try ChaCha20Poly1305.seal([UInt8](), key: key, aad: [UInt8]())
        #expect(c.count == ChaCha20Poly1305.overhead)
        #expect(try ChaCha20Poly1305.open(c, key: key, aad: [UInt8]()).isEmpty)
    }

    @Test func aKeyOfTheWrongLengthIsInvalidInputNotAnAuthenticationFailure() throws {
        let short = SecureBytes(randomCount: 16)
        let error = #expect(throws: CryptoError.self) { try XChaCha20Poly1305.seal([1], key: short, aad: [UInt8]()) }
        #expect(error?.code == .invalidInput)
        let openError = #expect(throws: CryptoError.self) {
            try ChaCha20Poly1305.open([UInt8](repeating: 0, count: 40), key: short, aad: [UInt8]())
        }
        #expect(openError?.code == .invalidInput)
    }
}
