import CSQLite
import DtmEngine

/// A value bound to a statement parameter.
enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case text(String)
    case blob([UInt8])
}

// Extended result codes are C macros built from shifts, which Swift does not import.
private let constraintUnique = SQLITE_CONSTRAINT | (8 << 8)
private let constraintPrimaryKey = SQLITE_CONSTRAINT | (6 << 8)

/// Copies bound text and blobs into SQLite (the C macro `SQLITE_TRANSIENT` is not importable).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// Process-wide SQLite settings, applied once before the first connection opens (SQLite refuses
/// them once initialized, e.g. when a test opened a database first; then they are skipped).
/// No memory statistics: with them every SQLite malloc and free takes a global mutex, and
/// Debian's SQLite is built without lookaside memory, so a saga's writes make about 160 of each.
private let configureSQLite: Void = { _ = dtm_sqlite3_disable_memstatus() }()

/// The one owner of a `sqlite3*` and of its prepared statements.
///
/// Statements are prepared once per SQL text and reused; everything is finalized in
/// `close()` (also run by `deinit`). Not thread-safe: a connection is used by one thread at
/// a time (the `SQLiteWorker` thread that owns it), which is why it is opened `NOMUTEX`.
/// No C pointer leaves this file: results are read through a `Row` lent to a closure.
final class SQLiteConnection {
    let path: String
    private var db: OpaquePointer?
    /// Prepared statements by `SQL.rawValue`, made on first use.
    private var statements = [OpaquePointer?](repeating: nil, count: SQL.allCases.count)
    /// Where SQLite's WAL hook writes the WAL's frame count (see `takeOverCheckpoints`).
    private let walFrames = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    /// Holds the text and blobs bound to the running statements (see `BindArena`).
    private let arena = BindArena()

