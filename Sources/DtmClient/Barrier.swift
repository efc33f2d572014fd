/// One row of DTM's barrier table (spec 7.1): `(trans_type, gid, branch_id, op, barrier_id,
/// reason)`, unique on `(gid, branch_id, op, barrier_id)`.
public struct BarrierRow: Sendable, Hashable {
    public var transType: String
    public var gid: String
    public var branchID: String
    public var op: String
    public var barrierID: String
    /// The op of the call that inserted the row.
    public var reason: String

    public init(transType: String, gid: String, branchID: String, op: String, barrierID: String, reason: String) {
        self.transType = transType
        self.gid = gid
        self.branchID = branchID
        self.op = op
        self.barrierID = barrierID
        self.reason = reason
    }
}

/// The business database a branch handler writes to, as the barrier needs it: local
/// transactions in which the barrier rows and the business writes commit or roll back together.
/// `SQLiteBarrierDatabase` implements it; an adapter for another database implements these two
/// requirements and `BarrierTransaction`.
public protocol BarrierDatabase: Sendable {
    /// What the business code gets to run its statements in the transaction.
    associatedtype Transaction: BarrierTransaction

    /// Runs `body` in one local transaction: commits when it returns, rolls back when it throws.
    func withTransaction<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T
}

/// A local transaction as the barrier uses it.
public protocol BarrierTransaction {
    /// Inserts `row` unless a row with the same `(gid, branch_id, op, barrier_id)` exists (MySQL's
    /// INSERT IGNORE, PostgreSQL's ON CONFLICT DO NOTHING); returns the rows inserted, 0 or 1.
    func insertBarrier(_ row: BarrierRow) async throws -> Int

    /// The `reason` of the row `(gid, branch_id, op, barrier_id)`, nil when there is none.
    func barrierReason(gid: String, branchID: String, op: String, barrierID: String) async throws -> String?
}

/// DTM's sub-transaction barrier for one branch call (spec 7.3): makes a handler idempotent
/// (a repeated call is skipped), turns a compensation whose action never ran into a no-op (null
/// compensation), and stops an action that arrives after its compensation (hanging). Its rows
/// are DTM's, so Go and Swift services can share one barrier table.
///
/// Make one per incoming call (from `TransInfo`) and run the business writes through `call`.
public struct BranchBarrier: Sendable {
    public let info: TransInfo
    private var count = 0

    public init(_ info: TransInfo) {
        self.info = info
    }

    /// The op whose barrier a compensation blocks: try for cancel, action for compensate and rollback.
    private static func originOp(of op: String) -> String? {
        switch op {
        case BranchOp.cancel: BranchOp.try
        case BranchOp.compensate, BranchOp.rollback: BranchOp.action
        default: nil
        }
    }

    /// Runs `body` in a local transaction of `database` only when this call must really run:
    /// not a repeat, not a compensation of an action that never ran, not an action whose
    /// compensation already ran. Returns `body`'s result, or nil when the call was skipped (the
    /// handler then answers SUCCESS, which is what DTM expects).
    ///
    /// - Throws: `.duplicated` for the msg barrier (op `msg`) when the back-check already decided;
    ///   whatever `body` or the database throws (the transaction is rolled back).
    @discardableResult
    public mutating func call<Database: BarrierDatabase, T: Sendable>(
        _ database: Database, _ body: (Database.Transaction) async throws -> T
    ) async throws -> T? {
        count += 1
        let barrierID = count < 10 ? "0\(count)" : "\(count)"
        let info = self.info
        return try await database.withTransaction { transaction throws -> T? in
            var originInserted = 0
            if let origin = Self.originOp(of: info.op) {
                originInserted = try await transaction.insertBarrier(BarrierRow(
                    transType: info.transType, gid: info.gid, branchID: info.branchID, op: origin,
                    barrierID: barrierID, reason: info.op))
            }
            let currentInserted = try await transaction.insertBarrier(BarrierRow(
                transType: info.transType, gid: info.gid, branchID: info.branchID, op: info.op,
                barrierID: barrierID, reason: info.op))
            if info.op == BranchOp.msg && currentInserted == 0 { throw DtmClientError.duplicated }
            // Null compensation: the origin row was not there, so its action never ran (and now never will).
            if Self.originOp(of: info.op) != nil && originInserted > 0 { return nil }
            // A repeat, or an action arriving after its compensation inserted its row.
            if currentInserted == 0 { return nil }
            return try await body(transaction)
        }
    }

    /// Serves a msg's back-check (`query_prepared`) from the barrier table (spec 7.4): returns
    /// when the msg's local transaction committed; throws `.failure` when it did not — and
    /// guarantees it never will, by taking its barrier row first.
    public static func queryPrepared<Database: BarrierDatabase>(gid: String, on database: Database) async throws {
        let reason = try await database.withTransaction { transaction in
            _ = try await transaction.insertBarrier(BarrierRow(
                transType: TransType.msg.rawValue, gid: gid, branchID: "00", op: BranchOp.msg, barrierID: "01",
                reason: BranchOp.rollback))
            return try await transaction.barrierReason(gid: gid, branchID: "00", op: BranchOp.msg, barrierID: "01")
        }
        if reason == BranchOp.rollback {
            throw DtmClientError.failure("msg \(gid): the local transaction did not commit; rolled back")
        }
    }

    /// Serves a msg back-check for the transaction named in `info` (see `queryPrepared(gid:on:)`).
    public static func queryPrepared<Database: BarrierDatabase>(_ info: TransInfo, on database: Database) async throws {
        try await queryPrepared(gid: info.gid, on: database)
    }
}
