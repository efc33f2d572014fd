import DtmClient
import Logging
import PostgresNIO

/// DTM's local XA transaction on PostgreSQL (the Go SDK's `XaLocalTransaction`): serves every
/// call the coordinator or an `XA` scope makes to an XA branch.
///
/// - op `action`: runs `body` in a database transaction, registers the branch with the
///   coordinator (its phase-two URL is the `phase2_url` of the call), then ends the transaction
///   with `PREPARE TRANSACTION '<gid>-<branch_id>'`. The writes are then durable but invisible
///   until phase two; any error before the prepare rolls everything back.
/// - op `commit`: `COMMIT PREPARED`; `rollback`: `ROLLBACK PREPARED`. A prepared transaction that
///   is not there counts as done (a repeated call, or a rollback of a branch that never
///   prepared), as in DTM.
///
/// The barrier table (DTM's `dtm_barrier.barrier`) keeps the branch's row `(xa, gid, branch,
/// action, 01)` as DTM's does: the action inserts it inside the prepared transaction, a
/// rollback inserts it (reason `rollback`) after rolling back. So an action that arrives after
/// its rollback finds the row and answers FAILURE instead of preparing work nobody will ever
/// commit, and a repeated action of a committed branch answers SUCCESS without running again.
///
/// The server needs `max_prepared_transactions` above 0 (PostgreSQL's default is 0), at
/// least the number of XA branches prepared at the same time.
extension PostgresBarrierDatabase {
    /// How long a rollback waits for the lock of an action still running on the same branch;
    /// past it the rollback fails and the coordinator retries it (by then the action has
    /// prepared, or given up).
    static let xaRollbackLockTimeout = "3s"

    /// Serves one call to an XA branch (see the type's discussion). `coordinator` registers the
    /// branch on the action; commit and rollback do not use it.
    ///
    /// - Throws: `.failure` when an action arrives after its branch was rolled back; whatever
    ///   `body` or the registration throws (the local transaction is rolled back);
    ///   `.database` when PostgreSQL refuses a statement of the protocol;
    ///   `.invalidArgument` for an op other than action, commit and rollback.
    public func xaLocalTransaction(_ info: TransInfo, coordinator: DtmClient,
                                   _ body: (PostgresBarrierTransaction) async throws -> Void) async throws {
        let xid = try Self.xid(gid: info.gid, branchID: info.branchID)
        switch info.op {
        case BranchOp.commit:
            try await finishPrepared("COMMIT PREPARED", xid: xid, info)
        case BranchOp.rollback:
            try await finishPrepared("ROLLBACK PREPARED", xid: xid, info)
            try await withTransaction { transaction in
                try await Self.run("SET LOCAL lock_timeout = '\(Self.xaRollbackLockTimeout)'", on: transaction)
                _ = try await transaction.insertBarrier(Self.branchRow(info, reason: BranchOp.rollback))
            }
        case BranchOp.action:
            try await prepare(xid: xid, info, coordinator: coordinator, body)
        default:
            throw DtmClientError.invalidArgument("XA branch call \(info) has op '\(info.op)' (expected action, commit or rollback)")
        }
    }

    /// DTM's xid of a branch: `<gid>-<branch_id>` (at most 200 bytes, PostgreSQL's limit).
    public static func xid(gid: String, branchID: String) throws(DtmClientError) -> String {
        let xid = gid + "-" + branchID
        guard xid.utf8.count <= 200, !xid.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "\u{7F}" }) else {
            throw .invalidArgument("XA xid '\(xid)' must be at most 200 bytes of printable text (PostgreSQL's limit)")
        }
        return xid
    }

    /// The barrier row DTM keeps per XA branch.
    private static func branchRow(_ info: TransInfo, reason: String) -> BarrierRow {
        BarrierRow(transType: TransType.xa.rawValue, gid: info.gid, branchID: info.branchID, op: BranchOp.action,
                   barrierID: "01", reason: reason)
    }

    private func prepare(xid: String, _ info: TransInfo, coordinator: DtmClient,
                         _ body: (PostgresBarrierTransaction) async throws -> Void) async throws {
        // A repeated action whose first run already prepared: done (it registered before preparing).
        if try await isPrepared(xid) { return }
        try await client.withConnection { connection in
            let transaction = PostgresBarrierTransaction(connection: connection, tableName: tableName, logger: logger)
            try await Self.run("BEGIN", on: transaction)
            let earlier: String?
            do {
                if try await transaction.insertBarrier(Self.branchRow(info, reason: BranchOp.action)) == 0 {
                    // The row is there and committed: a rollback came first, or the branch already committed.
                    earlier = try await transaction.barrierReason(gid: info.gid, branchID: info.branchID,
                                                                  op: BranchOp.action, barrierID: "01") ?? ""
                } else {
                    earlier = nil
                    try await body(transaction)
                    try await coordinator.registerXABranch(info)
                }
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
            if let earlier {
                try await Self.run("ROLLBACK", on: transaction)
                if earlier == BranchOp.rollback {
                    throw DtmClientError.failure("XA branch \(info.gid)/\(info.branchID) was rolled back before its action ran")
                }
                return
            }
            // A failed PREPARE rolls the transaction back by itself (PostgreSQL's rule).
            try await Self.run("PREPARE TRANSACTION \(Self.literal(xid))", on: transaction)
        }
    }

    /// COMMIT PREPARED / ROLLBACK PREPARED; a missing prepared transaction (SQLSTATE 42704) is
    /// a repeat or a branch that never prepared, both fine.
    private func finishPrepared(_ command: String, xid: String, _ info: TransInfo) async throws {
        do {
            try await client.query(PostgresQuery(unsafeSQL: "\(command) \(Self.literal(xid))"), logger: logger)
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42704" {
            logger.debug("\(command) found no prepared transaction", metadata: ["xid": "\(xid)", "branch": "\(info)"])
        } catch {
            throw DtmClientError.database("\(command) '\(xid)': \(Self.describe(error))")
        }
    }

    private func isPrepared(_ xid: String) async throws -> Bool {
        var bindings = PostgresBindings()
        bindings.append(xid)
        let query = PostgresQuery(unsafeSQL: "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()",
                                  binds: bindings)
        do {
            return try await client.query(query, logger: logger).collect().count > 0
        } catch {
            throw DtmClientError.database("reading pg_prepared_xacts: \(Self.describe(error))")
        }
    }

    private static func run(_ sql: String, on transaction: PostgresBarrierTransaction) async throws {
        do {
            try await transaction.connection.query(PostgresQuery(unsafeSQL: sql), logger: transaction.logger)
        } catch {
            throw DtmClientError.database("\(sql): \(describe(error))")
        }
    }

    /// A SQL string literal (PREPARE TRANSACTION and friends take no parameters).
    private static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// PostgreSQL's own message and SQLSTATE where there is one.
    private static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError, let message = error.serverInfo?[.message] else { return "\(error)" }
        return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
    }
}
