import EngineABI
import EngineKit

// The transit engine: encryption, signing and HMAC as a service. This is its skeleton: the route table
// and mount lifecycle through EngineKit, with key listing. TODO: keys, encrypt/decrypt, sign (#4).

@_cdecl("metacrypt_engine_v1")
public func metacryptEngineEntry(_ hostABI: UInt32, _ host: UnsafePointer<mc_host>?) -> UnsafePointer<mc_engine>? {
    EngineExport.entry(TransitEngine.definition, hostABI: hostABI, host: host)
}

final class TransitEngine: MountedEngine, @unchecked Sendable {  // immutable
    static let definition = EngineDefinition(
        name: "transit", version: "0.1.0",
        routes: [
            RouteDeclaration("list-keys", "GET", "keys", access: .authenticated, action: "read", resource: "keys"),
        ],
        makeMount: { TransitEngine(mount: $0) })

    let mount: MountInfo

    init(mount: MountInfo) { self.mount = mount }

    func unseal() throws {}
    func seal() {}

    func handle(_ request: EngineRequest) throws -> EngineResponse {
        switch request.operation {
        case "list-keys":
            let names = try mount.storage.list(prefix: "keys/").map { String($0.dropFirst("keys/".count)) }
            return try .json(["keys": names])
        default:
            throw EngineError(code: MC_ERR_UNSUPPORTED, "unknown operation \(request.operation)")
        }
    }
}
