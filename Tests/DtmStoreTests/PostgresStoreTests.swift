import DtmEngine
import DtmSync
@testable import DtmPostgres
import DtmTestSupport
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// What only the PostgreSQL store has: its URL, database faults, retries, several coordinators
/// migrating one database. The TransactionStore contract itself is in the conformance suite.
@Suite("PostgreSQL store")
struct PostgresStoreTests {
    // MARK: URL

    @Test func urlWithEveryPart() throws {
        let config = try PostgresConfiguration(
            url: "postgresql://dtm%40app:p%3Ass@db.example:6543/dtm_db?sslmode=verify-full&pool_max_conns=7"
                + "&connect_timeout=3&operation_timeout=4&schema=dtm&application_name=dtm-eu-1")
        #expect(config.username == "dtm@app")
        #expect(config.password == "p:ss")
        #expect(config.host == "db.example")
        #expect(config.port == 6543)
        #expect(config.database == "dtm_db")
        #expect(config.tls == .verifyFull)
        #expect(config.maxConnections == 7)
        #expect(config.connectTimeout == .seconds(3))
        #expect(config.operationTimeout == .seconds(4))
        #expect(config.schema == "dtm")
        #expect(config.applicationName == "dtm-eu-1")
        #expect(config.redactedURL == "postgres://dtm@app:***@db.example:6543/dtm_db?schema=dtm")
        #expect(!config.redactedURL.contains("p:ss"))

        let defaults = try PostgresConfiguration(url: "postgres://u@h/d")
        #expect(defaults.port == 5432)
        #expect(defaults.tls == .prefer)
        #expect(defaults.maxConnections == 20)
        #expect(defaults.password == nil)
        let socket = try PostgresConfiguration(url: "postgres://u@/d?host=/var/run/postgresql")
        #expect(socket.socketDirectory == "/var/run/postgresql")
    }

    @Test(arguments: [
        ("mysql://u@h/d", "not a PostgreSQL URL"),
        ("postgres://h/d", "names no user"),
        ("postgres://u@h", "names no database"),
        ("postgres://u@h/", "names no database"),
        ("postgres://u@h/d?sslmode=allow", "sslmode 'allow'"),
        ("postgres://u@h/d?pool_max_conns=0", "pool_max_conns '0'"),
        ("postgres://u@h/d?connect_timeout=soon", "connect_timeout 'soon'"),
        ("postgres://u@h/d?schema=a;drop", "schema 'a;drop'"),
        ("postgres://u@h/d?host=relative", "socket directory"),
        ("postgres://u@h/d?sslmod=disable", "unknown PostgreSQL URL parameter 'sslmod'"),
    ])
    func badURLIsRefusedWithItsReason(_ url: String, _ reason: String) {
        do {
            _ = try PostgresConfiguration(url: url)
            Issue.record("accepted \(url)")
        } catch {
            guard case .database(let message) = error else {
                Issue.record("\(error)")
                return
            }
            #expect(message.contains(reason), "\(message)")
        }
    }

    // MARK: Retries and faults

