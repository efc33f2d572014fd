import CSQLite
import DtmEngine

/// Direct access to a database file through the C API: to check what the store wrote, and
/// for the benchmark's baseline.
final class RawDatabase {
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]

    init(path: String, create: Bool = false) throws {
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0)
        guard sqlite3_open_v2(path, &db, flags, nil) == SQLITE_OK else {
            defer { sqlite3_close_v2(db) }
            throw StoreError.database("open \(path)")
        }
        sqlite3_busy_timeout(db, 5000)
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(db)
    }

    func execute(_ sql: String) throws {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw error() }
    }

    func integer(_ sql: String) throws -> Int64 {
        try firstRow(sql) { sqlite3_column_int64($0, 0) }
    }

    func text(_ sql: String) throws -> String {
        try firstRow(sql) { String(cString: sqlite3_column_text($0, 0)) }
    }

    /// Runs a cached two-parameter INSERT (text, blob) in autocommit unless a transaction is open.
    func insert(_ sql: String, text: String, blob: [UInt8]) throws {
        let statement = try prepared(sql)
        defer { sqlite3_reset(statement) }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        sqlite3_bind_text(statement, 1, text, -1, transient)
        _ = blob.withUnsafeBytes { sqlite3_bind_blob(statement, 2, $0.baseAddress, Int32($0.count), transient) }
        guard sqlite3_step(statement) == SQLITE_DONE else { throw error() }
    }

    private func firstRow<T>(_ sql: String, _ read: (OpaquePointer) -> T) throws -> T {
        let statement = try prepared(sql)
        defer { sqlite3_reset(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else { throw StoreError.database("no row for \(sql)") }
        return read(statement)
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else { throw error() }
        statements[sql] = statement
        return statement
    }

    private func error() -> StoreError { .database(String(cString: sqlite3_errmsg(db))) }
}
