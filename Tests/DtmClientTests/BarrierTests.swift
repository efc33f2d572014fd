import DtmClient
import Foundation
import Synchronization
import Testing

/// The sub-transaction barrier on SQLite: DTM's three hazards, rollback of the barrier with the
/// business, and DTM's row layout.
@Suite struct BarrierTests {
    /// A database with one account and a counter of business runs.
    struct Ledger {
        let database: SQLiteBarrierDatabase
        private let file = TemporaryDatabaseFile("barrier")
        init() async throws {
            database = try SQLiteBarrierDatabase(path: file.path)
            try await database.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
            try await database.execute("INSERT INTO account VALUES (1, 100)")
        }

        /// Runs one branch call through a fresh barrier (as a handler does per request): adds
        /// `delta` to the balance. Returns whether the business ran.
        func call(_ gid: String, _ transType: String, _ op: String, delta: Int64,
                  branchID: String = "01") async throws -> Bool {
            var barrier = BranchBarrier(try TransInfo(transType: transType, gid: gid, branchID: branchID, op: op))
            let ran = try await barrier.call(database) { transaction in
                try transaction.execute("UPDATE account SET balance = balance + ? WHERE id = 1", [.int(delta)])
                return true
            }
            return ran ?? false
        }

        func balance() async throws -> Int64? {
            try await database.query("SELECT balance FROM account WHERE id = 1").first?.first?.int
        }

        func rows(_ gid: String) async throws -> [[String]] {
            try await database.query("SELECT trans_type, branch_id, op, barrier_id, reason FROM barrier WHERE gid = ? ORDER BY id",
                                     [.text(gid)]).map { $0.map { $0.text ?? "?" } }
        }
    }

    /// A repeated action (the coordinator retried after a lost answer) runs the business once.
    @Test(arguments: [("saga", "action"), ("tcc", "try"), ("tcc", "confirm"), ("tcc", "cancel"), ("saga", "compensate")])
    func duplicateCallRunsOnce(_ transType: String, _ op: String) async throws {
        let ledger = try await Ledger()
        let gid = uniqueGid("dup")
        if op == "cancel" || op == "compensate" {
            #expect(try await ledger.call(gid, transType, op == "cancel" ? "try" : "action", delta: -30))
        }
        #expect(try await ledger.call(gid, transType, op, delta: 7))
        #expect(try await !ledger.call(gid, transType, op, delta: 7), "the repeat is skipped")
        let expected: Int64 = (op == "cancel" || op == "compensate") ? 77 : 107
        #expect(try await ledger.balance() == expected)
    }

