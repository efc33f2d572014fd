import DtmClient
import DtmClientPostgres
import DtmTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The barrier on PostgreSQL, in DTM's own `dtm_barrier.barrier` table: the same hazards as on
/// SQLite. Each test has a database of its own on the test process's throw-away cluster
/// (`TestPostgres`: the tests fail, not skip, where PostgreSQL is missing).
@Suite struct PostgresBarrierTests {
    /// Runs `body` with a fresh database, a running client, the barrier table and one account.
    func withLedger(_ body: (PostgresBarrierDatabase) async throws -> Void) async throws {
        let testDatabase = try await TestPostgres.shared().createDatabase()
        let client = PostgresClient(configuration: .init(host: "127.0.0.1", port: testDatabase.cluster.port,
                                                         username: testDatabase.cluster.user, password: nil,
                                                         database: testDatabase.name, tls: .disable))
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                let database = try PostgresBarrierDatabase(client: client)
                try await database.createTable()
                try await client.query("CREATE TABLE account (id int PRIMARY KEY, balance bigint NOT NULL)")
                try await client.query("INSERT INTO account VALUES (1, 100)")
                try await body(database)
            }
        } catch {
            try? await testDatabase.drop()
            throw error
        }
        try await testDatabase.drop()
    }

    static func call(_ database: PostgresBarrierDatabase, _ gid: String, _ transType: String, _ op: String,
                     delta: Int64, branchID: String = "01") async throws -> Bool {
        var barrier = BranchBarrier(try TransInfo(transType: transType, gid: gid, branchID: branchID, op: op))
        return try await barrier.call(database) { transaction in
            try await transaction.connection.query("UPDATE account SET balance = balance + \(delta) WHERE id = 1",
                                                   logger: transaction.logger)
            return true
        } ?? false
    }

    static func balance(_ database: PostgresBarrierDatabase) async throws -> Int64? {
        for try await balance in try await database.client.query("SELECT balance FROM account WHERE id = 1").decode(Int64.self) {
            return balance
        }
        return nil
    }

    static func rows(_ database: PostgresBarrierDatabase, _ gid: String) async throws -> [[String]] {
        var rows: [[String]] = []
        let sequence = try await database.client.query(
            "SELECT trans_type, branch_id, op, barrier_id, reason FROM dtm_barrier.barrier WHERE gid = \(gid) ORDER BY id")
        for try await (a, b, c, d, e) in sequence.decode((String, String, String, String, String).self) {
            rows.append([a, b, c, d, e])
        }
        return rows
    }

    /// All DTM's hazards on one cluster (a cluster per case would cost seconds each).
    @Test func barrierRulesHoldOnPostgres() async throws {
        try await withLedger { db in
            // Duplicate action: runs once.
            let dup = uniqueGid("pg-dup")
            #expect(try await Self.call(db, dup, "saga", "action", delta: -30))
            #expect(try await !Self.call(db, dup, "saga", "action", delta: -30))
            #expect(try await Self.balance(db) == 70)

            // Null compensation, then the hanging action: neither runs; DTM's rows.
            for (transType, action, compensation) in [("saga", "action", "compensate"), ("tcc", "try", "cancel")] {
                let gid = uniqueGid("pg-null")
                #expect(try await !Self.call(db, gid, transType, compensation, delta: 30))
                #expect(try await !Self.call(db, gid, transType, action, delta: -30))
                #expect(try await Self.rows(db, gid) == [[transType, "01", action, "01", compensation],
                                                        [transType, "01", compensation, "01", compensation]])
            }
            #expect(try await Self.balance(db) == 70)

            // Action then compensation both run.
            let normal = uniqueGid("pg-normal")
            #expect(try await Self.call(db, normal, "saga", "action", delta: -30))
            #expect(try await Self.call(db, normal, "saga", "compensate", delta: 30))
            #expect(try await Self.balance(db) == 70)

            // A throwing business rolls back its barrier rows too: the retry runs.
            let retried = uniqueGid("pg-retry")
            var barrier = BranchBarrier(try TransInfo(transType: "saga", gid: retried, branchID: "01", op: "action"))
            await #expect(throws: DtmClientError.ongoing) {
                try await barrier.call(db) { transaction in
                    try await transaction.connection.query("UPDATE account SET balance = balance - 1 WHERE id = 1",
                                                           logger: transaction.logger)
                    throw DtmClientError.ongoing
                }
            }
            #expect(try await Self.rows(db, retried).isEmpty)
            #expect(try await Self.call(db, retried, "saga", "action", delta: -1))
            #expect(try await Self.balance(db) == 69)

            // The msg back-check decides once.
            let early = uniqueGid("pg-qp")
            await #expect(throws: DtmClientError.self) { try await BranchBarrier.queryPrepared(gid: early, on: db) }
            await #expect(throws: DtmClientError.duplicated) {
                try await Self.call(db, early, "msg", "msg", delta: -30, branchID: "00")
            }
            let committed = uniqueGid("pg-qp-ok")
            #expect(try await Self.call(db, committed, "msg", "msg", delta: -9, branchID: "00"))
            try await BranchBarrier.queryPrepared(gid: committed, on: db)
            #expect(try await Self.balance(db) == 60)
        }
    }
}

func uniqueGid(_ label: String) -> String {
    "sdk-\(label)-\(UUID().uuidString.prefix(13).lowercased())"
}
