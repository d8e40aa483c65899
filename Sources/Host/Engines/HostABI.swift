import EngineABI
import Glibc
import MetacryptCrypto

/// The host's side of the engine ABI: the `mc_host` table handed to every engine.
///
/// Every callback validates what the engine passes before acting on it. Storage keys are checked
/// (audit #48) before the mount prefix is added, so no key can reach outside the mount.
enum HostABI {
    nonisolated(unsafe) static let table: UnsafePointer<mc_host> = {  // immutable once built
        let pointer = UnsafeMutablePointer<mc_host>.allocate(capacity: 1)
        pointer.initialize(to: mc_host(
            size: UInt32(MemoryLayout<mc_host>.size),
            abi_version: UInt32(MC_ABI_VERSION),
            alloc: { length in HostABI.allocate(length) },
            release: { pointer in HostABI.release(pointer) },
            wipe: { pointer, length in secureWipe(pointer, length) },
            random: { out, length in
                guard let out else { return length == 0 ? MC_OK : MC_ERR_INVALID }
                randomFill(UnsafeMutableRawBufferPointer(start: out, count: length))
                return MC_OK
            },
            log: { mount, level, message, length in
                guard let message else { return }
                let text = String(decoding: UnsafeRawBufferPointer(start: message, count: length), as: UTF8.self)
                let context = mount.map { Unmanaged<MountContext>.fromOpaque($0).takeUnretainedValue() }
                let logger = context?.logger ?? Logger(label: "engine")
                let mapped: Logger.Level = switch level {
                case MC_LOG_ERROR: .error
                case MC_LOG_WARN: .warning
                case MC_LOG_DEBUG: .debug
                default: .info
                }
                logger.log(mapped, text, ["mount.name": context?.mountName ?? "-"])
            },
            storage_get: { mount, key, keyLength, value, valueLength, reason in
                HostABI.call(reason) {
                    guard let mount, let value, let valueLength else { throw HostCallError.invalid("NULL argument") }
                    let context = Unmanaged<MountContext>.fromOpaque(mount).takeUnretainedValue()
                    let path = try context.storagePath(key, keyLength)
                    guard let plaintext = try context.barrier.get(path) else {
                        throw HostCallError(code: MC_ERR_NOT_FOUND, reason: "no value at that key")
                    }
                    // Hand-off: the engine owns this copy and releases (wipes) it with host->release.
                    let out = HostABI.allocate(plaintext.count)
                    guard let out else { throw HostCallError(code: MC_ERR_NO_MEMORY, reason: "out of memory") }
                    plaintext.withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    value.pointee = out.assumingMemoryBound(to: UInt8.self)
                    valueLength.pointee = plaintext.count
                }
            },
            storage_put: { mount, key, keyLength, value, valueLength, flags, reason in
                HostABI.call(reason) {
                    guard let mount else { throw HostCallError.invalid("NULL mount") }
                    guard value != nil || valueLength == 0 else { throw HostCallError.invalid("NULL value") }
                    guard valueLength <= MountContext.maxValueBytes else {
                        throw HostCallError(code: MC_ERR_TOO_LARGE, reason: "value of \(valueLength) bytes exceeds the limit")
                    }
                    let context = Unmanaged<MountContext>.fromOpaque(mount).takeUnretainedValue()
                    let path = try context.storagePath(key, keyLength)
                    let bytes = UnsafeRawBufferPointer(start: value, count: valueLength)
                    let written = try context.barrier.put(
                        path, value: Array(bytes), keyID: context.keyID, createOnly: flags & MC_PUT_CREATE_ONLY != 0)
                    guard written else { throw HostCallError(code: MC_ERR_EXISTS, reason: "the key exists") }
                }
            },
            storage_delete: { mount, key, keyLength, reason in
                HostABI.call(reason) {
                    guard let mount else { throw HostCallError.invalid("NULL mount") }
                    let context = Unmanaged<MountContext>.fromOpaque(mount).takeUnretainedValue()
                    guard try context.barrier.delete(try context.storagePath(key, keyLength)) else {
                        throw HostCallError(code: MC_ERR_NOT_FOUND, reason: "no value at that key")
                    }
                }
            },
            storage_list: { mount, prefix, prefixLength, keys, keysLength, reason in
                HostABI.call(reason) {
                    guard let mount, let keys, let keysLength else { throw HostCallError.invalid("NULL argument") }
                    let context = Unmanaged<MountContext>.fromOpaque(mount).takeUnretainedValue()
                    let bytes = prefix.map { Array(UnsafeRawBufferPointer(start: $0, count: prefixLength)) } ?? []
                    if let problem = Names.storageKeyProblem(bytes, allowEmpty: true, trailingSlash: true) {
                        throw HostCallError(code: MC_ERR_BAD_KEY, reason: problem)
                    }
                    let full = context.prefix + String(decoding: bytes, as: UTF8.self)
                    var buffer: [UInt8] = []
                    for path in try context.barrier.list(prefix: full) {
                        buffer += Array(path.utf8.dropFirst(context.prefix.utf8.count)) + [0]
                    }
                    let out = HostABI.allocate(buffer.count)
                    guard let out else { throw HostCallError(code: MC_ERR_NO_MEMORY, reason: "out of memory") }
                    buffer.withUnsafeBytes { if $0.count > 0 { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
                    keys.pointee = out.assumingMemoryBound(to: CChar.self)
                    keysLength.pointee = buffer.count
                }
            },
            policy_check: { request, action, resource, reason in
                HostABI.call(reason) {
                    guard let request, let action, let resource else { throw HostCallError.invalid("NULL argument") }
                    let context = Unmanaged<EngineRequestContext>.fromOpaque(request).takeUnretainedValue()
                    let allowed = context.authorize(String(cString: action), String(cString: resource))
                    guard allowed else { throw HostCallError(code: MC_ERR_DENIED, reason: "denied by policy") }
                }
            },
            public_put: { mount, name, nameLength, value, valueLength, contentType, reason in
                HostABI.call(reason) {
                    guard let mount, let contentType else { throw HostCallError.invalid("NULL argument") }
                    guard value != nil || valueLength == 0 else { throw HostCallError.invalid("NULL value") }
                    guard valueLength <= MountContext.maxValueBytes else {
                        throw HostCallError(code: MC_ERR_TOO_LARGE, reason: "value of \(valueLength) bytes exceeds the limit")
                    }
                    let type = String(cString: contentType)
                    guard RouteSpec.isMediaType(type) else { throw HostCallError.invalid("invalid content type \(type)") }
                    let context = Unmanaged<MountContext>.fromOpaque(mount).takeUnretainedValue()
                    let path = try context.storagePath(name, nameLength)
                    let bytes = Array(UnsafeRawBufferPointer(start: value, count: valueLength))
                    try context.barrier.storage.write {
                        try $0.putPublicObject(path: path, contentType: type, value: bytes)
                    }
                }
            },
            public_delete: { mount, name, nameLength, reason in
                HostABI.call(reason) {
                    guard let mount else { throw HostCallError.invalid("NULL mount") }
                    let context = Unmanaged<MountContext>.fromOpaque(mount).takeUnretainedValue()
                    let path = try context.storagePath(name, nameLength)
                    try context.barrier.storage.write { try $0.deletePublicObjects(path: path) }
                }
            }))
        return UnsafePointer(pointer)
    }()

    static func allocate(_ length: Int) -> UnsafeMutableRawPointer? { WipingAllocator.allocate(length) }

    static func release(_ pointer: UnsafeMutableRawPointer?) { WipingAllocator.release(pointer) }

    /// A NUL-terminated copy of `text` from the host allocator, for reason out-parameters.
    static func string(_ text: String) -> UnsafeMutablePointer<CChar>? {
        let bytes = Array(text.utf8) + [0]
        guard let out = allocate(bytes.count) else { return nil }
        bytes.withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return out.assumingMemoryBound(to: CChar.self)
    }

    /// Runs a callback body; maps thrown errors to a code and a reason. Starts at MC_ERR_INTERNAL.
    static func call(_ reason: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ body: () throws -> Void) -> Int32 {
        var result = MC_ERR_INTERNAL
        var message = "internal error"
        do {
            try body()
            result = MC_OK
        } catch let error as HostCallError {
            result = error.code
            message = error.reason
        } catch let error as BarrierError {
            switch error.code {
            case .sealed: result = MC_ERR_SEALED
            case .invalidPath, .invalidArgument: result = MC_ERR_BAD_KEY
            default: result = MC_ERR_STORAGE
            }
            message = error.code == .sealed ? "sealed" : "storage error: \(error.code.rawValue)"
        } catch {
            result = MC_ERR_STORAGE
            message = "storage error"
        }
        if result != MC_OK, let reason { reason.pointee = string(message) }
        return result
    }
}

struct HostCallError: Error {
    let code: Int32
    let reason: String

    static func invalid(_ why: String) -> HostCallError { HostCallError(code: MC_ERR_INVALID, reason: why) }
}

/// What the host knows about one mount, behind the `host_mount` pointer an engine gets.
final class MountContext: @unchecked Sendable {  // immutable
    static let maxValueBytes = 16 << 20

    let mountName: String
    let type: String
    let keyID: String
    /// "engine/<type>/<mount>/"
    let prefix: String
    let barrier: Barrier
    let logger: Logger

    init(mountName: String, type: String, barrier: Barrier, logger: Logger) {
        self.mountName = mountName
        self.type = type
        self.keyID = MountContext.keyID(for: mountName)
        self.prefix = "engine/\(type)/\(mountName)/"
        self.barrier = barrier
        self.logger = logger
    }

    static func keyID(for mount: String) -> String { "mount:\(mount)" }

    /// The full barrier path for an engine's key, after validating the key (audit #48).
    func storagePath(_ key: UnsafePointer<CChar>?, _ length: Int) throws -> String {
        guard let key else { throw HostCallError(code: MC_ERR_BAD_KEY, reason: "NULL key") }
        let bytes = Array(UnsafeRawBufferPointer(start: key, count: length))
        if let problem = Names.storageKeyProblem(bytes) { throw HostCallError(code: MC_ERR_BAD_KEY, reason: problem) }
        return prefix + String(decoding: bytes, as: UTF8.self)
    }
}

/// What the host knows about one engine request, behind the `host_request` pointer.
final class EngineRequestContext {
    let authorize: (String, String) -> Bool

    init(authorize: @escaping (String, String) -> Bool) {
        self.authorize = authorize
    }
}
