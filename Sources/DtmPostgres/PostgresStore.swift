import DtmEngine
import DtmFailpoints
import DtmStore
import DtmSync
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The durable store on PostgreSQL, shared by any number of coordinators.
///
/// Each call runs on a pooled connection: concurrent calls run concurrently, and PostgreSQL
/// flushes the commits that are ready together (its group commit), so throughput grows with the
/// pool instead of paying one fsync per request. Every write runs in a transaction
/// (BEGIN … COMMIT), so a success means PostgreSQL answered its COMMIT; a call that writes
/// several rows runs as one statement (data-modifying CTEs) or several in that transaction.
///
/// Several coordinators: `claimDue` leases rows with `FOR UPDATE SKIP LOCKED`, every driving
/// write checks the lease owner, and a dead coordinator's leases simply expire.
///
/// The store is usable at once: it connects and migrates the schema in the background, retrying
/// with back-off while PostgreSQL is unreachable. Until then calls fail with `.database` and
/// `health()` reports why, so a coordinator started before its database serves 503s, not a crash.
public final class PostgresStore: TransactionStore {
    public let configuration: PostgresConfiguration
    let database: PostgresDatabase
    private let logger: Logger
    private let state = Locked(State.starting(lastError: nil))
    private let tasks = Locked<[Task<Void, Never>]>([])

    private enum State {
        case starting(lastError: String?)
        case ready
        case closed
    }

    /// Parses `url` (see `PostgresConfiguration`) and starts connecting; only a bad URL throws.
    public convenience init(url: String, logger: Logger = Logger(label: "dtm.store.postgres")) throws(StoreError) {
        self.init(configuration: try PostgresConfiguration(url: url), logger: logger)
    }

    public init(configuration: PostgresConfiguration, logger: Logger = Logger(label: "dtm.store.postgres")) {
        self.configuration = configuration
        self.logger = logger
        database = PostgresDatabase(configuration: configuration, logger: logger)
        let client = database.client
        let runner = Task { await client.run() }
        let migrator = Task { [weak self] () async -> Void in await self?.migrateWithBackoff() }
        tasks.withLock { $0 = [runner, migrator] }
    }

    deinit {
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }

    /// Stops the pool; later calls fail with `.database`. Calling it again does nothing.
    public func close() async {
        let wasOpen = state.withLock { state -> Bool in
            if case .closed = state { return false }
            state = .closed
            return true
        }
        let running = tasks.withLock { tasks in
            defer { tasks = [] }
            return tasks
        }
        for task in running { task.cancel() }
        // The pool closes its connections politely; a server that does not answer must not hold
        // up the coordinator's exit.
        let closed = Atomic<Bool>(false)
        let waiter = Task {
            for task in running { await task.value }
            closed.store(true, ordering: .releasing)
        }
        let deadline = ContinuousClock.now + .seconds(3)
        while !closed.load(ordering: .acquiring) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let finished = closed.load(ordering: .acquiring)
        if !finished { waiter.cancel() }
        guard wasOpen else { return }
        if finished {
            logger.info("closed PostgreSQL store", metadata: ["url": "\(configuration.redactedURL)"])
        } else {
            logger.warning("closed PostgreSQL store without waiting for its connections to close",
                           metadata: ["url": "\(configuration.redactedURL)"])
        }
    }

    /// Waits until the schema is migrated and calls can succeed, or `timeout` passes.
    public func waitUntilReady(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if isReady { return true }
            if case .closed = state.withLock({ $0 }) { return false }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return isReady
    }

    private var isReady: Bool {
        if case .ready = state.withLock({ $0 }) { return true }
        return false
    }

    // MARK: Start-up

    private func migrateWithBackoff() async {
        var delay = Duration.milliseconds(250)
        var attempt = 1
        while !Task.isCancelled {
            do {
                let found = try await migrate()
                let opened = state.withLock { state -> Bool in
                    guard case .starting = state else { return false }
                    state = .ready
                    return true
                }
                if opened {
                    logger.info("opened PostgreSQL store", metadata: [
                        "url": "\(configuration.redactedURL)", "schema_version": "\(PostgresSchema.currentVersion)",
                        "found_version": "\(found)",
                    ])
                }
                return
            } catch {
                let message = "\(error)"
                let stillStarting = state.withLock { state -> Bool in
                    guard case .starting = state else { return false }
                    state = .starting(lastError: message)
                    return true
                }
                guard stillStarting else { return }
                logger.log(level: attempt == 1 ? .error : .warning,
                           "PostgreSQL store not ready; retrying", metadata: [
                               "url": "\(configuration.redactedURL)", "attempt": "\(attempt)",
                               "retry_in": "\(delay)", "error": "\(message)",
                           ])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
                attempt += 1
            }
        }
    }

