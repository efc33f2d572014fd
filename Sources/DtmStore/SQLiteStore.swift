import DtmEngine
import DtmFailpoints
import Foundation
import Logging

/// The embedded durable store: one SQLite file in WAL mode with `synchronous=FULL`, so a
/// write that has returned survives a crash or power loss.
///
/// Writes go to a single writer thread that group-commits them (see `SQLiteWorker`): many
/// concurrent callers share one transaction and one fsync, and each is answered only after
/// the commit that covers its write. Reads use other connections, which WAL lets run beside
/// the writer and which see every write that has been answered: point reads on the caller's
/// thread (see `ReadPool`), the others, and point reads that cannot, on a reader thread.
///
/// Several stores (or processes) may open the same file: writes take SQLite's write lock
/// for the whole batch (`BEGIN IMMEDIATE`), so `claimDue` never hands one row to two owners.
public final class SQLiteStore: TransactionStore {
    /// The database file.
    public let path: String
    private let writer: SQLiteWorker
    private let reader: SQLiteWorker
    private let reads: ReadPool
    /// Copies the WAL into the database file beside the writer (see `CheckpointPolicy`).
    private let checkpointer: SQLiteWorker
    private let logger: Logger

    /// Opens or creates the database at `path` and migrates its schema. `path` must name a
    /// file (WAL needs one; `:memory:` is refused).
    /// - Parameters:
    ///   - maxBatch: the most write requests that share one commit.
    ///   - busyTimeout: how long to wait for another connection's write lock.
    public init(path: String, maxBatch: Int = 512, busyTimeout: Duration = .seconds(5),
                logger: Logger = Logger(label: "dtm.store.sqlite")) throws(StoreError) {
        let timeout = Int32(clamping: busyTimeout.components.seconds * 1000
            + busyTimeout.components.attoseconds / 1_000_000_000_000_000)
        let writeConnection = try SQLiteConnection(path: path)
        writeConnection.setBusyTimeout(milliseconds: timeout)
        let mode = try writeConnection.query(.journalModeWAL) { $0.text(0) }
        guard mode.first?.lowercased() == "wal" else {
            throw .database("enable WAL on \(path): journal mode is \(mode.first ?? "unknown")")
        }
        // 16 MiB of page cache: the indexes' working set stays in memory instead of being re-read.
        // Temporary tables, sorts and statement journals in memory, not in temp files.
        try writeConnection.executeScript(
            "PRAGMA synchronous = FULL; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY",
            context: "configure writer")
        let found = try Schema.migrate(writeConnection, logger: logger)

        let readConnection = try SQLiteConnection(path: path)
        readConnection.setBusyTimeout(milliseconds: timeout)
        try readConnection.executeScript("PRAGMA query_only = ON", context: "set query_only")
        let checkpointConnection = try SQLiteConnection(path: path)
        checkpointConnection.setBusyTimeout(milliseconds: timeout)

        self.path = path
        self.logger = logger
        checkpointer = SQLiteWorker(connection: checkpointConnection, name: "sqlite-ckpt",
                                    role: .reader, maxBatch: 1)
        writer = SQLiteWorker(connection: writeConnection, name: "sqlite-writer",
                              role: .writer(checkpointer: checkpointer), maxBatch: max(1, maxBatch))
        reader = SQLiteWorker(connection: readConnection, name: "sqlite-reader", role: .reader,
                              maxBatch: max(1, maxBatch))
        reads = ReadPool(path: path, limit: max(2, ProcessInfo.processInfo.activeProcessorCount))
        logger.info("opened SQLite store", metadata: [
            "path": "\(path)", "schema_version": "\(Schema.currentVersion)", "found_version": "\(found)",
        ])
    }

    deinit { close() }

    /// Finishes the queued requests, then closes both connections. Later calls fail with
    /// `.database`. Blocks until the worker threads are done; calling it again does nothing.
    public func close() {
        let closedNow = writer.shutdown()
        reads.close()
        checkpointer.shutdown()
        reader.shutdown()
        if closedNow { logger.info("closed SQLite store", metadata: ["path": "\(path)"]) }
    }

    /// Commit counters of the writer (group-commit effectiveness).
    public var statistics: WriterStatistics { writer.statistics }

    /// Calls `observer` after each group commit with the write requests it covered and how long
    /// the batch took (metrics); replaces an earlier observer.
    public func observeCommits(_ observer: @escaping @Sendable (_ writes: Int, _ duration: Duration) -> Void) {
        writer.observeCommits(observer)
    }

    /// Write requests waiting for the writer thread now.
    public var queuedWrites: Int { writer.queued }

