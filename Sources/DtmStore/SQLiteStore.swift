import DtmEngine
import Foundation
import Logging

/// The embedded durable store: one SQLite file in WAL mode with `synchronous=FULL`, so a
/// write that has returned survives a crash or power loss.
///
/// Writes go to a single writer thread that group-commits them (see `SQLiteWorker`): many
/// concurrent callers share one transaction and one fsync, and each is answered only after
/// the commit that covers its write. Reads use a second connection on its own thread; WAL
/// lets them run beside the writer, and they see every write that has been answered.
///
/// Several stores (or processes) may open the same file: writes take SQLite's write lock
/// for the whole batch (`BEGIN IMMEDIATE`), so `claimDue` never hands one row to two owners.
public final class SQLiteStore: TransactionStore {
    /// The database file.
    public let path: String
    private let writer: SQLiteWorker
    private let reader: SQLiteWorker
    private let logger: Logger

    /// Opens or creates the database at `path` and migrates its schema.
    /// - Parameters:
    ///   - maxBatch: the most write requests that share one commit.
    ///   - busyTimeout: how long to wait for another connection's write lock.
    public init(path: String, maxBatch: Int = 512, busyTimeout: Duration = .seconds(5),
                logger: Logger = Logger(label: "dtm.store.sqlite")) throws(StoreError) {
        let timeout = Int32(clamping: busyTimeout.components.seconds * 1000
            + busyTimeout.components.attoseconds / 1_000_000_000_000_000)
        let writeConnection = try SQLiteConnection(path: path)
        writeConnection.setBusyTimeout(milliseconds: timeout)
        let mode = try writeConnection.query("PRAGMA journal_mode = WAL", context: "enable WAL") { $0.text(0) }
        guard mode.first?.lowercased() == "wal" else {
            throw .database("enable WAL on \(path): journal mode is \(mode.first ?? "unknown")")
        }
        try writeConnection.executeScript("PRAGMA synchronous = FULL", context: "set synchronous")
        let found = try Schema.migrate(writeConnection, logger: logger)

        let readConnection = try SQLiteConnection(path: path)
        readConnection.setBusyTimeout(milliseconds: timeout)
        try readConnection.executeScript("PRAGMA query_only = ON", context: "set query_only")

        self.path = path
        self.logger = logger
        writer = SQLiteWorker(connection: writeConnection, name: "dtm-sqlite-writer", role: .writer,
                              maxBatch: max(1, maxBatch))
        reader = SQLiteWorker(connection: readConnection, name: "dtm-sqlite-reader", role: .reader,
                              maxBatch: max(1, maxBatch))
        logger.info("opened SQLite store", metadata: [
            "path": "\(path)", "schema_version": "\(Schema.currentVersion)", "found_version": "\(found)",
        ])
    }

    deinit { close() }

    /// Finishes the queued requests, then closes both connections. Later calls fail with
    /// `.database`. Blocks until the worker threads are done; calling it again does nothing.
    public func close() {
        let closedNow = writer.shutdown()
        reader.shutdown()
        if closedNow { logger.info("closed SQLite store", metadata: ["path": "\(path)"]) }
    }

    /// Commit counters of the writer (group-commit effectiveness).
    public var statistics: WriterStatistics { writer.statistics }

    // MARK: Global transactions

