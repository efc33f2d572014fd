import CSQLite
import DtmSync
import NIOPosix

/// A value bound to, or read from, a SQLite statement.
public enum SQLiteValue: Sendable, Hashable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])

    public var int: Int64? {
        if case .int(let value) = self { return value }
        return nil
    }

    public var text: String? {
        if case .text(let value) = self { return value }
        return nil
    }
}

/// A business database in a SQLite file, with DTM's barrier table in it: the barrier's rows and
/// the handler's own writes commit in one SQLite transaction.
///
/// Transactions run one at a time (SQLite has one writer); each waits its turn without blocking
/// a thread. BEGIN, COMMIT (which waits for the disk) and ROLLBACK, and `execute`/`query` outside a
/// transaction, run on NIO's blocking-I/O thread pool, never on one of Swift concurrency's few
/// cooperative threads. Statements inside a transaction run on the calling task: keep them short,
/// as a branch handler's are (they touch the disk only at COMMIT).
public final class SQLiteBarrierDatabase: BarrierDatabase {
    public typealias Transaction = SQLiteTransaction

    /// The barrier table's name (DTM: `dtm_barrier.barrier`; SQLite has no schemas).
    public let tableName: String
    fileprivate let connection: Locked<SQLiteHandle>
    private let turns = TransactionTurns()