    /// PostgreSQL aborts a transaction with 40001 / 40P01 when it conflicts with another; nothing
    /// of it was written, so the store runs it again. Other errors are not retried.
    @Test(arguments: ["40001", "40P01"])
    func conflictAbortedTransactionIsRunAgain(_ state: String) async throws {
        let (store, drop) = try await freshStore()
        let attempts = Atomic<Int>(0)
        let table = "retry_\(state.lowercased())"
        _ = try await store.database.withConnection("create") { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE TABLE \(table) (n INT)"), logger: store.database.logger)
        }
        let value = try await store.database.transaction("conflicting") { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "INSERT INTO \(table) VALUES (1)"),
                                       logger: store.database.logger)
            if attempts.add(1, ordering: .relaxed).newValue == 1 {
                try await connection.query(PostgresQuery(unsafeSQL: """
                    DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '\(state)'; END $$
                    """), logger: store.database.logger)
            }
            return 42
        }
        #expect(value == 42)
        #expect(attempts.load(ordering: .relaxed) == 2)
        // The aborted attempt's insert is gone: exactly one row.
        let rows = try await store.database.withConnection("count") { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "SELECT count(*)::int8 FROM \(table)"),
                                       logger: store.database.logger).collect().first?.decode(Int64.self)
        }
        #expect(rows == 1)

        let failures = Atomic<Int>(0)
        await #expect(throws: StoreError.self) {
            try await store.database.transaction("failing") { connection in
                failures.add(1, ordering: .relaxed)
                try await connection.query("SELECT 1 / 0", logger: store.database.logger)
            }
        }
        #expect(failures.load(ordering: .relaxed) == 1)
        await store.close()
        await drop()
    }

    /// Connections cut by the server (an administrator, a failover) cost at most the calls that
    /// were using them: reads are tried again, and the store works on afterwards.
    @Test func connectionsKilledByTheServerAreReplaced() async throws {
        let name = "killed_\(UUID().uuidString.prefix(8).lowercased())"
        let (store, drop) = try await freshStore(parameters: "&application_name=\(name)")
        let database = try await PostgresTestDatabase.shared()
        #expect(try await store.saveNew(sampleGlobal("killed-1"), branches: sampleBranches("killed-1")))

        for _ in 0..<3 {
            try await database.cluster.psql("""
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                WHERE application_name = '\(name)'
                """, database: database.name)
            #expect(try await store.findGlobal(gid: "killed-1")?.gid == "killed-1")
        }
        try await waitUntil("writes work again") {
            (try? await store.saveNew(sampleGlobal("killed-2"), branches: [])) == true
        }
        #expect(try await store.findBranches(gid: "killed-1").count == 2)
        await store.close()
        await drop()
    }

    /// A write is reported done only once PostgreSQL committed it. A statement run on its own
    /// commits at the Sync after its CommandComplete, and postgres-nio reports it done at that
    /// CommandComplete: a commit that then failed (here a deferred trigger refuses it; in the
    /// fleet test, PostgreSQL killed by `pg_ctl restart -m immediate` while committing) came back
    /// as a success, an acknowledged msg Prepare whose row was not there.
    @Test func writeWhoseCommitFailsIsNotReportedDone() async throws {
        let (store, drop) = try await freshStore()
        let logger = store.database.logger
        _ = try await store.database.withConnection("install a trigger that fails at commit") { connection in
            try await connection.query(PostgresQuery(unsafeSQL: """
                CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                IF NEW.rollback_reason = 'refuse at commit' THEN RAISE EXCEPTION 'commit refused'; END IF; \
                RETURN NULL; END $$
                """), logger: logger)
            try await connection.query(PostgresQuery(unsafeSQL: """
                CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON trans_global \
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()
                """), logger: logger)
        }

        var refused = sampleGlobal("commit-refused", type: .msg)
        refused.rollbackReason = "refuse at commit"
        let saved = await outcome { () async throws(StoreError) in
            try await store.saveNew(refused, branches: sampleBranches("commit-refused"))
        }
        #expect(saved.error?.isDatabase == true, "saveNew answered \(saved) for a row that was not committed")
        #expect(try await store.findGlobal(gid: "commit-refused") == nil)

        // An update whose commit is refused: reported as failed, the stored row unchanged.
        #expect(try await store.saveNew(sampleGlobal("update-refused", type: .msg), branches: []))
        let changed = await outcome { () async throws(StoreError) in
            try await store.changeStatus(gid: "update-refused", from: .prepared, to: .submitted,
                                         update: GlobalUpdate.transition(to: .submitted, reason: "refuse at commit",
                                                                         now: at(1)), now: at(1))
        }
        #expect(changed.error?.isDatabase == true, "changeStatus answered \(changed) for an update that was not committed")
        #expect(try await store.findGlobal(gid: "update-refused")?.status == .prepared)
        await store.close()
        await drop()
    }

    /// PostgreSQL killed (`pg_ctl restart -m immediate`) under a stream of concurrent writes:
    /// every saveNew reported done is there once the server is back. (Before writes ran in
    /// their own transaction, a backend killed while committing flushed its statement's
    /// CommandComplete as it died, and that write was acknowledged but lost.)
    @Test func acknowledgedWritesSurviveAnImmediateRestart() async throws {
        let cluster = try await TestPostgres.launch()
        do {
            let database = try await cluster.createDatabase()
            let store = try openPostgresStore(database.url + "?sslmode=disable&operation_timeout=5&connect_timeout=2")
            #expect(await store.waitUntilReady(timeout: .seconds(60)))
            let progress = WriteProgress()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<16 {
                    group.addTask {
                        // Bounded: each writer stops once writes work again after the restart.
                        for index in 0..<2000 {
                            let gid = "w\(writer)-\(index)"
                            if (try? await store.saveNew(sampleGlobal(gid, type: .msg), branches: sampleBranches(gid))) == true {
                                if progress.acknowledge(gid) >= 200 { return }
                            }
                        }
                    }
                }
                try await waitUntil("writes under way", timeout: .seconds(60)) {
                    progress.count >= 300
                }
                try await cluster.restartImmediate()
                progress.restarted()
                try await group.waitForAll()
            }
            let written = progress.gids
            let stored = try await store.scanGlobals(GlobalQuery(limit: 100_000)).map(\.gid)
            let lost = Set(written).subtracting(stored)
            #expect(lost.isEmpty, "\(lost.count) of \(written.count) acknowledged writes lost: \(lost.sorted().prefix(10))")
            await store.close()
        } catch {
            await cluster.shutdown()
            throw error
        }
        await cluster.shutdown()
    }

    /// Coordinators that start together on an empty database migrate it once, side by side.
    @Test func coordinatorsStartingTogetherMigrateOnce() async throws {
        let database = try await PostgresTestDatabase.shared()
        let schema = "race_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())"
        let url = database.url + "?sslmode=disable&schema=\(schema)"
        let stores = try (0..<6).map { _ in try openPostgresStore(url) }
        for store in stores { #expect(await store.waitUntilReady(timeout: .seconds(60))) }
        let version = try await database.cluster.psql("SELECT version FROM \(schema).dtm_schema", database: database.name)
        #expect(version.trimmingCharacters(in: .whitespacesAndNewlines) == "\(PostgresSchema.currentVersion)")
        // Every one of them works on the same tables.
        for (index, store) in stores.enumerated() {
            #expect(try await store.saveNew(sampleGlobal("race-\(index)"), branches: []))
        }
        #expect(try await stores[0].scanGlobals(GlobalQuery(limit: 100)).count == stores.count)
        for store in stores { await store.close() }
        try await database.cluster.psql("DROP SCHEMA \(schema) CASCADE", database: database.name)
    }

    /// A private cluster, stopped and started under the store: health follows the database, calls
    /// fail (with a bounded wait) while it is down, and the store works again once it is back.
    /// Also PostgreSQL down when the coordinator starts: the store becomes ready once it is up.
    @Test func databaseDownAtStartAndMidRun() async throws {
        let cluster = try await TestPostgres.launch()
        do {
            let database = try await cluster.createDatabase()
            let url = database.url + "?sslmode=disable&operation_timeout=2&connect_timeout=2"
            let store = try openPostgresStore(url)
            #expect(await store.waitUntilReady(timeout: .seconds(60)))
            #expect(await store.health() == .healthy)
            #expect(try await store.saveNew(sampleGlobal("before"), branches: []))

            try await cluster.stopServer()
            try await waitUntil("health reports the database down") { await store.health() != .healthy }
            let refused = await outcome { () async throws(StoreError) in
                try await store.saveNew(sampleGlobal("while-down"), branches: [])
            }
            #expect(refused.error?.isDatabase == true)

            try await cluster.startServer()
            try await waitUntil("health recovers", timeout: .seconds(90)) { await store.health() == .healthy }
            #expect(try await store.findGlobal(gid: "before")?.gid == "before")
            #expect(try await store.saveNew(sampleGlobal("after"), branches: []))
            await store.close()

            // Down at start: not ready, unhealthy with the reason; ready once PostgreSQL is up.
            try await cluster.stopServer()
            let late = try openPostgresStore(url)
            #expect(await late.waitUntilReady(timeout: .seconds(1)) == false)
            guard case .unhealthy(let reason) = await late.health() else {
                Issue.record("healthy while PostgreSQL is down")
                return
            }
            #expect(reason.contains("not ready"), "\(reason)")
            try await cluster.startServer()
            #expect(await late.waitUntilReady(timeout: .seconds(90)))
            #expect(try await late.findGlobal(gid: "after")?.gid == "after")
            await late.close()
        } catch {
            await cluster.shutdown()
            throw error
        }
        await cluster.shutdown()
    }

    /// A store on a schema of its own in the shared test database, and how to drop it.
    private func freshStore(parameters: String = "") async throws -> (PostgresStore, @Sendable () async -> Void) {
        let database = try await PostgresTestDatabase.shared()
        let schema = "t_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())"
        let store = try openPostgresStore(database.url + "?sslmode=disable&schema=\(schema)" + parameters)
        #expect(await store.waitUntilReady(timeout: .seconds(60)))
        return (store, {
            _ = try? await database.cluster.psql("DROP SCHEMA IF EXISTS \(schema) CASCADE", database: database.name)
        })
    }
}

/// The writes a test saw acknowledged, and how many since the restart.
private final class WriteProgress: Sendable {
    private struct State {
        var gids: [String] = []
        var restarted = false
        var sinceRestart = 0
    }
    private let state = Locked(State())

    var gids: [String] { state.withLock { $0.gids } }
    var count: Int { state.withLock { $0.gids.count } }
    func restarted() { state.withLock { $0.restarted = true } }

    /// Records one; returns how many were acknowledged since the restart.
    func acknowledge(_ gid: String) -> Int {
        state.withLock { state in
            state.gids.append(gid)
            if state.restarted { state.sinceRestart += 1 }
            return state.sinceRestart
        }
    }
}