    public func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        let globalRow = try GlobalColumns.bindings(global)
        let branchRows = branches.map { BranchColumns.bindings($0, gid: global.gid) }
        return try await writer.perform { db throws(StoreError) in
            guard try db.run(GlobalColumns.insert, globalRow, context: "saveNew trans_global") == 1 else {
                return false
            }
            for row in branchRows {
                try db.run(BranchColumns.insert, row, context: "saveNew trans_branch_op")
            }
            return true
        }
    }

    public func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? {
        try await reader.perform { db throws(StoreError) in
            try db.query("SELECT \(GlobalColumns.select) FROM trans_global WHERE gid = ?", [.text(gid)],
                         context: "findGlobal", GlobalColumns.decode).first
        }
    }

    public func findBranches(gid: String) async throws(StoreError) -> [BranchRecord] {
        try await reader.perform { db throws(StoreError) in
            try db.query("SELECT \(BranchColumns.select) FROM trans_branch_op WHERE gid = ? ORDER BY id",
                         [.text(gid)], context: "findBranches", BranchColumns.decode)
        }
    }

    public func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                             now: Date) async throws(StoreError) {
        let bindings: [SQLValue] = [
            .text(to.rawValue), .time(now), .text(update.rollbackReason), .text(update.result),
            .time(update.finishTime), .time(update.rollbackTime), .int(update.nextCronInterval),
            .time(update.nextCronTime), .text(gid), .text(from.rawValue),
        ]
        try await writer.perform { db throws(StoreError) in
            let changed = try db.run("""
                UPDATE trans_global SET status = ?, update_time = ?, \
                rollback_reason = COALESCE(?, rollback_reason), result = COALESCE(?, result), \
                finish_time = COALESCE(?, finish_time), rollback_time = COALESCE(?, rollback_time), \
                next_cron_interval = COALESCE(?, next_cron_interval), \
                next_cron_time = COALESCE(?, next_cron_time) \
                WHERE gid = ? AND status = ?
                """, bindings, context: "changeStatus")
            guard changed == 1 else { throw .notFound("no global transaction \(gid) in status \(from.rawValue)") }
        }
    }

    public func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                               now: Date) async throws(StoreError) {
        let rows = branches.map { BranchColumns.bindings($0, gid: gid) }
        try await writer.perform { db throws(StoreError) in
            try Self.lockGlobal(db, gid: gid, expecting: expecting, now: now, context: "appendBranches")
            for row in rows {
                try db.run(BranchColumns.insert, row, context: "appendBranches")
            }
        }
    }

    public func updateBranches(gid: String, expecting: GlobalStatus, updates: [BranchUpdate],
                               now: Date) async throws(StoreError) {
        let rows: [[SQLValue]] = updates.map {
            [.text($0.status.rawValue), .time($0.finishTime), .time(now), .text(gid), .text($0.branchID),
             .text($0.op.rawValue)]
        }
        try await writer.perform { db throws(StoreError) in
            try Self.lockGlobal(db, gid: gid, expecting: expecting, now: now, context: "updateBranches")
            for (row, update) in zip(rows, updates) {
                let changed = try db.run("""
                    UPDATE trans_branch_op SET status = ?, finish_time = ?, update_time = ? \
                    WHERE gid = ? AND branch_id = ? AND op = ?
                    """, row, context: "updateBranches")
                guard changed == 1 else {
                    throw .notFound("no branch \(update.branchID)/\(update.op) in global transaction \(gid)")
                }
            }
        }
    }

    /// The check of `appendBranches` / `updateBranches`: the global row must be in
    /// `expecting`. Inside the writer's transaction the row cannot change until the commit
    /// (DTM's SELECT … FOR UPDATE); touching update_time makes the check one statement.
    private static func lockGlobal(_ db: SQLiteConnection, gid: String, expecting: GlobalStatus, now: Date,
                                   context: String) throws(StoreError) {
        let changed = try db.run("UPDATE trans_global SET update_time = ? WHERE gid = ? AND status = ?",
                                 [.time(now), .text(gid), .text(expecting.rawValue)], context: context)
        guard changed == 1 else {
            throw .notFound("no global transaction \(gid) in status \(expecting.rawValue)")
        }
    }

    public func touchCron(gid: String, status: GlobalStatus, nextCronInterval: Int64, nextCronTime: Date,
                          now: Date) async throws(StoreError) {
        let bindings: [SQLValue] = [.int(nextCronInterval), .time(nextCronTime), .time(now), .text(gid),
                                    .text(status.rawValue)]
        try await writer.perform { db throws(StoreError) in
            _ = try db.run("""
                UPDATE trans_global SET next_cron_interval = ?, next_cron_time = ?, update_time = ? \
                WHERE gid = ? AND status = ?
                """, bindings, context: "touchCron")
        }
    }

    /// Statuses the cron still has work for.
    private static let unfinished = "status IN ('prepared', 'submitted', 'aborting')"

    public func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) async throws(StoreError)
        -> [GlobalTransaction] {
        guard limit > 0 else { return [] }
        let bindings: [SQLValue] = [.text(owner), .time(leaseUntil), .time(now), .time(now), .int(Int64(limit))]
        let claimed = try await writer.perform { db throws(StoreError) in
            try db.query("""
                UPDATE trans_global SET owner = ?, next_cron_time = ?, update_time = ? \
                WHERE id IN (SELECT id FROM trans_global WHERE \(Self.unfinished) AND next_cron_time <= ? \
                ORDER BY next_cron_time LIMIT ?) \
                RETURNING \(GlobalColumns.select)
                """, bindings, context: "claimDue", GlobalColumns.decode)
        }
        // RETURNING has no defined order.
        return claimed.sorted { ($0.id ?? 0) < ($1.id ?? 0) }
    }

    public func resetCronTime(after: Date, limit: Int, now: Date) async throws(StoreError) -> Int {
        guard limit > 0 else { return 0 }
        let bindings: [SQLValue] = [.time(now), .time(after), .int(Int64(limit))]
        return try await writer.perform { db throws(StoreError) in
            try db.run("""
                UPDATE trans_global SET next_cron_time = ? \
                WHERE id IN (SELECT id FROM trans_global WHERE \(Self.unfinished) AND next_cron_time > ? LIMIT ?)
                """, bindings, context: "resetCronTime")
        }
    }

    public func resetNextCronTime(gid: String, now: Date) async throws(StoreError) {
        try await writer.perform { db throws(StoreError) in
            let changed = try db.run("UPDATE trans_global SET next_cron_time = ?, update_time = ? WHERE gid = ?",
                                     [.time(now), .time(now), .text(gid)], context: "resetNextCronTime")
            guard changed == 1 else { throw .notFound("no global transaction \(gid)") }
        }
    }

    public func scanGlobals(_ query: GlobalQuery) async throws(StoreError) -> [GlobalTransaction] {
        guard query.limit > 0 else { return [] }
        let bindings: [SQLValue] = [
            .int(query.position ?? .max), .text(query.status?.rawValue), .text(query.transType?.rawValue),
            .time(query.createdFrom), .time(query.createdTo), .int(Int64(query.limit)),
        ]
        return try await reader.perform { db throws(StoreError) in
            try db.query("""
                SELECT \(GlobalColumns.select) FROM trans_global \
                WHERE id < ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR trans_type = ?3) \
                AND (?4 IS NULL OR create_time >= ?4) AND (?5 IS NULL OR create_time <= ?5) \
                ORDER BY id DESC LIMIT ?6
                """, bindings, context: "scanGlobals", GlobalColumns.decode)
        }
    }

    // MARK: KV

    public func findKV(cat: String, key: String) async throws(StoreError) -> [KVRecord] {
        try await reader.perform { db throws(StoreError) in
            try db.query("""
                SELECT \(KVColumns.select) FROM kv WHERE (?1 = '' OR cat = ?1) AND (?2 = '' OR k = ?2) ORDER BY id
                """, [.text(cat), .text(key)], context: "findKV", KVColumns.decode)
        }
    }

    public func scanKV(cat: String, position: Int64?, limit: Int) async throws(StoreError) -> [KVRecord] {
        guard limit > 0 else { return [] }
        return try await reader.perform { db throws(StoreError) in
            try db.query("SELECT \(KVColumns.select) FROM kv WHERE cat = ? AND id < ? ORDER BY id DESC LIMIT ?",
                         [.text(cat), .int(position ?? .max), .int(Int64(limit))], context: "scanKV",
                         KVColumns.decode)
        }
    }

    public func createKV(cat: String, key: String, value: String, now: Date) async throws(StoreError) {
        try await writer.perform { db throws(StoreError) in
            _ = try db.run("INSERT INTO kv (cat, k, v, version, create_time, update_time) VALUES (?, ?, ?, 1, ?, ?)",
                       [.text(cat), .text(key), .text(value), .time(now), .time(now)], context: "createKV")
        }
    }

    public func updateKV(cat: String, key: String, value: String, expectedVersion: Int64,
                         now: Date) async throws(StoreError) {
        try await writer.perform { db throws(StoreError) in
            let changed = try db.run("""
                UPDATE kv SET v = ?, version = version + 1, update_time = ? WHERE cat = ? AND k = ? AND version = ?
                """, [.text(value), .time(now), .text(cat), .text(key), .int(expectedVersion)], context: "updateKV")
            guard changed == 1 else { throw .notFound("no kv \(cat)/\(key) at version \(expectedVersion)") }
        }
    }

    public func deleteKV(cat: String, key: String) async throws(StoreError) {
        try await writer.perform { db throws(StoreError) in
            let changed = try db.run("DELETE FROM kv WHERE cat = ? AND k = ?", [.text(cat), .text(key)],
                                     context: "deleteKV")
            guard changed == 1 else { throw .notFound("no kv \(cat)/\(key)") }
        }
    }
}
