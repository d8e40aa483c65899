import MetacryptJSON
import EngineABI
import EngineKit
import MetacryptCrypto

// The data operations: encrypt, decrypt, rewrap, datakey, sign, verify, hmac, verify-hmac. Each takes one
// item or a `batch_input` of up to 500, and works on one snapshot of the key for the whole request.

extension TransitEngine {
    /// One data operation: the key types it works with, the fields of an item, and what it does with one item.
    struct Operation: Sendable {
        enum Purpose: Sendable {
            case aead, signing, hmac

            func accepts(_ type: KeyType) -> Bool {
                switch self {
                case .aead: type.isAEAD
                case .signing: type.signatureAlgorithm != nil
                case .hmac: type.isHMAC
                }
            }

            var typesText: String {
                switch self {
                case .aead: KeyType.aeadTypes
                case .signing: KeyType.signingTypes
                case .hmac: KeyType.hmacTypes
                }
            }
        }

        let purpose: Purpose
        let fields: Set<String>
        let perform: @Sendable (TransitEngine, Fields, KeyRing) throws -> [String: JSONValue]
    }

    static let operations: [String: Operation] = [
        "encrypt": Operation(
            purpose: .aead, fields: ["plaintext", "context", "key_version"], perform: { try $0.encrypt($1, $2) }),
        "decrypt": Operation(purpose: .aead, fields: ["ciphertext", "context"], perform: { try $0.decrypt($1, $2) }),
        "rewrap": Operation(
            purpose: .aead, fields: ["ciphertext", "context", "key_version"], perform: { try $0.rewrap($1, $2) }),
        "datakey": Operation(
            purpose: .aead, fields: ["context", "return_plaintext"], perform: { try $0.dataKey($1, $2) }),
        "sign": Operation(purpose: .signing, fields: ["input", "key_version"], perform: { try $0.sign($1, $2) }),
        "verify": Operation(purpose: .signing, fields: ["input", "signature"], perform: { try $0.verify($1, $2) }),
        "hmac": Operation(purpose: .hmac, fields: ["input", "key_version"], perform: { try $0.hmac($1, $2) }),
        "verify-hmac": Operation(purpose: .hmac, fields: ["input", "hmac"], perform: { try $0.verifyHMAC($1, $2) }),
    ]

