import CSQLite
import DtmEngine

/// Holds SQLite's write lock on a database from a second connection, as another process could
/// (the store's health probe then fails). Released by `release()` or when dropped.
public final class SQLiteWriteLock {
    private var db: OpaquePointer?

    public init(path: String) throws {
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK,
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