    init(path: String) throws(StoreError) {
        configureSQLite
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(handle)
            throw .database("open \(path): \(message)")
        }
        db = handle
        walFrames.pointee = 0
        sqlite3_extended_result_codes(handle, 1)
    }

    deinit {
        close()
        walFrames.deallocate()
    }

    /// Finalizes every cached statement and closes the connection; later calls fail.
    func close() {
        for statement in statements { sqlite3_finalize(statement) }
        statements = statements.map { _ in nil }
        if let db { sqlite3_close_v2(db) }
        db = nil
    }

    /// Sets the busy handler's timeout (waits for another connection's write lock).
    func setBusyTimeout(milliseconds: Int32) {
        if let db { sqlite3_busy_timeout(db, milliseconds) }
    }

    /// True while a transaction is open; false after COMMIT, or after SQLite rolled one back
    /// on its own (I/O error, disk full), which the writer must notice.
    var inTransaction: Bool {
        guard let db else { return false }
        return sqlite3_get_autocommit(db) == 0
    }

    /// Turns off SQLite's automatic checkpoint after commits, which would copy pages on
    /// this connection's thread; from then on `framesInWAL` tells the owner when to
    /// checkpoint (here or elsewhere).
    func takeOverCheckpoints() {
        sqlite3_wal_hook(db, { context, _, _, frames in
            context?.assumingMemoryBound(to: Int32.self).pointee = frames
            return SQLITE_OK
        }, walFrames)
    }

    /// Frames in the WAL after this connection's last commit.
    var framesInWAL: Int { Int(walFrames.pointee) }

    /// Rows changed by this connection since it opened (whether committed or not).
    var totalChanges: Int64 { sqlite3_total_changes64(db) }

    /// Copies committed WAL frames into the database file, without blocking writers.
    /// Returns how many of the WAL's frames are now in the database file (0 when it has none).
    func checkpoint() throws(StoreError) -> Int {
        guard let db else { throw .database("checkpoint: database is closed") }
        var frames: Int32 = -1
        var copied: Int32 = -1
        var rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied)
        if rc == SQLITE_OK && frames < 0 {
            // A connection that has not read the database yet has not opened the WAL: SQLite
            // then checkpoints nothing and still answers OK (the checkpointer thread's connection
            // never ran a statement and copied nothing, so the writer did every checkpoint
            // itself). Reading the schema opens the WAL.
            try executeScript("SELECT 1 FROM sqlite_schema LIMIT 1", context: "open the WAL to checkpoint")
            rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied)
        }
        // BUSY: another connection is checkpointing right now, which is as good.
        if rc == SQLITE_BUSY { return 0 }
        if rc != SQLITE_OK { throw lastError(context: "checkpoint") }
        guard frames >= 0 else { throw .database("checkpoint: \(path) is not in WAL mode") }
        return Int(max(0, copied))
    }

    /// Runs SQL text that may hold several statements (schema scripts). Not cached.
    func executeScript(_ sql: String, context: String) throws(StoreError) {
        guard let db else { throw .database("\(context): database is closed") }
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        defer { sqlite3_free(message) }
        if rc != SQLITE_OK {
            throw Self.error(code: sqlite3_extended_errcode(db),
                             message: message.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc)),
                             context: context)
        }
    }

    /// Runs one statement to completion and returns the number of rows it changed.
    @discardableResult
    func run(_ sql: SQL, _ bindings: [SQLValue] = []) throws(StoreError) -> Int {
        try run(sql) { binder in
            for value in bindings { binder.value(value) }
        }
    }

    /// Runs one statement to completion, its parameters bound in order by `bind` (no array
    /// of values on the hot path), and returns the number of rows it changed.
    @discardableResult
    func run(_ sql: SQL, binding bind: (inout Binder) -> Void) throws(StoreError) -> Int {
        try withStatement(sql, bind) { statement throws(StoreError) in
            while try step(statement, sql) {}
        }
        return db.map { Int(sqlite3_changes($0)) } ?? 0
    }

    /// Runs one statement and maps every result row.
    func query<T>(_ sql: SQL, _ bindings: [SQLValue] = [],
                  _ map: (borrowing Row) throws(StoreError) -> T) throws(StoreError) -> [T] {
        try withStatement(sql, { binder in for value in bindings { binder.value(value) } }) {
            statement throws(StoreError) in
            var rows: [T] = []
            while try step(statement, sql) {
                rows.append(try map(Row(statement: statement)))
            }
            return rows
        }
    }

    /// Runs one statement and maps its first result row, if any (point reads: no array).
    func first<T>(_ sql: SQL, binding bind: (inout Binder) -> Void,
                  _ map: (borrowing Row) throws(StoreError) -> T) throws(StoreError) -> T? {
        try withStatement(sql, bind) { statement throws(StoreError) in
            try step(statement, sql) ? try map(Row(statement: statement)) : nil
        }
    }

    private func withStatement<T>(_ sql: SQL, _ bind: (inout Binder) -> Void,
                                  _ body: (OpaquePointer) throws(StoreError) -> T) throws(StoreError) -> T {
        let statement = try prepared(sql)
        let mark = arena.mark
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
            // Only now: the statement read its parameters until here. A statement run inside
            // another's closure rewinds to its own mark and leaves the outer one's bytes alone.
            arena.rewind(to: mark)
        }
        var binder = Binder(statement: statement, arena: arena)
        bind(&binder)
        if binder.result != SQLITE_OK { throw lastError(sql) }
        return try body(statement)
    }

    private func prepared(_ sql: SQL) throws(StoreError) -> OpaquePointer {
        if let statement = statements[sql.rawValue] { return statement }
        guard let db else { throw .database("\(sql): database is closed") }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql.text, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw lastError(sql) }
        statements[sql.rawValue] = statement
        return statement
    }

    /// Steps once: true when a row is ready, false when the statement is done.
    private func step(_ statement: OpaquePointer, _ sql: SQL) throws(StoreError) -> Bool {
        switch sqlite3_step(statement) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw lastError(sql)
        }
    }

    /// The error of the last call, its message prefixed with the statement's name.
    private func lastError(_ sql: SQL) -> StoreError { lastError(context: "\(sql)") }

    private func lastError(context: String) -> StoreError {
        guard let db else { return .database("\(context): database is closed") }
        let code = sqlite3_extended_errcode(db)
        lastErrorWasBusy = code & 0xff == SQLITE_BUSY
        return Self.error(code: code, message: String(cString: sqlite3_errmsg(db)), context: context)
    }

    /// True when the latest error was SQLITE_BUSY (a lock not free within the busy timeout).
    private(set) var lastErrorWasBusy = false

    private static func error(code: Int32, message: String, context: String) -> StoreError {
        switch code {
        case constraintUnique, constraintPrimaryKey:
            return .uniqueConflict("\(context): \(message)")
        default:
            return .database("\(context): \(message)")
        }
    }
}

/// Binds a statement's parameters in order (1, 2, …), lent to the closure of
/// `SQLiteConnection.run(_:binding:)`. The first failure is kept and reported before the step.
struct Binder: ~Copyable {
    fileprivate let statement: OpaquePointer
    private let arena: BindArena
    private var index: Int32 = 0
    fileprivate private(set) var result = SQLITE_OK

    fileprivate init(statement: OpaquePointer, arena: BindArena) {
        self.statement = statement
        self.arena = arena
    }

