import DtmClient
import DtmClientPostgres
import DtmGRPC
import DtmNet
import DtmSync
import DtmTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// XA end to end: a global transaction from the SDK, an in-process coordinator, and two branch
/// services written with the SDK (`xaLocalTransaction`), each with its own PostgreSQL database
/// on the test cluster, prepared with PREPARE TRANSACTION and finished by the coordinator.
@Suite struct PostgresXATests {
    /// One bank: a database with DTM's barrier table and account 1, served over gRPC at
    /// `/bank.Bank/Xa`; its action adds `sign * amount` to account 1 and refuses when the request
    /// says `trans_in_result: FAILURE`.
    struct Bank: Sendable {
        let database: PostgresBarrierDatabase
        let testDatabase: TestDatabase
        let url: String
        let runs: RunLog

        func balance() async throws -> Int64? {
            for try await balance in try await database.client.query("SELECT balance FROM account WHERE id = 1")
                .decode(Int64.self) {
                return balance
            }
            return nil
        }

        /// Rows of the barrier table for `gid`, as `branch op barrier reason`.
        func barrier(_ gid: String) async throws -> [String] {
            var rows: [String] = []
            let sequence = try await database.client.query(
                "SELECT trans_type, branch_id, op, barrier_id, reason FROM dtm_barrier.barrier WHERE gid = \(gid) ORDER BY id")
            for try await (t, b, o, i, r) in sequence.decode((String, String, String, String, String).self) {
                rows.append("\(t) \(b) \(o) \(i) \(r)")
            }
            return rows
        }
    }

    /// Which `gid/branch` the business code of a bank ran for, in order.
    final class RunLog: Sendable {
        private let runs = Locked<[String]>([])
        func add(_ info: TransInfo) { runs.withLock { $0.append("\(info.gid)/\(info.branchID)") } }
        func of(_ gid: String) -> [String] { runs.withLock { $0.filter { $0.hasPrefix(gid + "/") } } }
    }

    struct Setup: Sendable {
        let coordinator: TestCoordinator
        let client: DtmClient
        let out: Bank
        let into: Bank
        let cluster: TestPostgres

        /// The prepared transactions left in the two banks' databases.
        func prepared() async throws -> [String] {
            let names = "'\(out.testDatabase.name)', '\(into.testDatabase.name)'"
            let text = try await cluster.psql("SELECT gid FROM pg_prepared_xacts WHERE database IN (\(names)) ORDER BY gid")
            return text.split(separator: "\n").map(String.init)
        }
    }

    /// Starts the cluster's two databases with their clients, a coordinator, the SDK client and
    /// the two gRPC branch services; always stops them, rolls back what a failed test left
    /// prepared, and drops the databases.
    static let quiet: Logger = {
        var logger = Logger(label: "dtm.client.postgres.test")
        logger.logLevel = .warning
        return logger
    }()

