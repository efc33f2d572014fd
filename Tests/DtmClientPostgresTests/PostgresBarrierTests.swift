import DtmClient
import DtmClientPostgres
import DtmTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The barrier on PostgreSQL, in DTM's own `dtm_barrier.barrier` table: the same hazards as on
/// SQLite. Each test runs a throw-away cluster (initdb, unix socket only, no TCP port).
@Suite(.enabled(if: ThrowawayPostgres.available, "PostgreSQL 15 binaries not installed"))
struct PostgresBarrierTests {
    /// Runs `body` with a fresh cluster, a running client, the barrier table and one account.
    func withLedger(_ body: (PostgresBarrierDatabase) async throws -> Void) async throws {
        try await withStarted(try await ThrowawayPostgres.start()) { postgres in
            let client = PostgresClient(configuration: .init(unixSocketPath: postgres.socketPath, username: "postgres",
                                                             password: nil, database: "postgres"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                let database = try PostgresBarrierDatabase(client: client)
                try await database.createTable()
                try await client.query("CREATE TABLE account (id int PRIMARY KEY, balance bigint NOT NULL)")
                try await client.query("INSERT INTO account VALUES (1, 100)")
                try await body(database)
            }
        }
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

/// A PostgreSQL 15 cluster in a temporary directory, listening only on a unix socket there;
/// run as the `postgres` user when this process is root (initdb refuses root).
final class ThrowawayPostgres: Stoppable {
    static let bin = "/usr/lib/postgresql/15/bin"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: "\(bin)/initdb") }

    let directory: String
    var socketPath: String { "\(directory)/.s.PGSQL.5432" }

    private init(directory: String) {
        self.directory = directory
    }

    static func start() async throws -> ThrowawayPostgres {
        try await onOwnThread { () throws -> ThrowawayPostgres in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-pg-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let postgres = ThrowawayPostgres(directory: directory)
            if getuid() == 0 { try run("/bin/chown", ["postgres:postgres", directory]) }
            try postgres.asOwner("\(bin)/initdb", ["-D", "\(directory)/data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            try postgres.asOwner("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-l", "\(directory)/log", "-w", "-o",
                                                   "-c listen_addresses= -k \(directory) -p 5432 -F", "start"])
            return postgres
        }
    }

    func stop() async {
        let directory = self.directory
        await onOwnThread {
            try? self.asOwner("\(Self.bin)/pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "stop"])
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private func asOwner(_ tool: String, _ arguments: [String]) throws {
        if getuid() == 0 {
            try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", tool] + arguments)
        } else {
            try Self.run(tool, arguments)
        }
    }

    /// Runs `tool` to completion with posix_spawn and waitpid (Foundation's Process did not
    /// notice runuser exiting here), its output in a file (the server pg_ctl starts inherits
    /// the descriptors, so a pipe would never close).
    private static func run(_ tool: String, _ arguments: [String]) throws {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-pg-out-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([tool] + arguments).map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, tool, &actions, nil, argv, environ)
        guard spawned == 0 else { throw DtmClientError.database("cannot start \(tool): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
        guard exitCode == 0 else {
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            throw DtmClientError.database("\(tool) \(arguments.joined(separator: " ")) failed (\(exitCode)): \(text)")
        }
    }
}
