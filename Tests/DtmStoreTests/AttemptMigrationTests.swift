import DtmEngine
@testable import DtmPostgres
@testable import DtmStore
import DtmTestSupport
import Foundation
import Testing

/// A database written by the build before the attempt history opens, keeps its rows and gains
/// the history (SQLite schema 2 → 3, PostgreSQL schema 1 → 2).
@Suite("Attempt history: migration from the previous schema")
struct AttemptMigrationTests {
    @Test func sqliteDatabaseOfSchemaTwoKeepsWorking() async throws {
        let file = TemporaryDatabase("previous")
        defer { file.remove() }
        do {
            let raw = try RawDatabase(path: file.path, create: true)
            for script in Schema.migrations.prefix(2) { try raw.execute(script) }
            try raw.execute("""
                PRAGMA user_version = 2;
                INSERT INTO trans_global (gid, trans_type, status, protocol, create_time, update_time, next_cron_time, options)
                VALUES ('old-1', 'saga', 'submitted', 'http', 1, 1, 2, '{"concurrent":false}');
                INSERT INTO trans_branch_op (gid, url, branch_id, op, status, create_time, update_time)
                VALUES ('old-1', 'http://busi/a', '01', 'action', 'prepared', 1, 1);
                """)
        }
        let store = try openSQLiteStore(file.path)
        defer { store.close() }
        #expect(try RawDatabase(path: file.path).integer("PRAGMA user_version") == 3)
        try await expectOldRowsAndNewHistory(store)
    }

    @Test func postgresDatabaseOfSchemaOneKeepsWorking() async throws {
        let database = try await PostgresTestDatabase.shared()
        let schema = "prev_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())"
        let statements = ["CREATE SCHEMA \(schema)", "SET search_path TO \(schema)"] + PostgresSchema.bootstrap
            + PostgresSchema.migrations[0] + [
                "UPDATE dtm_schema SET version = 1",
                """
                INSERT INTO trans_global (gid, trans_type, status, protocol, create_time, update_time, next_cron_time, options) \
                VALUES ('old-1', 'saga', 'submitted', 'http', 1, 1, 2, '{"concurrent":false}')
                """,
                """
                INSERT INTO trans_branch_op (gid, url, branch_id, op, status, create_time, update_time) \
                VALUES ('old-1', 'http://busi/a', '01', 'action', 'prepared', 1, 1)
                """,
            ]
        _ = try await database.cluster.psql(statements.joined(separator: ";\n"), database: database.name)
        let store = try openPostgresStore(database.url + "?sslmode=disable&schema=\(schema)")
        #expect(await store.waitUntilReady(timeout: .seconds(60)))
        do {
            let version = try await database.cluster.psql("SELECT version FROM \(schema).dtm_schema",
                                                          database: database.name)
            #expect(version.trimmingCharacters(in: .whitespacesAndNewlines) == "\(PostgresSchema.currentVersion)")
            try await expectOldRowsAndNewHistory(store)
        } catch {
            await store.close()
            throw error
        }
        await store.close()
        _ = try? await database.cluster.psql("DROP SCHEMA \(schema) CASCADE", database: database.name)
    }

    private func expectOldRowsAndNewHistory(_ store: any TransactionStore) async throws {
        let old = try #require(try await store.findGlobal(gid: "old-1"))
        #expect(old.status == .submitted && !old.isQuarantined, "\(old.quarantine)")
        #expect(try await store.findBranches(gid: "old-1").map(\.url) == ["http://busi/a"])
        #expect(try await store.findAttempts(gid: "old-1").isEmpty)
        let done = BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: at(5))
        try await store.changeStatus(gid: "old-1", from: .submitted, to: .succeed, update: GlobalUpdate(),
                                     branchUpdates: [done], attempts: [sampleAttempt("old-1", 1, result: .success)],
                                     now: at(5))
        #expect(try await store.findAttempts(gid: "old-1").map(\.withoutID) == [sampleAttempt("old-1", 1, result: .success)])
    }
}