    private mutating func next(_ bind: (OpaquePointer, Int32) -> Int32) {
        index += 1
        guard result == SQLITE_OK else { return }
        result = bind(statement, index)
    }

    mutating func null() { next { sqlite3_bind_null($0, $1) } }

    mutating func int(_ value: Int64) { next { sqlite3_bind_int64($0, $1, value) } }

    mutating func int(_ value: Int64?) {
        if let value { int(value) } else { null() }
    }

    mutating func text(_ value: String) {
        var value = value
        let arena = self.arena
        next { statement, index in
            // Explicit length: keeps embedded NUL characters; an empty string must not bind NULL.
            value.withUTF8 { utf8 in
                guard !utf8.isEmpty else { return sqlite3_bind_text(statement, index, "", 0, transient) }
                guard let copy = arena.copy(UnsafeRawBufferPointer(utf8)) else {
                    return utf8.withMemoryRebound(to: CChar.self) {
                        sqlite3_bind_text(statement, index, $0.baseAddress, Int32($0.count), transient)
                    }
                }
                return sqlite3_bind_text(statement, index, copy.assumingMemoryBound(to: CChar.self),
                                         Int32(utf8.count), nil)
            }
        }
    }

    mutating func text(_ value: String?) {
        if let value { text(value) } else { null() }
    }

    mutating func blob(_ value: [UInt8]) {
        let arena = self.arena
        next { statement, index in
            // bind_blob with a null pointer would store NULL; an empty payload is a zero-length blob.
            if value.isEmpty { return sqlite3_bind_zeroblob(statement, index, 0) }
            return value.withUnsafeBytes { bytes in
                guard let copy = arena.copy(bytes) else {
                    return sqlite3_bind_blob(statement, index, bytes.baseAddress, Int32(bytes.count), transient)
                }
                return sqlite3_bind_blob(statement, index, copy, Int32(bytes.count), nil)
            }
        }
    }

    mutating func value(_ value: SQLValue) {
        switch value {
        case .null: null()
        case .int(let v): int(v)
        case .text(let v): text(v)
        case .blob(let v): blob(v)
        }
    }
}

/// Bytes bound to statements as SQLITE_STATIC, so that SQLite does not malloc a copy of each
/// (about 60 per saga; Debian's SQLite has no lookaside memory to take them). A statement's
/// bytes must stay put until it is reset: the arena hands out space in fixed chunks it never
/// moves or frees while the connection lives, and `withStatement` rewinds to the mark it took
/// once its statement is reset, so the space is reused by the next one. Values above
/// `largest` bytes are left to SQLite to copy.
private final class BindArena {
    struct Mark { fileprivate let chunk: Int, offset: Int }
    static let chunkSize = 16 << 10
    static let largest = 4 << 10
    private var chunks: [UnsafeMutableRawPointer] = []
    private var chunk = 0
    private var offset = 0

    deinit {
        for chunk in chunks { chunk.deallocate() }
    }

    var mark: Mark { Mark(chunk: chunk, offset: offset) }

    func rewind(to mark: Mark) {
        chunk = mark.chunk
        offset = mark.offset
    }

    /// A copy of `bytes` that stays valid until a rewind to a mark taken before this call;
    /// nil when `bytes` is larger than `largest`.
    func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawPointer? {
        guard let source = bytes.baseAddress, bytes.count <= Self.largest else { return nil }
        if chunk < chunks.count && offset + bytes.count > Self.chunkSize {
            chunk += 1
            offset = 0
        }
        if chunk == chunks.count {
            chunks.append(.allocate(byteCount: Self.chunkSize, alignment: 16))
        }
        let destination = chunks[chunk] + offset
        destination.copyMemory(from: source, byteCount: bytes.count)
        offset += bytes.count
        return UnsafeRawPointer(destination)
    }
}

/// The current result row of a statement, readable only inside `SQLiteConnection.query`'s
/// closure (non-copyable, so it cannot be kept after the statement moves on).
struct Row: ~Copyable {
    fileprivate let statement: OpaquePointer

    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }

    func optionalInt(_ column: Int32) -> Int64? {
        sqlite3_column_type(statement, column) == SQLITE_NULL ? nil : int(column)
    }

    func text(_ column: Int32) -> String {
        guard let bytes = sqlite3_column_text(statement, column) else { return "" }
        let count = Int(sqlite3_column_bytes(statement, column))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32) -> [UInt8] {
        // Zero-length blobs come back as a null pointer.
        guard let bytes = sqlite3_column_blob(statement, column) else { return [] }
        let count = Int(sqlite3_column_bytes(statement, column))
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }
}
