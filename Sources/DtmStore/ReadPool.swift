import DtmEngine
import Foundation

/// Read-only connections lent to callers for point reads run on the caller's own thread.
///
/// A read through the reader thread costs two thread switches (there and back), more than the
/// read itself: a lookup by gid touches a handful of cached pages. WAL readers take no lock
/// that a writer holds, and each statement (autocommit) reads the latest committed snapshot,
/// so a read started after a write was answered sees that write, as on the reader thread.
/// The lent connections never wait: their busy timeout is zero, and a read that finds a lock
/// taken (WAL recovery by another process) is handed to the reader thread, which may wait.
/// At most `limit` connections are open; when all are lent the caller uses the reader thread.
final class ReadPool: @unchecked Sendable {
    // `idle`, `opened` and `closed` are guarded by `lock`; a connection is used by the one
    // caller that took it until it gives it back (the connections are opened NOMUTEX).
    private let lock = NSLock()
    private var idle: [SQLiteConnection] = []
    private var opened = 0
    private var closed = false
    private let path: String
    private let limit: Int

    init(path: String, limit: Int) {
        self.path = path
        self.limit = limit
    }

    /// Runs `work` on a lent connection of this thread. Nil when it should go to the reader
    /// thread instead: every connection is lent, the pool is closed, a connection cannot be
    /// opened, or the read found a lock taken.
    func read<T>(_ work: (SQLiteConnection) throws(StoreError) -> T) -> Result<T, StoreError>? {
        guard let connection = take() else { return nil }
        let result: Result<T, StoreError>
        do throws(StoreError) {
            result = .success(try work(connection))
        } catch {
            result = .failure(error)
        }
        let busy = connection.lastErrorWasBusy
        give(connection)
        if case .failure = result, busy { return nil }
        return result
    }

    private func take() -> SQLiteConnection? {
        lock.lock()
        if closed {
            lock.unlock()
            return nil
        }
        if let connection = idle.popLast() {
            lock.unlock()
            return connection
        }
        guard opened < limit else {
            lock.unlock()
            return nil
        }
        opened += 1
        lock.unlock()
        do throws(StoreError) {
            let connection = try SQLiteConnection(path: path)
            try connection.executeScript("PRAGMA query_only = ON", context: "set query_only")
            return connection
        } catch {
            lock.lock()
            opened -= 1
            lock.unlock()
            return nil
        }
    }

    private func give(_ connection: SQLiteConnection) {
        lock.lock()
        if closed {
            opened -= 1
            lock.unlock()
            connection.close()
            return
        }
        idle.append(connection)
        lock.unlock()
    }

    /// Closes the idle connections now and the lent ones when they come back; later reads go
    /// to the reader thread (which answers that the store is closed).
    func close() {
        lock.lock()
        closed = true
        let connections = idle
        idle = []
        opened -= connections.count
        lock.unlock()
        for connection in connections { connection.close() }
    }
}
