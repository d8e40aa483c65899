import Glibc

/// A reader-writer lock for engine state. It prefers writers, so a stream of reads cannot starve a change
/// (a rotation, a seal), and readers share it (audit #53).
///
/// Only scoped use is offered (`withReadLock`, `withWriteLock`, each unlocking in a `defer`): no caller
/// can leave it locked on an early return or a throw (audit #66).
public final class ReadWriteLock: @unchecked Sendable {  // pthread_rwlock_t is thread-safe; its address never moves
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    public init() {
        lock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        defer { pthread_rwlockattr_destroy(&attributes) }
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        let rc = pthread_rwlock_init(lock, &attributes)
        precondition(rc == 0, "pthread_rwlock_init failed: \(rc)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    public func withReadLock<R>(_ body: () throws -> R) rethrows -> R {
        let rc = pthread_rwlock_rdlock(lock)
        precondition(rc == 0, "pthread_rwlock_rdlock failed: \(rc)")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    public func withWriteLock<R>(_ body: () throws -> R) rethrows -> R {
        let rc = pthread_rwlock_wrlock(lock)
        precondition(rc == 0, "pthread_rwlock_wrlock failed: \(rc)")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
