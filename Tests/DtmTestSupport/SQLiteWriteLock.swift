import CSQLite
import DtmEngine

/// Holds SQLite's write lock on a database from a second connection, as another process could
/// (the store's health probe then fails). Released by `release()` or when dropped.
public final class SQLiteWriteLock {
    private var db: OpaquePointer?

    /// Waits (up to 30 s) for a write the store has under way to end: the store writes on its
    /// own (health probes, retries), so the lock may be taken at that moment.
    public init(path: String) throws {
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK,
              sqlite3_busy_timeout(db, 30_000) == SQLITE_OK,
              sqlite3_exec(db, "BEGIN IMMEDIATE", nil, nil, nil) == SQLITE_OK else {
            defer { sqlite3_close_v2(db) }
            throw StoreError.database("cannot lock \(path)")
        }
    }

    public func release() {
        guard db != nil else { return }
        sqlite3_exec(db, "COMMIT", nil, nil, nil)
        sqlite3_close_v2(db)
        db = nil
    }

    deinit { release() }
}