    /// Brings the database to the current schema; returns the version found. Coordinators that
    /// start together serialize on the version row; DDL that races the bootstrap is retried.
    private func migrate() async throws(StoreError) -> Int {
        let schema = configuration.schema.map { ["CREATE SCHEMA IF NOT EXISTS \($0)"] } ?? []
        for statement in schema + PostgresSchema.bootstrap {
            do {
                _ = try await database.withConnection("create the schema version table") { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: self.database.logger)
                }
            } catch .uniqueConflict {
                // Another coordinator created it at the same moment (pg_type's unique index).
            }
        }
        let logger = database.logger
        return try await database.transaction("migrate the schema") { connection in
            var found = 0
            for try await version in try await connection.query(PostgresQuery(unsafeSQL: PostgresSchema.lockVersion),
                                                                logger: logger).decode(Int32.self) {
                found = Int(version)
            }
            guard found <= PostgresSchema.currentVersion else {
                throw StoreError.database("schema version \(found) of the database is newer than this build "
                                          + "knows (\(PostgresSchema.currentVersion))")
            }
            for version in found..<PostgresSchema.currentVersion {
                for statement in PostgresSchema.migrations[version] {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("UPDATE dtm_schema SET version = \(Int32(version + 1)) WHERE id = 1",
                                           logger: logger)
                logger.notice("migrated PostgreSQL schema", metadata: ["version": "\(version + 1)"])
            }
            return found
        }
    }

    /// Fails fast while the store is not ready (PostgreSQL unreachable at start, or closed).
    private func checkReady() throws(StoreError) {
        switch state.withLock({ $0 }) {
        case .ready: return
        case .starting(let lastError):
            throw .database("PostgreSQL store not ready (\(configuration.redactedURL)): "
                            + (lastError ?? "still connecting"))
        case .closed: throw .database("PostgreSQL store is closed")
        }
    }

    /// Unhealthy while not ready, or when a one-row write does not commit within the timeout.
    public func health() async -> StoreHealth {
        do {
            try checkReady()
            let now = Date().microsecondsSince1970
            let logger = database.logger
            // Bounded well below a probe's own timeout: an unreachable database answers 503 quickly.
            _ = try await database.withConnection("health probe", timeout: .seconds(2)) { connection in
                try await connection.rows(ProbeWrite(bindings: binds { $0.append(now) }), logger: logger)
            }
            return .healthy
        } catch {
            return .unhealthy("\(error)")
        }
    }

    // MARK: Global transactions