    /// Below this much free space on the database's filesystem the store reports unhealthy
    /// (writes may soon fail with SQLITE_FULL).
    public static let minimumFreeBytes: UInt64 = 16 << 20

    /// Unhealthy when the latest write batch failed (until a write succeeds again), when the
    /// filesystem is nearly full, or when the write lock cannot be taken (another process holds
    /// it past the busy timeout, or the file is read-only).
    public func health() async -> StoreHealth {
        if let free = Self.freeBytes(near: path), free < Self.minimumFreeBytes {
            return .unhealthy("\(free >> 20) MiB free on the filesystem of \(path)")
        }
        let failed = writer.lastFailure != nil
        do {
            // Healthy so far: an empty job, whose batch takes the write lock and commits nothing
            // (no fsync). After a failure: a real one-row write, whose commit clears the failure.
            let now = Date()
            try await writer.perform { db throws(StoreError) in
                if failed { _ = try db.run(.probeWrite, [.time(now)]) }
            }
        } catch {
            return .unhealthy("a write failed: \(error)")
        }
        if let failure = writer.lastFailure { return .unhealthy("the last write failed: \(failure)") }
        return .healthy
    }

    /// Runs SQL on the writer's connection inside its next batch (tests: `PRAGMA max_page_count`
    /// to make the database "full").
    func runOnWriter(_ sql: String) async throws(StoreError) {
        try await writer.perform { db throws(StoreError) in try db.executeScript(sql, context: "test hook") }
    }

