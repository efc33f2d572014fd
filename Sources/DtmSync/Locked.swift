#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value behind a pthread mutex: the lock of every module (instead of `Synchronization.Mutex`).
///
/// Why not `Mutex`: on Linux, a contended `Mutex` hands the lock over through futex calls inside
/// the uninstrumented Swift runtime, so ThreadSanitizer sees no happens-before between two
/// holders and reports their accesses as races (seen in CI on `CronInbox`; a four-thread loop of
/// `withLock` reproduces it). pthread mutexes are intercepted by TSan, so a report from a
/// sanitized run means a real race. Uncontended, both cost one atomic operation each way.
public final class Locked<Value>: @unchecked Sendable {
    /// Owned by this object: initialised in `init`, destroyed and freed in `deinit`.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Only touched between `pthread_mutex_lock` and `pthread_mutex_unlock`.
    private var value: Value

    public init(_ value: sending Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock; `body` must not call `withLock` on the same
    /// object (the mutex is not recursive).
    public func withLock<Result, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
