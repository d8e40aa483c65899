import Foundation
import MetacryptCrypto
import Testing

@Suite("Signatures: known answers, encodings and malleability")
struct SignatureTests {
    // MARK: Ed25519 (sign.input, the djb/SUPERCOP test file: sk||pk : pk : message : signature||message :)

    @Test func ed25519SignsAndVerifiesEveryVectorOfTheReferenceImplementation() throws {
        var count = 0
        for line in try Vectors.text("asymmetric/Ed25519/sign.input").split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 4 else { throw VectorError("malformed sign.input line \(count + 1)") }
            let secret = hex(fields[0])
            let publicKey = hex(fields[1])
            let message = hex(fields[2])
            let signature = Array(hex(fields[3]).prefix(64))

            let key = try SigningKey(
                rawRepresentation: SecureBytes(copying: Array(secret.prefix(32))), algorithm: .ed25519)
            #expect(key.verifyingKey.rawRepresentation == publicKey)
            #expect(try key.signature(for: message) == signature)
            let verifier = try VerifyingKey(rawRepresentation: publicKey, algorithm: .ed25519)
            #expect(verifier.isValidSignature(signature, for: message))
            var forged = signature
            forged[count % 64] ^= 0x04
            #expect(!verifier.isValidSignature(forged, for: message))
            count += 1
        }
        print("Ed25519: \(count) sign.input vectors run")
        #expect(count > 0)
    }

    @Test func ed25519RejectsASignatureWhoseSIsNotReducedModuloTheGroupOrder() throws {
        // S + L verifies under the group equation; accepting it would make signatures malleable.
        let groupOrder = hex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
        let key = try SigningKey.generate(.ed25519)
        let message = Array("non-canonical".utf8)
        let signature = try key.signature(for: message)
        #expect(key.verifyingKey.isValidSignature(signature, for: message))

        var malleated = signature
        var carry = 0
        for i in 0..<32 {  // little-endian 256-bit addition into S (bytes 32..<64)
            let sum = Int(malleated[32 + i]) + Int(groupOrder[i]) + carry
            malleated[32 + i] = UInt8(sum & 0xff)
            carry = sum >> 8
        }
        #expect(carry == 0)
        #expect(malleated != signature)
        #expect(!key.verifyingKey.isValidSignature(malleated, for: message))
    }

    // MARK: ECDSA (NIST CAVP FIPS 186-3)

    static let nistSections: [String: SignatureAlgorithm] = [
        "P-256,SHA-256": .ecdsaP256SHA256, "P-384,SHA-384": .ecdsaP384SHA384,
    ]
    static let nistCurves: [String: SignatureAlgorithm] = ["P-256": .ecdsaP256SHA256, "P-384": .ecdsaP384SHA384]

    static func point(_ record: Record, _ algorithm: SignatureAlgorithm) throws -> [UInt8] {
        let size = (algorithm.rawPublicKeySize - 1) / 2
        return [0x04] + leftPadded(try record.bytes("Qx"), to: size) + leftPadded(try record.bytes("Qy"), to: size)
    }

    @Test func ecdsaVerificationAcceptsThePassingAndRejectsTheFailingSigVerVectors() throws {
        var accepted = 0
        var rejected = 0
        for record in try Vectors.records("asymmetric/ECDSA/FIPS_186-3/SigVer.rsp", startKey: "Msg") {
            guard let algorithm = Self.nistSections[record.sectionNames.first ?? ""] else { continue }
            let message = try record.bytes("Msg")
            let result = try record.string("Result")
            let shouldPass = result.hasPrefix("P")
            let signature = try ECDSASignature(r: record.bytes("R"), s: record.bytes("S"))

            let verified: Bool
            if let key = try? VerifyingKey(rawRepresentation: Self.point(record, algorithm), algorithm: algorithm) {
                let der = try signature.derRepresentation()
                let raw = try signature.rawRepresentation(componentSize: (algorithm.rawSignatureSize) / 2)
                verified = key.isValidSignature(der, for: message)
                #expect(key.isValidSignature(raw, for: message, format: .raw) == verified)
            } else {
                verified = false
            }
            #expect(verified == shouldPass, "\(record.sectionNames.first!) \(result)")
            if shouldPass { accepted += 1 } else { rejected += 1 }
        }
        print("ECDSA SigVer (P-256/SHA-256, P-384/SHA-384): \(accepted) valid accepted, \(rejected) invalid rejected")
        #expect(accepted > 0)
        #expect(rejected > 0)
    }

    @Test func ecdsaPrivateScalarsYieldTheNISTPublicKeysAndSigGenSignaturesVerify() throws {
        var keyPairs = 0
        var signatures = 0
        for record in try Vectors.records("asymmetric/ECDSA/FIPS_186-3/KeyPair.rsp", startKey: "d") {
            guard let algorithm = Self.nistCurves[record.sectionNames.first ?? ""] else { continue }
            let scalar = leftPadded(try record.bytes("d"), to: algorithm.rawPrivateKeySize)
            let key = try SigningKey(rawRepresentation: SecureBytes(copying: scalar), algorithm: algorithm)
            #expect(key.verifyingKey.rawRepresentation == (try Self.point(record, algorithm)))
            #expect(try key.rawRepresentation().unsafeArray() == scalar)
            keyPairs += 1
        }
        for record in try Vectors.records("asymmetric/ECDSA/FIPS_186-3/SigGen.txt", startKey: "Msg") {
            guard let algorithm = Self.nistSections[record.sectionNames.first ?? ""] else { continue }
            let scalar = leftPadded(try record.bytes("d"), to: algorithm.rawPrivateKeySize)
            let key = try SigningKey(rawRepresentation: SecureBytes(copying: scalar), algorithm: algorithm)
            #expect(key.verifyingKey.rawRepresentation == (try Self.point(record, algorithm)))
            let message = try record.bytes("Msg")
            let der = try ECDSASignature(r: record.bytes("R"), s: record.bytes("S")).derRepresentation()
            #expect(key.verifyingKey.isValidSignature(der, for: message))
            // Our own signatures (random nonces, so not comparable byte for byte) verify too.
            #expect(key.verifyingKey.isValidSignature(try key.signature(for: message), for: message))
            signatures += 1
        }
        print("ECDSA KeyPair: \(keyPairs) vectors run; SigGen: \(signatures) vectors run")
        #expect(keyPairs > 0)
        #expect(signatures > 0)
    }

    @Test func ecdsaPublicKeyImportAcceptsExactlyTheValidPKVPoints() throws {
        var accepted = 0
        var rejected = 0
        for record in try Vectors.records("asymmetric/ECDSA/FIPS_186-3/PKV.rsp", startKey: "Qx") {
            guard let algorithm = Self.nistCurves[record.sectionNames.first ?? ""] else { continue }
            let result = try record.string("Result")
            let shouldPass = result.hasPrefix("P")
            let imported =
                (try? VerifyingKey(rawRepresentation: Self.point(record, algorithm), algorithm: algorithm)) != nil
            #expect(imported == shouldPass, "\(record.sectionNames.first!) \(result)")
            if shouldPass { accepted += 1 } else { rejected += 1 }
        }
        print("ECDSA PKV (P-256, P-384): \(accepted) valid points accepted, \(rejected) invalid points rejected")
        #expect(accepted > 0)
        #expect(rejected > 0)
    }

    /// OpenSSL's evp test file of RFC 6979 vectors: PKCS#8 and SPKI PEM keys, signatures, and corrupted ones.
    @Test func ecdsaKeysAndSignaturesFromTheRFC6979FileImportAndVerify() throws {
        let algorithms: [String: (SignatureAlgorithm, String)] = [
            "P-256": (.ecdsaP256SHA256, "SHA256"), "P-384": (.ecdsaP384SHA384, "SHA384"),
        ]
        var privateKeys: [String: SigningKey] = [:]
        var publicKeys: [String: VerifyingKey] = [:]
        var verified = 0
        var rejected = 0
        var pairs = 0

        let lines = try Vectors.text("asymmetric/ECDSA/RFC6979/evppkey_ecdsa_rfc6979.txt")
            .split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
        var stanza: [String: String] = [:]
        var index = 0
        func finishStanza() throws {
            defer { stanza = [:] }
            guard let digest = stanza["DigestVerify"] ?? stanza["DigestSign"], let keyName = stanza["Key"] else {
                return
            }
            let curve = String(keyName.prefix { $0 != "_" })
            guard let (algorithm, wanted) = algorithms[curve], digest == wanted else { return }
            let verifier = try #require(
                publicKeys[curve + "_PUB"] ?? privateKeys[curve + "_PRIV"]?.verifyingKey)
            #expect(verifier.algorithm == algorithm)
            let input = Array(try #require(stanza["Input"]).dropFirst().dropLast().utf8)
            let signature = hex(try #require(stanza["Output"]))
            if stanza["Result"] == "VERIFY_ERROR" {
                #expect(!verifier.isValidSignature(signature, for: input))
                rejected += 1
            } else {
                #expect(verifier.isValidSignature(signature, for: input))
                verified += 1
            }
        }
        while index < lines.count {
            let line = lines[index]
            index += 1
            if line.hasPrefix("PrivateKey=") || line.hasPrefix("PublicKey=") {
                let name = String(line.split(separator: "=")[1])
                var pem = ""
                while index < lines.count {
                    pem += lines[index] + "\n"
                    index += 1
                    if lines[index - 1].hasPrefix("-----END") { break }
                }
                let curve = String(name.prefix { $0 != "_" })
                guard algorithms[curve] != nil else { continue }
                if line.hasPrefix("PrivateKey=") {
                    privateKeys[name] = try SigningKey(pkcs8PEM: Array(pem.utf8))
                } else {
                    publicKeys[name] = try VerifyingKey(spkiPEM: Array(pem.utf8))
                }
            } else if line.hasPrefix("PrivPubKeyPair") {
                let names = line.split(separator: "=")[1].split(separator: ":").map(String.init)
                if let priv = privateKeys[names[0]], let pub = publicKeys[names[1]] {
                    #expect(priv.verifyingKey.rawRepresentation == pub.rawRepresentation)
                    #expect(try priv.verifyingKey.spkiDER() == pub.spkiDER())
                    pairs += 1
                }
            } else if line.trimmingCharacters(in: .whitespaces).isEmpty {
                try finishStanza()
            } else if !line.hasPrefix("#"), let equals = line.firstIndex(of: "=") {
                stanza[line[..<equals].trimmingCharacters(in: .whitespaces)] =
                    line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            }
        }
        try finishStanza()
        print(
            "ECDSA RFC 6979 file (P-256/SHA256, P-384/SHA384): \(pairs) PEM key pairs imported, "
                + "\(verified) signatures verified, \(rejected) corrupted signatures rejected")
        #expect(pairs == 2)
        #expect(verified > 0)
        #expect(rejected > 0)
    }

    @Test func ecdsaVerificationRejectsMalformedDER() throws {
        for algorithm in [SignatureAlgorithm.ecdsaP256SHA256, .ecdsaP384SHA384] {
            let key = try SigningKey.generate(algorithm)
            let message = Array("malformed".utf8)
            let der = try key.signature(for: message)
            let verifier = key.verifyingKey
            #expect(verifier.isValidSignature(der, for: message))

            let parsed = try ECDSASignature(derRepresentation: der)
            let canonicalR = integer(parsed.r)
            let rInteger = [0x02, canonicalR[1] + 1, 0x00] + canonicalR.dropFirst(2)  // r with a redundant zero byte
            let sInteger = integer(parsed.s)
            let malformed: [String: [UInt8]] = [
                "trailing byte": der + [0x00],
                "truncated": Array(der.dropLast()),
                "empty": [],
                "long-form length": [0x30, 0x81, der[1]] + der.dropFirst(2),
                "indefinite length": [0x30, 0x80] + der.dropFirst(2) + [0x00, 0x00],
                "padded r": [0x30, UInt8(rInteger.count + sInteger.count)] + rInteger + sInteger,
                "wrong outer tag": [0x31] + der.dropFirst(),
                "raw bytes given as DER": try parsed.rawRepresentation(componentSize: algorithm.rawSignatureSize / 2),
            ]
            for (name, bytes) in malformed {
                #expect(!verifier.isValidSignature(bytes, for: message), "\(algorithm) accepted \(name)")
            }
            #expect(!verifier.isValidSignature(der, for: message, format: .raw))
        }
    }

    @Test func ecdsaNegativeOrZeroIntegersAreNeverASignature() throws {
        #expect(throws: CryptoError.self) {
            try ECDSASignature(derRepresentation: [0x30, 0x06, 0x02, 0x01, 0xff, 0x02, 0x01, 0x01])
        }
        #expect(throws: CryptoError.self) {
            try ECDSASignature(derRepresentation: [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01])
        }
        #expect(throws: CryptoError.self) { try ECDSASignature(r: [0, 0], s: [1]) }
        #expect(throws: CryptoError.self) { try ECDSASignature(rawRepresentation: [UInt8](repeating: 1, count: 63)) }
    }

    @Test func ecdsaSignaturesConvertBetweenDERAndIntegersBothWays() throws {
        // r with its top bit set needs a leading zero in DER; s with leading zero bytes loses them.
        let r = [0x80] + [UInt8](repeating: 0x11, count: 31)
        let s: [UInt8] = [0x00, 0x00, 0x7f, 0x01]
        let signature = try ECDSASignature(r: r, s: s)
        #expect(signature.s == [0x7f, 0x01])
        let der = try signature.derRepresentation()
        #expect(der == [0x30, 0x27, 0x02, 0x21, 0x00] + r + [0x02, 0x02, 0x7f, 0x01])
        #expect(try ECDSASignature(derRepresentation: der) == signature)
        let raw = try signature.rawRepresentation(componentSize: 32)
        #expect(raw.count == 64)
        #expect(try ECDSASignature(rawRepresentation: raw) == signature)
        #expect(throws: CryptoError.self) { try signature.rawRepresentation(componentSize: 16) }
    }

    @Test(arguments: SignatureAlgorithm.allCases)
    func signingKeysRoundTripThroughEveryEncoding(algorithm: SignatureAlgorithm) throws {
        let key = try SigningKey.generate(algorithm)
        let raw = try key.rawRepresentation()
        #expect(raw.count == algorithm.rawPrivateKeySize)
        #expect(key.verifyingKey.rawRepresentation.count == algorithm.rawPublicKeySize)

        let fromRaw = try SigningKey(rawRepresentation: raw, algorithm: algorithm)
        let fromDER = try SigningKey(pkcs8DER: key.pkcs8DER())
        let fromPEM = try SigningKey(pkcs8PEM: key.pkcs8PEM())
        #expect(try key.pkcs8PEM().unsafeArray().starts(with: Array("-----BEGIN PRIVATE KEY-----".utf8)))
        for copy in [fromRaw, fromDER, fromPEM] {
            #expect(copy.algorithm == algorithm)
            #expect(try copy.rawRepresentation() == raw)
            #expect(copy.verifyingKey.rawRepresentation == key.verifyingKey.rawRepresentation)
        }

        let spki = try key.verifyingKey.spkiDER()
        let pem = try key.verifyingKey.spkiPEM()
        #expect(pem.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        for verifier in [
            try VerifyingKey(spkiDER: spki), try VerifyingKey(spkiPEM: Array(pem.utf8)),
            try VerifyingKey(rawRepresentation: key.verifyingKey.rawRepresentation, algorithm: algorithm),
        ] {
            #expect(verifier.algorithm == algorithm)
            #expect(try verifier.spkiDER() == spki)
            let message = Array("round trip".utf8)
            #expect(verifier.isValidSignature(try fromPEM.signature(for: message), for: message))
            let raw = try key.signature(for: message, format: .raw)
            #expect(raw.count == algorithm.rawSignatureSize)
            #expect(verifier.isValidSignature(raw, for: message, format: .raw))
            #expect(!verifier.isValidSignature(raw, for: Array("other".utf8), format: .raw))
        }
    }

    @Test func aSignatureDoesNotVerifyUnderAnotherKey() throws {
        for algorithm in SignatureAlgorithm.allCases {
            let message = Array("who signed".utf8)
            let signature = try SigningKey.generate(algorithm).signature(for: message)
            #expect(!(try SigningKey.generate(algorithm).verifyingKey.isValidSignature(signature, for: message)))
        }
    }

    @Test func rawKeysOfTheWrongSizeOrOutOfRangeAreRefused() throws {
        let order256 = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
        let bad: [(SignatureAlgorithm, [UInt8])] = [
            (.ed25519, [UInt8](repeating: 1, count: 31)),
            (.ecdsaP256SHA256, [UInt8](repeating: 1, count: 48)),
            (.ecdsaP384SHA384, [UInt8](repeating: 1, count: 32)),
            (.ecdsaP256SHA256, [UInt8](repeating: 0, count: 32)),
            (.ecdsaP256SHA256, order256),
            (.ecdsaP256SHA256, [UInt8](repeating: 0xff, count: 32)),
        ]
        for (algorithm, bytes) in bad {
            let error = #expect(throws: CryptoError.self) {
                try SigningKey(rawRepresentation: SecureBytes(copying: bytes), algorithm: algorithm)
            }
            #expect(error?.code == .invalidInput)
        }
        // The order minus one is the largest valid scalar.
        var largest = order256
        largest[31] -= 1
        _ = try SigningKey(rawRepresentation: SecureBytes(copying: largest), algorithm: .ecdsaP256SHA256)

        let p256 = try SigningKey.generate(.ecdsaP256SHA256).verifyingKey.rawRepresentation
        #expect(throws: CryptoError.self) { try VerifyingKey(rawRepresentation: p256, algorithm: .ecdsaP384SHA384) }
        #expect(throws: CryptoError.self) { try VerifyingKey(rawRepresentation: [0x00], algorithm: .ecdsaP256SHA256) }
        var compressed = Array(p256.prefix(33))
        compressed[0] = 0x02 | (p256[64] & 1)
        #expect(throws: CryptoError.self) {
            try VerifyingKey(rawRepresentation: compressed, algorithm: .ecdsaP256SHA256)
        }
    }

    @Test func keysFromTheVectorPackageImportAndForeignOrUnsafeOnesAreRefused() throws {
        let ed25519 = try SigningKey(pkcs8DER: Vectors.data("asymmetric/Ed25519/ed25519-pkcs8.der"))
        #expect(ed25519.algorithm == .ed25519)
        let ed25519Public = try VerifyingKey(spkiDER: Vectors.data("asymmetric/Ed25519/ed25519-pub.der"))
        #expect(ed25519Public.rawRepresentation == ed25519.verifyingKey.rawRepresentation)
        #expect(try SigningKey(pkcs8PEM: Vectors.data("asymmetric/Ed25519/ed25519-pkcs8.pem")).algorithm == .ed25519)
        #expect(
            try SigningKey(pkcs8PEM: Vectors.data("asymmetric/PKCS8/ec_private_key.pem")).algorithm == .ecdsaP256SHA256)
        #expect(
            try VerifyingKey(spkiPEM: Vectors.data("asymmetric/PEM_Serialization/ec_public_key.pem")).algorithm
                == .ecdsaP256SHA256)

        let refusedPrivate = [
            "asymmetric/PKCS8/ec_private_key_encrypted.pem",  // encrypted: a server must not prompt for a password
            "asymmetric/PEM_Serialization/ec_private_key.pem",  // SEC1, not PKCS#8
            "asymmetric/PKCS8/ec-inconsistent-curve.pem",
            "asymmetric/PKCS8/ec-invalid-private-scalar.pem",
            "asymmetric/X25519/x25519-pkcs8.pem",  // a key-agreement key is not a signing key
            "asymmetric/PKCS8/unenc-dsa-pkcs8.pem",
            "asymmetric/EC/secp256r1-explicit-no-seed.pem",  // explicit curve parameters
        ]
        for path in refusedPrivate {
            let error = #expect(throws: CryptoError.self, "\(path)") { try SigningKey(pkcs8PEM: Vectors.data(path)) }
            #expect(error?.code == .invalidInput, "\(path)")
        }
        let refusedPublic = [
            "asymmetric/EC/secp256r1-pub-explicit-no-seed.pem",
            "asymmetric/EC/secp384r1-pub-explicit-seed.pem",
            "asymmetric/X25519/x25519-pub.pem",
            "asymmetric/PEM_Serialization/rsa_public_key.pem",
        ]
        for path in refusedPublic {
            let error = #expect(throws: CryptoError.self, "\(path)") { try VerifyingKey(spkiPEM: Vectors.data(path)) }
            #expect(error?.code == .invalidInput, "\(path)")
        }
        #expect(throws: CryptoError.self) {
            try VerifyingKey(spkiDER: Vectors.data("asymmetric/Ed25519/ed25519-pub-non-zero-unused-bits.der"))
        }
        #expect(throws: CryptoError.self) {
            try SigningKey(pkcs8DER: Vectors.data("asymmetric/DER_Serialization/unenc-rsa-pkcs8.der"))
        }
    }

    @Test func encodedKeysWithTrailingDataAreRefused() throws {
        let key = try SigningKey.generate(.ecdsaP256SHA256)
        var der = try key.pkcs8DER().unsafeArray()
        der.append(0)
        #expect(throws: CryptoError.self) { try SigningKey(pkcs8DER: der) }
        #expect(throws: CryptoError.self) { try VerifyingKey(spkiDER: try key.verifyingKey.spkiDER() + [0]) }

        let pem = try key.verifyingKey.spkiPEM()
        _ = try VerifyingKey(spkiPEM: Array(("explanatory text\n" + pem + "\n\n").utf8))
        #expect(throws: CryptoError.self) { try VerifyingKey(spkiPEM: Array((pem + pem).utf8)) }
        #expect(throws: CryptoError.self) {
            try VerifyingKey(spkiPEM: Array(pem.replacingOccurrences(of: "PUBLIC", with: "PRIVATE").utf8))
        }
    }

    private func integer(_ value: [UInt8]) -> [UInt8] {
        let body = value[0] & 0x80 != 0 ? [0x00] + value : value
        return [0x02, UInt8(body.count)] + body
    }
}