    private static func freeBytes(near path: String) -> UInt64? {
        let directory = (path as NSString).deletingLastPathComponent
        var stats = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &stats) == 0 else { return nil }
        return UInt64(stats.f_bavail) * UInt64(stats.f_frsize)
    }

    // MARK: Global transactions

    public func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        Failpoint.hit("store.saveNew.before"); defer { Failpoint.hit("store.saveNew.after") }
        let options = global.options.jsonText
        return try await writer.perform { db throws(StoreError) in
            guard try db.run(.insertGlobal, binding: { GlobalColumns.bind(&$0, global, options: options) }) == 1 else {
                return false
            }
            for branch in branches {
                try db.run(.insertBranch) { BranchColumns.bind(&$0, branch, gid: global.gid) }
            }
            return true
        }
    }

    public func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? {
        try await read { db throws(StoreError) in
            try db.first(.findGlobal, binding: { $0.text(gid) }, GlobalColumns.decode)
        }
    }

    public func findBranches(gid: String) async throws(StoreError) -> [BranchRecord] {
        try await read { db throws(StoreError) in
            try db.query(.findBranches, [.text(gid)], BranchColumns.decode)
        }
    }

    /// A point read: on this thread when a pooled connection is free, else on the reader thread.
    private func read<T: Sendable>(
        _ work: @escaping @Sendable (SQLiteConnection) throws(StoreError) -> T
    ) async throws(StoreError) -> T {
        if let result = reads.read(work) { return try result.get() }
        return try await reader.perform(work)
    }

    public func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                             branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        Failpoint.hit("store.changeStatus.before"); defer { Failpoint.hit("store.changeStatus.after") }
        try await writer.perform { db throws(StoreError) in
            let changed = try db.run(.changeStatus) { binder in
                binder.text(to.rawValue)
                binder.time(now)
                binder.text(update.rollbackReason)
                binder.text(update.result)
                binder.time(update.finishTime)
                binder.time(update.rollbackTime)
                binder.int(update.nextCronInterval)
                binder.time(update.nextCronTime)
                binder.text(update.owner)
                binder.text(gid)
                binder.text(from.rawValue)
                binder.text(update.expectedOwner)
            }
            guard changed == 1 else {
                throw .notFound("no global transaction \(gid) in status \(from.rawValue)"
                                + (update.expectedOwner.map { " leased by \($0)" } ?? ""))
            }
            try Self.updateBranchRows(db, branchUpdates, gid: gid, now: now)
            try Self.insertAttempts(db, attempts, gid: gid)
        }
    }

    public func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                               now: Date) async throws(StoreError) {
        Failpoint.hit("store.appendBranches.before"); defer { Failpoint.hit("store.appendBranches.after") }
        try await writer.perform { db throws(StoreError) in
            try Self.lockGlobal(db, gid: gid, expecting: expecting, owner: nil, now: now)
            for branch in branches {
                try db.run(.insertBranch) { BranchColumns.bind(&$0, branch, gid: gid) }
            }
        }
    }

    public func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                               attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        Failpoint.hit("store.updateBranches.before"); defer { Failpoint.hit("store.updateBranches.after") }
        try await writer.perform { db throws(StoreError) in
            try Self.lockGlobal(db, gid: gid, expecting: expecting, owner: owner, now: now)
            try Self.updateBranchRows(db, updates, gid: gid, now: now)
            try Self.insertAttempts(db, attempts, gid: gid)
        }
    }

    /// Appends attempts, then trims the transaction's history to what `AttemptRetention` keeps.
    private static func insertAttempts(_ db: SQLiteConnection, _ attempts: [BranchAttempt],
                                       gid: String) throws(StoreError) {
        guard !attempts.isEmpty else { return }
        for attempt in attempts {
            try db.run(.insertAttempt) { AttemptColumns.bind(&$0, attempt, gid: gid) }
        }
        try db.run(.trimAttempts) { $0.text(gid) }
    }

    public func findAttempts(gid: String) async throws(StoreError) -> [BranchAttempt] {
        try await reader.perform { db throws(StoreError) in
            try db.query(.findAttempts, [.text(gid)], AttemptColumns.decode)
        }
    }

    private static func updateBranchRows(_ db: SQLiteConnection, _ updates: [BranchUpdate], gid: String,
                                         now: Date) throws(StoreError) {
        for update in updates {
            let changed = try db.run(.updateBranch) { binder in
                binder.text(update.status.rawValue)
                binder.time(update.finishTime)
                binder.time(now)
                binder.text(gid)
                binder.text(update.branchID)
                binder.text(update.op.rawValue)
            }
            guard changed == 1 else {
                throw .notFound("no branch \(update.branchID)/\(update.op) in global transaction \(gid)")
            }
        }
    }

    /// The check of `appendBranches` / `updateBranches`: the global row must be in `expecting`.
    private static func lockGlobal(_ db: SQLiteConnection, gid: String, expecting: GlobalStatus, owner: String?,
                                   now: Date) throws(StoreError) {
        let changed = try db.run(.lockGlobal) { binder in
            binder.time(now)
            binder.text(gid)
            binder.text(expecting.rawValue)
            binder.text(owner)
        }
        guard changed == 1 else {
            throw .notFound("no global transaction \(gid) in status \(expecting.rawValue)"
                            + (owner.map { " leased by \($0)" } ?? ""))
        }
    }

    public func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                          nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                          now: Date) async throws(StoreError) {
        Failpoint.hit("store.touchCron.before"); defer { Failpoint.hit("store.touchCron.after") }
        try await writer.perform { db throws(StoreError) in
            let changed = try db.run(.touchCron) { binder in
                binder.int(nextCronInterval)
                binder.time(nextCronTime)
                binder.time(now)
                binder.text(gid)
                binder.text(status.rawValue)
                binder.text(owner)
            }
            // Status moved on: this pass lost its race and its results are not kept.
            guard changed == 1 else { return }
            try Self.updateBranchRows(db, branchUpdates, gid: gid, now: now)
            try Self.insertAttempts(db, attempts, gid: gid)
        }
    }

    public func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) async throws(StoreError)
        -> [GlobalTransaction] {
        Failpoint.hit("store.claimDue.before"); defer { Failpoint.hit("store.claimDue.after") }
        guard limit > 0 else { return [] }
        let bindings: [SQLValue] = [.text(owner), .time(leaseUntil), .time(now), .time(now), .int(Int64(limit))]
        let claimed = try await writer.perform { db throws(StoreError) in
            let rows = try db.query(.claimDue, bindings, GlobalColumns.decode)
            // A row that cannot be read as written would otherwise come back every lease.
            for row in rows where row.isQuarantined {
                _ = try db.run(.parkGlobal, [.time(Self.parked), .int(row.id)])
            }
            return rows
        }
        for row in claimed where row.isQuarantined {
            logger.error("transaction quarantined: its stored row cannot be read; not driven until force-stopped",
                         metadata: ["gid": "\(row.gid)", "reason": "\(row.quarantine)"])
        }
        // RETURNING has no defined order.
        return claimed.filter { !$0.isQuarantined }.sorted { ($0.id ?? 0) < ($1.id ?? 0) }
    }

    /// next_cron_time of a quarantined row: never due.
    package static let parked = Date(timeIntervalSince1970: 253_402_300_799)  // 9999-12-31T23:59:59Z

    public func forceFail(gid: String, reason: String, now: Date) async throws(StoreError) {
        Failpoint.hit("store.forceFail.before"); defer { Failpoint.hit("store.forceFail.after") }
        try await writer.perform { db throws(StoreError) in
            guard try db.run(.forceFail, [.time(now), .text(reason), .text(gid)]) == 1 else {
                throw .notFound("no unfinished global transaction \(gid)")
            }
        }
    }

    public func extendLeases(gids: [String], owner: String?, until: Date, now: Date) async throws(StoreError) {
        Failpoint.hit("store.extendLeases.before"); defer { Failpoint.hit("store.extendLeases.after") }
        guard !gids.isEmpty else { return }
        let rows: [[SQLValue]] = gids.map { [.time(until), .time(now), .text($0), .text(owner)] }
        try await writer.perform { db throws(StoreError) in
            for row in rows { _ = try db.run(.extendLease, row) }
        }
    }

    public func resetCronTime(after: Date, limit: Int, now: Date) async throws(StoreError) -> Int {
        Failpoint.hit("store.resetCronTime.before"); defer { Failpoint.hit("store.resetCronTime.after") }
        guard limit > 0 else { return 0 }
        let bindings: [SQLValue] = [.time(now), .time(after), .int(Int64(limit))]
        return try await writer.perform { db throws(StoreError) in
            try db.run(.resetCronTime, bindings)
        }
    }

    public func deleteFinished(before: Date, limit: Int) async throws(StoreError) -> Int {
        guard limit > 0 else { return 0 }
        let bindings: [SQLValue] = [.time(before), .int(Int64(limit))]
        return try await writer.perform { db throws(StoreError) in
            let gids = try db.query(.expiredFinished, bindings) { row in row.text(0) }
            var deleted = 0
            for gid in gids where try db.run(.deleteFinishedGlobal, [.text(gid)]) == 1 {
                try db.run(.deleteBranchesOf, [.text(gid)])
                try db.run(.deleteAttemptsOf, [.text(gid)])
                deleted += 1
            }
            return deleted
        }
    }

    public func countDue(now: Date) async throws(StoreError) -> Int {
        let counts = try await reader.perform { db throws(StoreError) in
            try db.query(.countDue, [.time(now)]) { row in row.int(0) }
        }
        return Int(counts.first ?? 0)
    }

    public func resetNextCronTime(gid: String, now: Date) async throws(StoreError) {
        Failpoint.hit("store.resetNextCronTime.before"); defer { Failpoint.hit("store.resetNextCronTime.after") }
        try await writer.perform { db throws(StoreError) in
            guard try db.run(.resetNextCronTime, [.time(now), .time(now), .text(gid)]) == 1 else {
                throw .notFound("no global transaction \(gid)")
            }
        }
    }

    public func scanGlobals(_ query: GlobalQuery) async throws(StoreError) -> [GlobalTransaction] {
        guard query.limit > 0 else { return [] }
        let bindings: [SQLValue] = [
            .int(query.position ?? .max), .text(query.status?.rawValue), .text(query.transType?.rawValue),
            .time(query.createdFrom), .time(query.createdTo), .int(Int64(query.limit)), .text(query.gidPrefix),
        ]
        return try await reader.perform { db throws(StoreError) in
            try db.query(.scanGlobals, bindings, GlobalColumns.decode)
        }
    }

    // MARK: KV

    public func findKV(cat: String, key: String) async throws(StoreError) -> [KVRecord] {
        try await reader.perform { db throws(StoreError) in
            try db.query(.findKV, [.text(cat), .text(key)], KVColumns.decode)
        }
    }

    public func scanKV(cat: String, position: Int64?, limit: Int) async throws(StoreError) -> [KVRecord] {
        guard limit > 0 else { return [] }
        return try await reader.perform { db throws(StoreError) in
            try db.query(.scanKV, [.text(cat), .int(position ?? .max), .int(Int64(limit))], KVColumns.decode)
        }
    }

    public func createKV(cat: String, key: String, value: String, now: Date) async throws(StoreError) {
        Failpoint.hit("store.createKV.before"); defer { Failpoint.hit("store.createKV.after") }
        try await writer.perform { db throws(StoreError) in
            _ = try db.run(.createKV, [.text(cat), .text(key), .text(value), .time(now), .time(now)])
        }
    }

    public func updateKV(cat: String, key: String, value: String, expectedVersion: Int64,
                         now: Date) async throws(StoreError) {
        Failpoint.hit("store.updateKV.before"); defer { Failpoint.hit("store.updateKV.after") }
        let bindings: [SQLValue] = [.text(value), .time(now), .text(cat), .text(key), .int(expectedVersion)]
        try await writer.perform { db throws(StoreError) in
            guard try db.run(.updateKV, bindings) == 1 else {
                throw .notFound("no kv \(cat)/\(key) at version \(expectedVersion)")
            }
        }
    }

    public func deleteKV(cat: String, key: String) async throws(StoreError) {
        Failpoint.hit("store.deleteKV.before"); defer { Failpoint.hit("store.deleteKV.after") }
        try await writer.perform { db throws(StoreError) in
            guard try db.run(.deleteKV, [.text(cat), .text(key)]) == 1 else { throw .notFound("no kv \(cat)/\(key)") }
        }
    }
}
