import Glibc
import Dispatch
import Synchronization
import Testing
@testable import Host
import MetacryptCrypto

@Suite("Seal under load")
struct SealUnderLoadTests {
    /// audit #39: while eight threads read and write, the barrier is sealed and unsealed repeatedly. Every
    /// operation either succeeds with the right bytes or fails with the sealed error; nothing else happens.
    /// Run it under ThreadSanitizer with: swift test -sanitize=thread --filter SealUnderLoad
    @Test func operationsDuringSealEitherSucceedOrReportSealed() throws {
        let (barrier, _, _) = try makeBarrier()
        try barrier.createKey("mount:load")
        for i in 0..<64 { try barrier.put("engine/kv/load/\(i)", value: value(i), keyID: "mount:load") }

        let stop = Atomic<Bool>(false)
        let succeeded = Atomic<Int>(0)
        let sealedErrors = Atomic<Int>(0)
        let unexpected = Mutex<[String]>([])
        var threads: [pthread_t] = []

        for worker in 0..<8 {
            threads.append(startThread {
                var i = worker
                while !stop.load(ordering: .relaxed) {
                    let n = i % 64
                    do {
                        if i % 3 == 0 {
                            try barrier.put("engine/kv/load/\(n)", value: value(n), keyID: "mount:load")
                        } else if let read = try barrier.get("engine/kv/load/\(n)"), read.unsafeArray() != value(n) {
                            unexpected.withLock { $0.append("wrong bytes at \(n)") }
                        }
                        succeeded.add(1, ordering: .relaxed)
                    } catch let error as BarrierError where error.code == .sealed {
                        sealedErrors.add(1, ordering: .relaxed)
                    } catch {
                        unexpected.withLock { $0.append("\(error)") }
                    }
                    i += 8
                }
            })
        }

        // Seal and unseal at least 25 times, and until the load has met both states (bounded in time).
        var cycles = 0
        while cycles < 25 || (succeeded.load(ordering: .relaxed) == 0 || sealedErrors.load(ordering: .relaxed) == 0)
            && cycles < 5_000 {
            usleep(2_000)
            barrier.seal()
            usleep(1_000)
            try barrier.unseal(password: testPassword)
            cycles += 1
        }
        stop.store(true, ordering: .relaxed)
        for thread in threads { pthread_join(thread, nil) }

        #expect(unexpected.withLock { $0 }.isEmpty, "\(unexpected.withLock { $0.prefix(5) })")
        #expect(succeeded.load(ordering: .relaxed) > 0)
        #expect(sealedErrors.load(ordering: .relaxed) > 0, "the load overlapped the sealed windows")
    }
}

private func value(_ n: Int) -> [UInt8] { Array("value number \(n) with some padding".utf8) }

/// A plain POSIX thread, so the load does not depend on a shared thread pool being free.
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let rc = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed")
    return thread
}