    static func with(_ body: (Setup) async throws -> Void) async throws {
        let cluster = try await TestPostgres.shared()
        let databases = [try await cluster.createDatabase(), try await cluster.createDatabase()]
        let clients = databases.map { database in
            PostgresClient(configuration: .init(host: "127.0.0.1", port: cluster.port, username: cluster.user,
                                                password: nil, database: database.name, tls: .disable))
        }
        var failure: (any Error)?
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in clients { group.addTask { await client.run() } }
                defer { group.cancelAll() }
                var barriers: [PostgresBarrierDatabase] = []
                for client in clients {
                    let barrier = try PostgresBarrierDatabase(client: client)
                    try await barrier.createTable()
                    try await client.query("CREATE TABLE account (id int PRIMARY KEY, balance bigint NOT NULL)")
                    try await client.query("INSERT INTO account VALUES (1, 100)")
                    barriers.append(barrier)
                }
                try await TestCoordinator.with { coordinator in
                    try await withStarted(DtmClient(.grpc(coordinator.grpcTarget))) { client in
                        let runs = [RunLog(), RunLog()]
                        let banks = zip(zip(barriers, [Int64(-1), 1]), runs).map { bank, log in
                            let (database, sign) = bank
                            var router = GRPCRouter()
                            router.registerBranch("/bank.Bank/Xa") { request in
                                try await database.xaLocalTransaction(request.info, coordinator: client) { transaction in
                                    log.add(request.info)
                                    let transfer = try request.decode(BusiReqGrpc.self)
                                    if transfer.transInResult == "FAILURE" {
                                        throw DtmClientError.failure("bank refused the transfer")
                                    }
                                    try await transaction.connection.query(
                                        "UPDATE account SET balance = balance + \(sign * transfer.amount) WHERE id = 1",
                                        logger: transaction.logger)
                                }
                                return []
                            }
                            return router
                        }
                        try await withStarted(try await GRPCServer.start(host: "127.0.0.1", port: 0, router: banks[0], logger: quiet)) { outServer in
                            try await withStarted(try await GRPCServer.start(host: "127.0.0.1", port: 0, router: banks[1], logger: quiet)) { inServer in
                                try await body(Setup(
                                    coordinator: coordinator, client: client,
                                    out: Bank(database: barriers[0], testDatabase: databases[0],
                                              url: "127.0.0.1:\(outServer.port)/bank.Bank/Xa", runs: runs[0]),
                                    into: Bank(database: barriers[1], testDatabase: databases[1],
                                               url: "127.0.0.1:\(inServer.port)/bank.Bank/Xa", runs: runs[1]),
                                    cluster: cluster))
                            }
                        }
                    }
                }
            }
        } catch {
            failure = error
        }
        for database in databases {
            // A failed test may leave prepared transactions, which would stop DROP DATABASE.
            let left = (try? await cluster.psql("SELECT gid FROM pg_prepared_xacts WHERE database = '\(database.name)'")) ?? ""
            for xid in left.split(separator: "\n") {
                _ = try? await cluster.psql("ROLLBACK PREPARED '\(xid.replacingOccurrences(of: "'", with: "''"))'",
                                            database: database.name)
            }
            try? await database.drop()
        }
        if let failure { throw failure }
    }

    /// The `DtmClientError` `body` throws, nil when it returns; other errors are recorded.
    static func error(_ body: () async throws -> Void) async -> DtmClientError? {
        do {
            try await body()
            return nil
        } catch let error as DtmClientError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    static func transfer(_ amount: Int64, refuse: Bool = false) -> BusiReqGrpc {
        BusiReqGrpc(amount: amount, transOutResult: "", transInResult: refuse ? "FAILURE" : "")
    }

    /// Both branches prepare (their writes invisible until then), the coordinator commits both;
    /// a repeated commit is harmless.
    @Test func xaCommitsOnPostgres() async throws {
        try await Self.with { s in
            let gid = uniqueGid("pg-xa-ok")
            try await s.client.xaGlobalTransaction(gid: gid) { xa in
                try await xa.callBranch(Self.transfer(30), url: s.out.url)
                // Prepared, not yet committed: the debit is durable but nobody sees it.
                #expect(try await s.prepared() == ["\(gid)-01"])
                #expect(try await s.out.balance() == 100)
                // A repeated action of the prepared branch (its answer was lost) succeeds at once
                // without running again (it must not wait for the prepared transaction's locks).
                let repeated = try TransInfo(transType: "xa", gid: gid, branchID: "01", op: "action", phase2URL: s.out.url)
                _ = try await s.client.callBranch(s.out.url, payload: Self.transfer(30).encode(), info: repeated)
                #expect(s.out.runs.of(gid) == ["\(gid)/01"])
                try await xa.callBranch(Self.transfer(30), url: s.into.url)
                #expect(try await s.prepared() == ["\(gid)-01", "\(gid)-02"])
            }
            #expect(try await s.coordinator.waitFinal(gid) == "succeed")
            #expect(try await s.out.balance() == 70)
            #expect(try await s.into.balance() == 130)
            #expect(try await s.out.barrier(gid) == ["xa 01 action 01 action"])
            #expect(try await s.into.barrier(gid) == ["xa 02 action 01 action"])

            // The coordinator may call commit again (at-least-once), and a client may repeat an
            // action it got no answer for: both succeed without running anything again.
            let again = try TransInfo(transType: "xa", gid: gid, branchID: "01", op: "commit")
            _ = try await s.client.callBranch(s.out.url, payload: [], info: again)
            let repeated = try TransInfo(transType: "xa", gid: gid, branchID: "01", op: "action", phase2URL: s.out.url)
            _ = try await s.client.callBranch(s.out.url, payload: Self.transfer(30).encode(), info: repeated)
            #expect(s.out.runs.of(gid) == ["\(gid)/01"])
            #expect(try await s.out.balance() == 70)
            #expect(try await s.prepared().isEmpty)
        }
    }

    /// The second bank refuses: its local transaction rolls back before registering, the scope
    /// aborts, and the coordinator rolls back the first bank's prepared transaction.
    @Test func xaFailingBranchRollsBackOnPostgres() async throws {
        try await Self.with { s in
            let gid = uniqueGid("pg-xa-fail")
            let refusal = await Self.error {
                try await s.client.xaGlobalTransaction(gid: gid) { xa in
                    try await xa.callBranch(Self.transfer(30), url: s.out.url)
                    try await xa.callBranch(Self.transfer(30, refuse: true), url: s.into.url)
                }
            }
            #expect(refusal == .failure("bank refused the transfer"))
            let final = try await s.coordinator.waitFinal(gid)
            #expect(final == "failed")
            #expect(try await s.coordinator.branches(gid).filter { $0.contains("/rollback") } == ["01/rollback: succeed"])
            #expect(try await s.out.balance() == 100)
            #expect(try await s.into.balance() == 100)
            // The first bank's row now says rollback; the refusing bank kept nothing.
            #expect(try await s.out.barrier(gid) == ["xa 01 action 01 rollback"])
            #expect(try await s.into.barrier(gid).isEmpty)
            #expect(try await s.prepared().isEmpty)
        }
    }

    /// A branch registers but never prepares (its process died in between): the coordinator's
    /// rollback finds no prepared transaction and succeeds; the action arriving late is refused
    /// (FAILURE) instead of preparing work nobody would ever finish.
    @Test func xaRollbackOfABranchThatNeverPrepared() async throws {
        try await Self.with { s in
            let gid = uniqueGid("pg-xa-lost")
            let lost = try TransInfo(transType: "xa", gid: gid, branchID: "02", op: "action", phase2URL: s.into.url)
            let abandoned = await Self.error {
                try await s.client.xaGlobalTransaction(gid: gid) { xa in
                    try await xa.callBranch(Self.transfer(30), url: s.out.url)
                    try await s.client.registerXABranch(lost)
                    throw DtmClientError.failure("the action of branch 02 never answered")
                }
            }
            #expect(abandoned == .failure("the action of branch 02 never answered"))
            #expect(try await s.coordinator.waitFinal(gid) == "failed")
            #expect(try await s.coordinator.branches(gid).filter { $0.contains("/rollback") }.sorted()
                    == ["01/rollback: succeed", "02/rollback: succeed"])
            #expect(try await s.into.barrier(gid) == ["xa 02 action 01 rollback"])

            let late = await Self.error {
                _ = try await s.client.callBranch(s.into.url, payload: Self.transfer(30).encode(), info: lost)
            }
            #expect(late?.isFailure == true, "\(String(describing: late))")
            #expect(s.into.runs.of(gid).isEmpty, "the business code of a rolled-back branch never runs")
            #expect(try await s.out.balance() == 100)
            #expect(try await s.into.balance() == 100)
            #expect(try await s.into.barrier(gid) == ["xa 02 action 01 rollback"])
            #expect(try await s.prepared().isEmpty)
        }
    }
}

extension DtmClient: Stoppable {
    public func stop() async { await shutdown() }
}