    public func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        Failpoint.hit("store.saveNew.before"); defer { Failpoint.hit("store.saveNew.after") }
        try checkReady()
        var bindings = branchArrays(branches, gid: global.gid)
        bindings.append(global.transType.rawValue)
        bindings.append(global.status.rawValue)
        bindings.append(global.queryPrepared)
        bindings.append(global.transProtocol.rawValue)
        bindings.append(global.createTime.microsecondsSince1970)
        bindings.append(global.updateTime.microsecondsSince1970)
        bindings.append(global.finishTime?.microsecondsSince1970)
        bindings.append(global.rollbackTime?.microsecondsSince1970)
        bindings.append(global.options.jsonText)
        bindings.append(global.customData)
        bindings.append(global.nextCronInterval)
        bindings.append(global.nextCronTime.microsecondsSince1970)
        bindings.append(global.owner)
        bindings.append(global.extData)
        bindings.append(global.result)
        bindings.append(global.rollbackReason)
        let statement = SaveNew(bindings: bindings)
        let counts = try await write("saveNew \(global.gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).first.map { try $0.decode((Int64, Int64).self) }
        }
        return (counts?.0 ?? 0) == 1
    }

    public func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? {
        try checkReady()
        let statement = FindGlobal(bindings: binds { $0.append(gid) })
        return try await read("findGlobal \(gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).first.map(Self.global)
        }
    }

    public func findBranches(gid: String) async throws(StoreError) -> [BranchRecord] {
        try checkReady()
        let statement = FindBranches(bindings: binds { $0.append(gid) })
        let rows = try await read("findBranches \(gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).map(StoredBranch.init)
        }
        var branches: [BranchRecord] = []
        branches.reserveCapacity(rows.count)
        for row in rows { branches.append(try row.decoded()) }
        return branches
    }

    public func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                             branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        Failpoint.hit("store.changeStatus.before"); defer { Failpoint.hit("store.changeStatus.after") }
        try checkReady()
        let change = ChangeStatus(bindings: binds {
            $0.append(to.rawValue)
            $0.append(now.microsecondsSince1970)
            $0.append(update.rollbackReason)
            $0.append(update.result)
            $0.append(update.finishTime?.microsecondsSince1970)
            $0.append(update.rollbackTime?.microsecondsSince1970)
            $0.append(update.nextCronInterval)
            $0.append(update.nextCronTime?.microsecondsSince1970)
            $0.append(update.owner)
            $0.append(gid)
            $0.append(from.rawValue)
            $0.append(update.expectedOwner)
        })
        let missing = StoreError.notFound("no global transaction \(gid) in status \(from.rawValue)"
                                          + (update.expectedOwner.map { " leased by \($0)" } ?? ""))
        let branchUpdate = branchUpdateStatement(branchUpdates, gid: gid, now: now)
        let attemptInsert = attemptStatement(attempts, gid: gid)
        let context = "changeStatus \(gid)"
        guard branchUpdate != nil || attemptInsert != nil else {
            let matched = try await write(context) { connection, logger in
                try await connection.rows(change, logger: logger).count
            }
            guard matched == 1 else { throw missing }
            return
        }
        try await database.transaction(context) { [logger = database.logger] connection in
            guard try await connection.rows(change, logger: logger).count == 1 else { throw missing }
            if let branchUpdate { try await Self.run(branchUpdate, on: connection, gid: gid, logger: logger) }
            try await Self.run(attemptInsert, on: connection, gid: gid, logger: logger)
        }
    }

    public func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                               now: Date) async throws(StoreError) {
        Failpoint.hit("store.appendBranches.before"); defer { Failpoint.hit("store.appendBranches.after") }
        try checkReady()
        var bindings = branchArrays(branches, gid: gid)
        bindings.append(now.microsecondsSince1970)
        bindings.append(expecting.rawValue)
        let statement = AppendBranches(bindings: bindings)
        let counts = try await write("appendBranches \(gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).first.map { try $0.decode((Int64, Int64).self) }
        }
        guard (counts?.0 ?? 0) == 1 else {
            throw .notFound("no global transaction \(gid) in status \(expecting.rawValue)")
        }
    }

    public func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                               attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        Failpoint.hit("store.updateBranches.before"); defer { Failpoint.hit("store.updateBranches.after") }
        try checkReady()
        let lock = LockGlobal(bindings: binds {
            $0.append(now.microsecondsSince1970)
            $0.append(gid)
            $0.append(expecting.rawValue)
            $0.append(owner)
        })
        let missing = StoreError.notFound("no global transaction \(gid) in status \(expecting.rawValue)"
                                          + (owner.map { " leased by \($0)" } ?? ""))
        let branchUpdate = branchUpdateStatement(updates, gid: gid, now: now)
        let attemptInsert = attemptStatement(attempts, gid: gid)
        try await database.transaction("updateBranches \(gid)") { [logger = database.logger] connection in
            guard try await connection.rows(lock, logger: logger).count == 1 else { throw missing }
            if let branchUpdate { try await Self.run(branchUpdate, on: connection, gid: gid, logger: logger) }
            try await Self.run(attemptInsert, on: connection, gid: gid, logger: logger)
        }
    }

    public func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                          nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                          now: Date) async throws(StoreError) {
        Failpoint.hit("store.touchCron.before"); defer { Failpoint.hit("store.touchCron.after") }
        try checkReady()
        let touch = TouchCron(bindings: binds {
            $0.append(nextCronInterval)
            $0.append(nextCronTime.microsecondsSince1970)
            $0.append(now.microsecondsSince1970)
            $0.append(gid)
            $0.append(status.rawValue)
            $0.append(owner)
        })
        let context = "touchCron \(gid)"
        let branchUpdate = branchUpdateStatement(branchUpdates, gid: gid, now: now)
        let attemptInsert = attemptStatement(attempts, gid: gid)
        guard branchUpdate != nil || attemptInsert != nil else {
            _ = try await write(context) { connection, logger in try await connection.rows(touch, logger: logger) }
            return
        }
        try await database.transaction(context) { [logger = database.logger] connection in
            // Status moved on: this pass lost its race and its results are not kept.
            guard try await connection.rows(touch, logger: logger).count == 1 else { return }
            if let branchUpdate { try await Self.run(branchUpdate, on: connection, gid: gid, logger: logger) }
            try await Self.run(attemptInsert, on: connection, gid: gid, logger: logger)
        }
    }

    public func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) async throws(StoreError)
        -> [GlobalTransaction] {
        Failpoint.hit("store.claimDue.before"); defer { Failpoint.hit("store.claimDue.after") }
        guard limit > 0 else { return [] }
        try checkReady()
        let claim = ClaimDue(bindings: binds {
            $0.append(owner)
            $0.append(leaseUntil.microsecondsSince1970)
            $0.append(now.microsecondsSince1970)
            $0.append(Int64(limit))
        })
        let claimed = try await write("claimDue") { connection, logger in
            try await connection.rows(claim, logger: logger).map(Self.global)
        }
        let quarantined = claimed.filter(\.isQuarantined)
        for row in quarantined {
            // A row that cannot be read as written would otherwise come back every lease.
            let park = ParkGlobal(bindings: binds {
                $0.append(SQLiteStore.parked.microsecondsSince1970)
                $0.append(row.id ?? 0)
                $0.append(owner)
            })
            _ = try await write("park \(row.gid)") { connection, logger in
                try await connection.rows(park, logger: logger)
            }
            logger.error("transaction quarantined: its stored row cannot be read; not driven until force-stopped",
                         metadata: ["gid": "\(row.gid)", "reason": "\(row.quarantine)"])
        }
        // RETURNING has no defined order.
        return claimed.filter { !$0.isQuarantined }.sorted { ($0.id ?? 0) < ($1.id ?? 0) }
    }

    public func extendLeases(gids: [String], owner: String?, until: Date, now: Date) async throws(StoreError) {
        Failpoint.hit("store.extendLeases.before"); defer { Failpoint.hit("store.extendLeases.after") }
        guard !gids.isEmpty else { return }
        try checkReady()
        let statement = ExtendLeases(bindings: binds {
            $0.append(until.microsecondsSince1970)
            $0.append(now.microsecondsSince1970)
            // One order for every coordinator: row locks taken in the same order cannot deadlock.
            $0.append(gids.sorted())
            $0.append(owner)
        })
        _ = try await write("extendLeases") { connection, logger in try await connection.rows(statement, logger: logger) }
    }

    public func forceFail(gid: String, reason: String, now: Date) async throws(StoreError) {
        Failpoint.hit("store.forceFail.before"); defer { Failpoint.hit("store.forceFail.after") }
        try checkReady()
        let statement = ForceFail(bindings: binds {
            $0.append(now.microsecondsSince1970)
            $0.append(reason)
            $0.append(gid)
        })
        let matched = try await write("forceFail \(gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).count
        }
        guard matched == 1 else { throw .notFound("no unfinished global transaction \(gid)") }
    }

    public func resetCronTime(after: Date, limit: Int, now: Date) async throws(StoreError) -> Int {
        Failpoint.hit("store.resetCronTime.before"); defer { Failpoint.hit("store.resetCronTime.after") }
        guard limit > 0 else { return 0 }
        try checkReady()
        let statement = ResetCronTime(bindings: binds {
            $0.append(now.microsecondsSince1970)
            $0.append(after.microsecondsSince1970)
            $0.append(Int64(limit))
        })
        return try await write("resetCronTime") { connection, logger in
            try await connection.rows(statement, logger: logger).count
        }
    }

    public func deleteFinished(before: Date, limit: Int) async throws(StoreError) -> Int {
        guard limit > 0 else { return 0 }
        try checkReady()
        let statement = DeleteFinished(bindings: binds {
            $0.append(before.microsecondsSince1970)
            $0.append(Int64(limit))
        })
        return try await write("deleteFinished") { connection, logger in
            try await connection.rows(statement, logger: logger).count
        }
    }

    public func countDue(now: Date) async throws(StoreError) -> Int {
        try checkReady()
        let statement = CountDue(bindings: binds { $0.append(now.microsecondsSince1970) })
        return try await read("countDue") { connection, logger in
            Int(try await connection.rows(statement, logger: logger).first?.decode(Int64.self) ?? 0)
        }
    }

    public func resetNextCronTime(gid: String, now: Date) async throws(StoreError) {
        Failpoint.hit("store.resetNextCronTime.before"); defer { Failpoint.hit("store.resetNextCronTime.after") }
        try checkReady()
        let statement = ResetNextCronTime(bindings: binds {
            $0.append(now.microsecondsSince1970)
            $0.append(gid)
        })
        let matched = try await write("resetNextCronTime \(gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).count
        }
        guard matched == 1 else { throw .notFound("no global transaction \(gid)") }
    }

    public func scanGlobals(_ query: GlobalQuery) async throws(StoreError) -> [GlobalTransaction] {
        guard query.limit > 0 else { return [] }
        try checkReady()
        let statement = ScanGlobals(bindings: binds {
            $0.append(query.position ?? .max)
            $0.append(query.status?.rawValue)
            $0.append(query.transType?.rawValue)
            $0.append(query.createdFrom?.microsecondsSince1970)
            $0.append(query.createdTo?.microsecondsSince1970)
            $0.append(Int64(query.limit))
            $0.append(query.gidPrefix)
        })
        return try await read("scanGlobals") { connection, logger in
            try await connection.rows(statement, logger: logger).map(Self.global)
        }
    }

    public func findAttempts(gid: String) async throws(StoreError) -> [BranchAttempt] {
        try checkReady()
        let statement = FindAttempts(bindings: binds { $0.append(gid) })
        let rows = try await read("findAttempts \(gid)") { connection, logger in
            try await connection.rows(statement, logger: logger).map(StoredAttempt.init)
        }
        return rows.map { $0.decoded() }
    }

    // MARK: KV

    public func findKV(cat: String, key: String) async throws(StoreError) -> [KVRecord] {
        try checkReady()
        let statement = FindKV(bindings: binds {
            $0.append(cat)
            $0.append(key)
        })
        return try await read("findKV") { connection, logger in
            try await connection.rows(statement, logger: logger).map(Self.kv)
        }
    }

    public func scanKV(cat: String, position: Int64?, limit: Int) async throws(StoreError) -> [KVRecord] {
        guard limit > 0 else { return [] }
        try checkReady()
        let statement = ScanKV(bindings: binds {
            $0.append(cat)
            $0.append(position ?? .max)
            $0.append(Int64(limit))
        })
        return try await read("scanKV") { connection, logger in
            try await connection.rows(statement, logger: logger).map(Self.kv)
        }
    }

    public func createKV(cat: String, key: String, value: String, now: Date) async throws(StoreError) {
        Failpoint.hit("store.createKV.before"); defer { Failpoint.hit("store.createKV.after") }
        try checkReady()
        let statement = CreateKV(bindings: binds {
            $0.append(cat)
            $0.append(key)
            $0.append(value)
            $0.append(now.microsecondsSince1970)
        })
        _ = try await write("createKV \(cat)/\(key)") { connection, logger in
            try await connection.rows(statement, logger: logger)
        }
    }

    public func updateKV(cat: String, key: String, value: String, expectedVersion: Int64,
                         now: Date) async throws(StoreError) {
        Failpoint.hit("store.updateKV.before"); defer { Failpoint.hit("store.updateKV.after") }
        try checkReady()
        let statement = UpdateKV(bindings: binds {
            $0.append(value)
            $0.append(now.microsecondsSince1970)
            $0.append(cat)
            $0.append(key)
            $0.append(expectedVersion)
        })
        let matched = try await write("updateKV \(cat)/\(key)") { connection, logger in
            try await connection.rows(statement, logger: logger).count
        }
        guard matched == 1 else { throw .notFound("no kv \(cat)/\(key) at version \(expectedVersion)") }
    }

    public func deleteKV(cat: String, key: String) async throws(StoreError) {
        Failpoint.hit("store.deleteKV.before"); defer { Failpoint.hit("store.deleteKV.after") }
        try checkReady()
        let statement = DeleteKV(bindings: binds {
            $0.append(cat)
            $0.append(key)
        })
        let matched = try await write("deleteKV \(cat)/\(key)") { connection, logger in
            try await connection.rows(statement, logger: logger).count
        }
        guard matched == 1 else { throw .notFound("no kv \(cat)/\(key)") }
    }

    // MARK: Helpers

    /// A write, in a transaction of its own (BEGIN … COMMIT); never retried after a lost connection.
    ///
    /// Not a statement that commits on its own: postgres-nio reports a statement done at its
    /// CommandComplete, and on the extended protocol PostgreSQL commits such a statement only at
    /// the Sync after it. A commit that then fails or never happens (the server killed in
    /// `pg_ctl restart -m immediate` flushes the pending CommandComplete as it dies; an error at
    /// commit closes the connection) would reach the caller as a success: an acknowledged write
    /// that is not there. PostgreSQL answers an explicit COMMIT only once the commit is done.
    private func write<T: Sendable>(
        _ context: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(StoreError) -> T {
        let logger = database.logger
        return try await database.transaction(context) { connection in try await body(connection, logger) }
    }

    /// A read: tried once more when the connection it got turns out to be dead.
    private func read<T: Sendable>(
        _ context: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(StoreError) -> T {
        let logger = database.logger
        return try await database.withConnection(context, idempotent: true) { connection in
            try await body(connection, logger)
        }
    }

    /// $1 gid and $2…$10 the branch columns as parallel arrays (see `insertBranchesFrom`).
    private func branchArrays(_ branches: [BranchRecord], gid: String) -> PostgresBindings {
        binds {
            $0.append(gid)
            $0.append(branches.map(\.url))
            $0.append(branches.map { ByteBuffer(bytes: $0.binData) })
            $0.append(branches.map(\.branchID))
            $0.append(branches.map(\.op.rawValue))
            $0.append(branches.map(\.status.rawValue))
            $0.append(branches.map(\.createTime.microsecondsSince1970))
            $0.append(branches.map(\.updateTime.microsecondsSince1970))
            $0.append(branches.map { $0.finishTime?.microsecondsSince1970 ?? nullTime })
            $0.append(branches.map { $0.rollbackTime?.microsecondsSince1970 ?? nullTime })
        }
    }

    /// The branch results as one statement, or nil when there are none. A branch named twice
    /// keeps its last update (one row can be updated once per statement).
    private func branchUpdateStatement(_ updates: [BranchUpdate], gid: String, now: Date) -> BranchUpdateBatch? {
        guard !updates.isEmpty else { return nil }
        var last: [String: BranchUpdate] = [:]
        var order: [String] = []
        for update in updates {
            let key = update.branchID + "\u{0}" + update.op.rawValue
            if last.updateValue(update, forKey: key) == nil { order.append(key) }
        }
        let unique = order.compactMap { last[$0] }
        let statement = UpdateBranches(bindings: binds {
            $0.append(gid)
            $0.append(now.microsecondsSince1970)
            $0.append(unique.map(\.branchID))
            $0.append(unique.map(\.op.rawValue))
            $0.append(unique.map(\.status.rawValue))
            $0.append(unique.map { $0.finishTime?.microsecondsSince1970 ?? nullTime })
        })
        return BranchUpdateBatch(statement: statement, updates: unique)
    }

    /// The attempts as one statement, or nil when there are none.
    private func attemptStatement(_ attempts: [BranchAttempt], gid: String) -> InsertAttempts? {
        guard !attempts.isEmpty else { return nil }
        return InsertAttempts(bindings: binds {
            $0.append(gid)
            $0.append(attempts.map(\.branchID))
            $0.append(attempts.map(\.op.rawValue))
            $0.append(attempts.map(\.url))
            $0.append(attempts.map(\.startTime.microsecondsSince1970))
            $0.append(attempts.map(\.durationMs))
            $0.append(attempts.map(\.result.rawValue))
            $0.append(attempts.map(\.message))
            $0.append(attempts.map(\.owner))
        })
    }

    /// Inside a transaction: appends the attempts, then trims the history to what is kept.
    private static func run(_ insert: InsertAttempts?, on connection: PostgresConnection, gid: String,
                            logger: Logger) async throws {
        guard let insert else { return }
        _ = try await connection.rows(insert, logger: logger)
        _ = try await connection.rows(TrimAttempts(bindings: binds { $0.append(gid) }), logger: logger)
    }

    /// Inside a transaction: every named branch row must exist, or the whole transaction rolls back.
    private static func run(_ batch: BranchUpdateBatch, on connection: PostgresConnection, gid: String,
                            logger: Logger) async throws {
        let updated = try await connection.rows(batch.statement, logger: logger).count
        guard updated == batch.updates.count else {
            let names = batch.updates.map { "\($0.branchID)/\($0.op)" }.joined(separator: ", ")
            throw StoreError.notFound("a branch of \(names) is missing in global transaction \(gid)")
        }
    }

    private static func global(_ row: PostgresRow) throws -> GlobalTransaction {
        let c = row.makeRandomAccess()
        return StoredGlobal(
            id: try c[0].decode(Int64.self), gid: try c[1].decode(String.self),
            transType: try c[2].decode(String.self), status: try c[3].decode(String.self),
            queryPrepared: try c[4].decode(String.self), transProtocol: try c[5].decode(String.self),
            createTime: try c[6].decode(Int64.self), updateTime: try c[7].decode(Int64.self),
            finishTime: try c[8].decode(Int64?.self), rollbackTime: try c[9].decode(Int64?.self),
            options: try c[10].decode(String.self), customData: try c[11].decode(String.self),
            nextCronInterval: try c[12].decode(Int64.self), nextCronTime: try c[13].decode(Int64.self),
            owner: try c[14].decode(String.self), extData: try c[15].decode(String.self),
            result: try c[16].decode(String.self), rollbackReason: try c[17].decode(String.self)
        ).decoded()
    }

    private static func kv(_ row: PostgresRow) throws -> KVRecord {
        let c = row.makeRandomAccess()
        return KVRecord(id: try c[0].decode(Int64.self), cat: try c[1].decode(String.self),
                        key: try c[2].decode(String.self), value: try c[3].decode(String.self),
                        version: try c[4].decode(Int64.self),
                        createTime: Date(microsecondsSince1970: try c[5].decode(Int64.self)),
                        updateTime: Date(microsecondsSince1970: try c[6].decode(Int64.self)))
    }
}

extension StoredBranch {
    /// Read inside the connection's closure; the status is checked outside it (`decoded()`), so
    /// an unknown one is a typed `StoreError`.
    init(_ row: PostgresRow) throws {
        let c = row.makeRandomAccess()
        self.init(id: try c[0].decode(Int64.self), gid: try c[1].decode(String.self), url: try c[2].decode(String.self),
                  binData: Array(try c[3].decode(ByteBuffer.self).readableBytesView),
                  branchID: try c[4].decode(String.self), op: try c[5].decode(String.self),
                  status: try c[6].decode(String.self), createTime: try c[7].decode(Int64.self),
                  updateTime: try c[8].decode(Int64.self), finishTime: try c[9].decode(Int64?.self),
                  rollbackTime: try c[10].decode(Int64?.self))
    }
}

extension StoredAttempt {
    init(_ row: PostgresRow) throws {
        let c = row.makeRandomAccess()
        self.init(id: try c[0].decode(Int64.self), gid: try c[1].decode(String.self),
                  branchID: try c[2].decode(String.self), op: try c[3].decode(String.self),
                  url: try c[4].decode(String.self), startTime: try c[5].decode(Int64.self),
                  durationMs: try c[6].decode(Int64.self), result: try c[7].decode(String.self),
                  message: try c[8].decode(String.self), owner: try c[9].decode(String.self))
    }
}

private struct BranchUpdateBatch: Sendable {
    let statement: UpdateBranches
    let updates: [BranchUpdate]
}

/// Builds bindings in order.
func binds(_ build: (inout PostgresBindings) -> Void) -> PostgresBindings {
    var bindings = PostgresBindings()
    build(&bindings)
    return bindings
}
