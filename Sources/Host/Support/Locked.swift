import Glibc

/// A value behind a pthread mutex.
///
/// The host uses this rather than the standard library's `Mutex`: that one is built on raw futexes, which
/// ThreadSanitizer does not model, so every access it protects looked like a race and real races would
/// hide among them. A pthread mutex is understood by the sanitizer and costs the same uncontended.
final class Locked<Value>: @unchecked Sendable {  // every access to `value` is under `mutex`
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the value.
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