    func operate(_ name: String, _ operationName: String, _ request: EngineRequest) throws -> EngineResponse {
        guard let operation = Self.operations[operationName] else {
            throw EngineError(code: MC_ERR_UNSUPPORTED, "unknown operation \(operationName)")
        }
        let ring = try keys.ring(name)
        guard operation.purpose.accepts(ring.type) else {
            throw EngineError.invalid(
                "key \(name) is \(ring.type.rawValue); \(operationName) needs a key of type \(operation.purpose.typesText)"
            )
        }
        let fields = try Fields.body(request.body, allowed: operation.fields.union(["batch_input"]))

        guard let batch = fields.values["batch_input"] else { return try .json(operation.perform(self, fields, ring)) }
        guard fields.values.count == 1 else {
            throw EngineError.invalid("batch_input cannot be combined with other fields; give each item its own")
        }
        guard case .array(let items) = batch else {
            throw EngineError.invalid("batch_input must be an array, not \(batch.typeName)")
        }
        guard !items.isEmpty, items.count <= Self.maximumBatch else {
            throw EngineError.invalid("batch_input has \(items.count) items; it takes 1 to \(Self.maximumBatch)")
        }
        // Each item succeeds or fails on its own; only a failure that is not the caller's fails the batch.
        var results: [JSONValue] = []
        results.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            do {
                let itemFields = try Fields(item, place: "batch_input[\(index)].", allowed: operation.fields)
                results.append(.object(try operation.perform(self, itemFields, ring)))
            } catch let error as EngineError where error.code == MC_ERR_INVALID {
                results.append(.object(["error": .string(error.reason)]))
            }
        }
        return try .json(["batch_results": JSONValue.array(results)])
    }

    // MARK: - AEAD

    private func context(_ fields: Fields) throws -> [UInt8] {
        try fields.base64("context", maximum: Self.maximumContext) ?? []
    }

    private func seal(_ plaintext: some ByteView, _ ring: KeyRing, _ key: KeyVersion, context: [UInt8]) throws
        -> [String: JSONValue]
    {
        let aad = AssociatedData.make(key: ring.name, version: key.version, context: context)
        let sealed = try cryptoCall {
            ring.type == .aes256GCM
                ? try AESGCM.seal(plaintext, key: key.material, aad: aad)
                : try XChaCha20Poly1305.seal(plaintext, key: key.material, aad: aad)
        }
        return [
            "ciphertext": .string(Envelope.format(version: key.version, payload: sealed)),
            "key_version": .integer(Int64(key.version)),
        ]
    }

    /// Opens a ciphertext envelope. Every authentication failure gives one message, whatever failed.
    private func open(_ fields: Fields, _ ring: KeyRing) throws -> SecureBytes {
        let text = try fields.requiredString("ciphertext")
        let context = try context(fields)
        let (version, payload) = try Envelope.parse(text, what: "\(fields.place)ciphertext")
        let key = try ring.decryptionVersion(version, what: "\(fields.place)ciphertext")
        let overhead = ring.type == .aes256GCM ? AESGCM.overhead : XChaCha20Poly1305.overhead
        guard payload.count >= overhead else {
            throw EngineError.invalid(
                "\(fields.place)ciphertext is too short: \(payload.count) bytes, but a \(ring.type.rawValue) ciphertext "
                    + "has at least \(overhead) (nonce and tag)")
        }
        let aad = AssociatedData.make(key: ring.name, version: version, context: context)
        do {
            return ring.type == .aes256GCM
                ? try AESGCM.open(payload, key: key.material, aad: aad)
                : try XChaCha20Poly1305.open(payload, key: key.material, aad: aad)
        } catch let error as CryptoError where error.code == .authenticationFailed {
            throw EngineError.invalid(
                "\(fields.place)ciphertext could not be decrypted: it was damaged, or made with another key or context")
        }
    }

    func encrypt(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        var plaintext = try fields.requiredBase64("plaintext", maximum: Self.maximumInput)
        defer { secureWipe(&plaintext) }
        let context = try context(fields)
        let key = try ring.encryptionVersion(fields.version("key_version"), place: fields.place)
        return try seal(plaintext, ring, key, context: context)
    }

    func decrypt(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let plaintext = try open(fields, ring)
        // XXX: the base64 String and the JSON response built from it are copies of the plaintext that cannot be
        // wiped; the host wipes the response buffer when it releases it.
        return ["plaintext": .string(Base64.encode(plaintext))]
    }

    func rewrap(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let key = try ring.encryptionVersion(fields.version("key_version"), place: fields.place)
        let plaintext = try open(fields, ring)
        return try seal(plaintext, ring, key, context: context(fields))
    }

    func dataKey(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let returnPlaintext = try fields.bool("return_plaintext") ?? true
        let dataKey = SecureBytes(randomCount: Self.dataKeySize)
        var result = try seal(dataKey, ring, ring.encryptionVersion(nil), context: context(fields))
        if returnPlaintext { result["plaintext"] = .string(Base64.encode(dataKey)) }  // XXX: as in decrypt
        return result
    }

    // MARK: - Signatures

    func sign(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let input = try fields.requiredBase64("input", maximum: Self.maximumInput)
        let key = try ring.encryptionVersion(fields.version("key_version"), place: fields.place)
        guard let signingKey = key.signingKey else { throw EngineError(code: MC_ERR_INTERNAL, "no signing key") }
        let signature = try cryptoCall { try signingKey.signature(for: input, format: .der) }
        return [
            "signature": .string(Envelope.format(version: key.version, payload: signature)),
            "key_version": .integer(Int64(key.version)),
        ]
    }

    func verify(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let input = try fields.requiredBase64("input", maximum: Self.maximumInput)
        let (version, signature) = try Envelope.parse(
            try fields.requiredString("signature"),
            what: "\(fields.place)signature")
        let key = try ring.decryptionVersion(version, what: "\(fields.place)signature")
        guard let signingKey = key.signingKey else { throw EngineError(code: MC_ERR_INTERNAL, "no signing key") }
        let valid = signingKey.verifyingKey.isValidSignature(signature, for: input, format: .der)
        return ["valid": .bool(valid), "key_version": .integer(Int64(version))]
    }

    // MARK: - HMAC

    func hmac(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let input = try fields.requiredBase64("input", maximum: Self.maximumInput)
        let key = try ring.encryptionVersion(fields.version("key_version"), place: fields.place)
        guard let algorithm = ring.type.hmacAlgorithm else { throw EngineError(code: MC_ERR_INTERNAL, "no HMAC key") }
        let code = HMAC.authenticationCode(for: input, key: key.material, algorithm: algorithm)
        return [
            "hmac": .string(Envelope.format(version: key.version, payload: code)),
            "key_version": .integer(Int64(key.version)),
        ]
    }

    func verifyHMAC(_ fields: Fields, _ ring: KeyRing) throws -> [String: JSONValue] {
        let input = try fields.requiredBase64("input", maximum: Self.maximumInput)
        let (version, code) = try Envelope.parse(try fields.requiredString("hmac"), what: "\(fields.place)hmac")
        let key = try ring.decryptionVersion(version, what: "\(fields.place)hmac")
        guard let algorithm = ring.type.hmacAlgorithm else { throw EngineError(code: MC_ERR_INTERNAL, "no HMAC key") }
        let valid = HMAC.isValidAuthenticationCode(code, for: input, key: key.material, algorithm: algorithm)
        return ["valid": .bool(valid), "key_version": .integer(Int64(version))]
    }

    /// Runs a crypto call whose failure can only be ours (a library error): 500 with the reason.
    private func cryptoCall<R>(_ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let error as CryptoError {
            throw EngineError(code: MC_ERR_INTERNAL, "crypto failure: \(error.reason)")
        }
    }
}