    /// Opens (creating if needed) the database at `path` and creates the barrier table.
    public init(path: String, tableName: String = "barrier") throws(DtmClientError) {
        guard !tableName.isEmpty, tableName.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || ($0 >= 48 && $0 <= 57)
                || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) }) else {
            throw .invalidArgument("barrier table name '\(tableName)' must be letters, digits and '_'")
        }
        self.tableName = tableName
        let handle = try SQLiteHandle(path: path)
        try handle.execute("PRAGMA busy_timeout = 5000", [])
        try handle.execute("PRAGMA journal_mode = WAL", [])
        try handle.execute(Self.createTableSQL(tableName), [])
        self.connection = Locked(handle)
    }

    /// DTM's barrier table (sqls/dtmcli.barrier.*.sql) in SQLite's dialect.
    static func createTableSQL(_ table: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(table) (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          trans_type VARCHAR(45) DEFAULT '',
          gid VARCHAR(128) DEFAULT '',
          branch_id VARCHAR(128) DEFAULT '',
          op VARCHAR(45) DEFAULT '',
          barrier_id VARCHAR(45) DEFAULT '',
          reason VARCHAR(45) DEFAULT '',
          create_time DATETIME DEFAULT CURRENT_TIMESTAMP,
          update_time DATETIME DEFAULT CURRENT_TIMESTAMP,
          UNIQUE (gid, branch_id, op, barrier_id)
        )
        """
    }

    public func withTransaction<T: Sendable>(_ body: (SQLiteTransaction) async throws -> T) async throws -> T {
        await turns.acquire()
        do {
            try await blocking { handle throws(DtmClientError) in _ = try handle.execute("BEGIN IMMEDIATE", []) }
            let transaction = SQLiteTransaction(database: self)
            let result: T
            do {
                result = try await body(transaction)
                transaction.isOpen = false
                try await blocking { handle throws(DtmClientError) in _ = try handle.execute("COMMIT", []) }
            } catch {
                transaction.isOpen = false
                _ = try? await blocking { handle throws(DtmClientError) in _ = try handle.execute("ROLLBACK", []) }
                throw error
            }
            await turns.release()
            return result
        } catch {
            await turns.release()
            throw error
        }
    }

    /// Runs one statement outside any transaction of yours (setting up tables, reading results).
    @discardableResult
    public func execute(_ sql: String, _ bindings: [SQLiteValue] = []) async throws(DtmClientError) -> Int {
        await turns.acquire()
        let result: Result<Int, DtmClientError>
        do {
            result = .success(try await blocking { handle throws(DtmClientError) in try handle.execute(sql, bindings) })
        } catch {
            result = .failure(error)
        }
        await turns.release()
        return try result.get()
    }

    /// Runs one query outside any transaction of yours.
    public func query(_ sql: String, _ bindings: [SQLiteValue] = []) async throws(DtmClientError) -> [[SQLiteValue]] {
        await turns.acquire()
        let result: Result<[[SQLiteValue]], DtmClientError>
        do {
            result = .success(try await blocking { handle throws(DtmClientError) in try handle.query(sql, bindings) })
        } catch {
            result = .failure(error)
        }
        await turns.release()
        return try result.get()
    }

    /// Runs `work` with the connection on NIO's blocking-I/O thread pool. It runs even when the
    /// calling task is cancelled (`runIfActive` would skip it): a BEGIN whose COMMIT or ROLLBACK
    /// were skipped would leave the connection inside a transaction.
    private func blocking<T: Sendable>(_ work: @escaping @Sendable (SQLiteHandle) throws(DtmClientError) -> T)
        async throws(DtmClientError) -> T {
        let outcome: Result<T, DtmClientError>
        do {
            outcome = try await Task { [self] in
                try await NIOThreadPool.singleton.runIfActive {
                    self.connection.withLock { handle in Result { () throws(DtmClientError) in try work(handle) } }
                }
            }.value
        } catch {
            throw .database("NIO's blocking thread pool is not running: \(error)")
        }
        return try outcome.get()
    }
}

/// An open transaction of a `SQLiteBarrierDatabase`, lent to the business closure; unusable
/// after the closure returns.
public final class SQLiteTransaction: BarrierTransaction {
    private let database: SQLiteBarrierDatabase
    fileprivate var isOpen = true

    fileprivate init(database: SQLiteBarrierDatabase) {
        self.database = database
    }

    /// Runs one statement; returns the number of rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ bindings: [SQLiteValue] = []) throws(DtmClientError) -> Int {
        guard isOpen else { throw .database("the transaction is over: use the transaction only inside its closure") }
        return try database.connection.withLock { handle throws(DtmClientError) in try handle.execute(sql, bindings) }
    }

    /// Runs one query and returns its rows.
    public func query(_ sql: String, _ bindings: [SQLiteValue] = []) throws(DtmClientError) -> [[SQLiteValue]] {
        guard isOpen else { throw .database("the transaction is over: use the transaction only inside its closure") }
        return try database.connection.withLock { handle throws(DtmClientError) in try handle.query(sql, bindings) }
    }

    public func insertBarrier(_ row: BarrierRow) async throws -> Int {
        try execute("INSERT OR IGNORE INTO \(database.tableName) (trans_type, gid, branch_id, op, barrier_id, reason) "
                    + "VALUES (?, ?, ?, ?, ?, ?)",
                    [.text(row.transType), .text(row.gid), .text(row.branchID), .text(row.op), .text(row.barrierID),
                     .text(row.reason)])
    }

    public func barrierReason(gid: String, branchID: String, op: String, barrierID: String) async throws -> String? {
        try query("SELECT reason FROM \(database.tableName) WHERE gid = ? AND branch_id = ? AND op = ? AND barrier_id = ?",
                  [.text(gid), .text(branchID), .text(op), .text(barrierID)]).first?.first?.text
    }
}

/// First come, first served turns at the database, without blocking a thread while waiting.
private actor TransactionTurns {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}

/// Copies bound text and blobs into SQLite (the C macro `SQLITE_TRANSIENT` is not importable).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// The one owner of the SDK's `sqlite3*`: statements are prepared, run and finalized within
/// one call; no C pointer leaves this file.
final class SQLiteHandle {
    private var db: OpaquePointer?

    init(path: String) throws(DtmClientError) {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(handle)
            throw .database("open \(path): \(message)")
        }
        db = handle
    }

    deinit {
        sqlite3_close_v2(db)
    }

    @discardableResult
    func execute(_ sql: String, _ bindings: [SQLiteValue]) throws(DtmClientError) -> Int {
        try withStatement(sql, bindings) { statement throws(DtmClientError) in
            while try step(statement, sql) {}
        }
        return Int(sqlite3_changes(db))
    }

    func query(_ sql: String, _ bindings: [SQLiteValue]) throws(DtmClientError) -> [[SQLiteValue]] {
        try withStatement(sql, bindings) { statement throws(DtmClientError) in
            var rows: [[SQLiteValue]] = []
            while try step(statement, sql) {
                rows.append((0..<sqlite3_column_count(statement)).map { column(statement, $0) })
            }
            return rows
        }
    }

    private func withStatement<T>(_ sql: String, _ bindings: [SQLiteValue],
                                  _ body: (OpaquePointer) throws(DtmClientError) -> T) throws(DtmClientError) -> T {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw lastError(sql)
        }
        defer { sqlite3_finalize(statement) }
        for (offset, value) in bindings.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32 = switch value {
            case .null: sqlite3_bind_null(statement, index)
            case .int(let v): sqlite3_bind_int64(statement, index, v)
            case .double(let v): sqlite3_bind_double(statement, index, v)
            case .text(let v): sqlite3_bind_text(statement, index, v, -1, transient)
            case .blob(let v) where v.isEmpty: sqlite3_bind_zeroblob(statement, index, 0)
            case .blob(let v): v.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), transient) }
            }
            if rc != SQLITE_OK { throw lastError(sql) }
        }
        return try body(statement)
    }

    private func step(_ statement: OpaquePointer, _ sql: String) throws(DtmClientError) -> Bool {
        switch sqlite3_step(statement) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw lastError(sql)
        }
    }

    private func column(_ statement: OpaquePointer, _ index: Int32) -> SQLiteValue {
        switch sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER: return .int(sqlite3_column_int64(statement, index))
        case SQLITE_FLOAT: return .double(sqlite3_column_double(statement, index))
        case SQLITE_TEXT:
            guard let bytes = sqlite3_column_text(statement, index) else { return .text("") }
            let count = Int(sqlite3_column_bytes(statement, index))
            return .text(String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            guard let bytes = sqlite3_column_blob(statement, index) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(statement, index)))))
        default: return .null
        }
    }

    private func lastError(_ sql: String) -> DtmClientError {
        .database("\(sql.prefix(80)): \(db.map { String(cString: sqlite3_errmsg($0)) } ?? "database is closed")")
    }
}