    /// A compensation arriving before its action (the action's call was lost or is still on
    /// the way): nothing to undo, so it succeeds without running — and the action, when it
    /// arrives (hanging), is refused without running.
    @Test(arguments: [("saga", "action", "compensate"), ("tcc", "try", "cancel"), ("workflow", "action", "rollback")])
    func nullCompensationThenHangingAction(_ transType: String, _ action: String, _ compensation: String) async throws {
        let ledger = try await Ledger()
        let gid = uniqueGid("null")
        #expect(try await !ledger.call(gid, transType, compensation, delta: 30), "null compensation does not run")
        #expect(try await !ledger.call(gid, transType, action, delta: -30), "the hanging action does not run")
        #expect(try await ledger.balance() == 100)
        // DTM's rows: the compensation took both its own and its action's barrier, reason = its op.
        #expect(try await ledger.rows(gid) == [[transType, "01", action, "01", compensation],
                                               [transType, "01", compensation, "01", compensation]])
    }

    /// Action then compensation, the normal rollback, both run.
    /// A handler whose task is cancelled mid-transaction still commits or rolls back: the
    /// connection is never left inside a transaction for the next handler.
    @Test func aCancelledTaskLeavesNoOpenTransaction() async throws {
        let file = TemporaryDatabaseFile("cancelled")
        let database = try SQLiteBarrierDatabase(path: file.path)
        try await database.execute("CREATE TABLE t (x INTEGER)")
        let task = Task {
            try await database.withTransaction { transaction in
                try transaction.execute("INSERT INTO t VALUES (1)")
                withUnsafeCurrentTask { $0?.cancel() }
            }
        }
        _ = await task.result
        try await database.withTransaction { transaction in try transaction.execute("INSERT INTO t VALUES (2)") }
        #expect(try await database.query("SELECT x FROM t ORDER BY x").map { $0.first?.int } == [1, 2])
    }

    @Test func actionThenCompensationBothRun() async throws {
        let ledger = try await Ledger()
        let gid = uniqueGid("normal")
        #expect(try await ledger.call(gid, "saga", "action", delta: -30))
        #expect(try await ledger.call(gid, "saga", "compensate", delta: 30))
        #expect(try await ledger.balance() == 100)
        #expect(try await ledger.rows(gid) == [["saga", "01", "action", "01", "action"],
                                               ["saga", "01", "compensate", "01", "compensate"]])
    }

    /// The business throws: its writes and the barrier rows roll back together, so the retry runs.
    @Test func failedBusinessRollsBackTheBarrier() async throws {
        let ledger = try await Ledger()
        let gid = uniqueGid("rollback")
        let info = try TransInfo(transType: "saga", gid: gid, branchID: "01", op: "action")
        var barrier = BranchBarrier(info)
        await #expect(throws: DtmClientError.ongoing) {
            try await barrier.call(ledger.database) { transaction in
                try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
                throw DtmClientError.ongoing
            }
        }
        #expect(try await ledger.balance() == 100)
        #expect(try await ledger.rows(gid).isEmpty)
        #expect(try await ledger.call(gid, "saga", "action", delta: -30), "the retry runs")
        #expect(try await ledger.balance() == 70)
    }

    /// Concurrent duplicates (two coordinator retries racing): exactly one runs.
    @Test func concurrentDuplicatesRunOnce() async throws {
        let ledger = try await Ledger()
        let gid = uniqueGid("race")
        let ran = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 { group.addTask { try await ledger.call(gid, "saga", "action", delta: -1) } }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(ran == 1)
        #expect(try await ledger.balance() == 99)
    }

    /// Several barrier calls in one handler get barrier ids 01, 02, ...
    @Test func barrierIDsCountPerCall() async throws {
        let ledger = try await Ledger()
        let gid = uniqueGid("ids")
        var barrier = BranchBarrier(try TransInfo(transType: "saga", gid: gid, branchID: "01", op: "action"))
        for _ in 0..<2 {
            try await barrier.call(ledger.database) { transaction in
                try transaction.execute("UPDATE account SET balance = balance - 1 WHERE id = 1")
            }
        }
        #expect(try await ledger.rows(gid).map { $0[3] } == ["01", "02"])
    }

    /// The msg back-check: before the local transaction it answers FAILURE and makes the local
    /// transaction fail with DUPLICATED; after a committed one it answers success.
    @Test func queryPreparedDecidesOnce() async throws {
        let ledger = try await Ledger()
        let early = uniqueGid("qp-early")
        await #expect(throws: DtmClientError.self) { try await BranchBarrier.queryPrepared(gid: early, on: ledger.database) }
        await #expect(throws: DtmClientError.duplicated) { try await ledger.call(early, "msg", "msg", delta: -30, branchID: "00") }

        let committed = uniqueGid("qp-committed")
        #expect(try await ledger.call(committed, "msg", "msg", delta: -30, branchID: "00"))
        try await BranchBarrier.queryPrepared(gid: committed, on: ledger.database)
        #expect(try await ledger.balance() == 70)
    }

    /// A call without DTM's transaction information is refused with a message saying why.
    @Test func missingTransInfoIsRefused() async throws {
        #expect(throws: DtmClientError.self) { try TransInfo(query: ["gid": "g", "trans_type": "saga", "op": "action"]) }
    }
}
