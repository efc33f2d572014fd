import DtmClient
import Logging
import PostgresNIO

/// A business database on PostgreSQL with DTM's barrier table in it (`dtm_barrier.barrier` by
/// default, DTM's own DDL from `sqls/dtmcli.barrier.postgres.sql`), so Go and Swift services can
/// share it. The barrier rows and the handler's writes commit in one PostgreSQL transaction.
///
/// The `PostgresClient` is yours: run it (`await client.run()`) in a long-running task.
public struct PostgresBarrierDatabase: BarrierDatabase {
    public typealias Transaction = PostgresBarrierTransaction

    public let client: PostgresClient
    /// `schema.table` or `table`; letters, digits and `_` only.
    public let tableName: String
    public let logger: Logger

    public init(client: PostgresClient, tableName: String = "dtm_barrier.barrier",
                logger: Logger = Logger(label: "dtm.client.postgres")) throws(DtmClientError) {
        let allowed = tableName.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(allowed.count), allowed.allSatisfy({ part in
            !part.isEmpty && part.utf8.allSatisfy { $0 == UInt8(ascii: "_") || ($0 >= 48 && $0 <= 57)
                || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) }
        }) else {
            throw .invalidArgument("barrier table name '\(tableName)' must be [schema.]table of letters, digits and '_'")
        }
        self.client = client
        self.tableName = tableName
        self.logger = logger
    }

    /// Creates the schema and table if missing (DTM's DDL; the unique constraint is named
    /// `uniq_barrier` as DTM's insert expects).
    public func createTable() async throws {
        let parts = tableName.split(separator: ".")
        if parts.count == 2 {
            try await client.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(parts[0])"), logger: logger)
        }
        try await client.query(PostgresQuery(unsafeSQL: """
            CREATE TABLE IF NOT EXISTS \(tableName) (
              id bigserial PRIMARY KEY,
              trans_type varchar(45) DEFAULT '',
              gid varchar(128) DEFAULT '',
              branch_id varchar(128) DEFAULT '',
              op varchar(45) DEFAULT '',
              barrier_id varchar(45) DEFAULT '',
              reason varchar(45) DEFAULT '',
              create_time timestamp(0) with time zone DEFAULT NULL,
              update_time timestamp(0) with time zone DEFAULT NULL,
              CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
            )
            """), logger: logger)
    }

    public func withTransaction<T: Sendable>(_ body: (PostgresBarrierTransaction) async throws -> T) async throws -> T {
        try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            let result: T
            do {
                result = try await body(PostgresBarrierTransaction(connection: connection, tableName: tableName,
                                                                   logger: logger))
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
            try await connection.query("COMMIT", logger: logger)
            return result
        }
    }
}

/// An open transaction of a `PostgresBarrierDatabase`: run the business statements on
/// `connection` (only inside the closure that received it).
public struct PostgresBarrierTransaction: BarrierTransaction {
    public let connection: PostgresConnection
    let tableName: String
    public let logger: Logger

    public func insertBarrier(_ row: BarrierRow) async throws -> Int {
        var bindings = PostgresBindings()
        for value in [row.transType, row.gid, row.branchID, row.op, row.barrierID, row.reason] { bindings.append(value) }
        let sql = "INSERT INTO \(tableName) (trans_type, gid, branch_id, op, barrier_id, reason, create_time, update_time) "
            + "VALUES ($1, $2, $3, $4, $5, $6, now(), now()) ON CONFLICT ON CONSTRAINT uniq_barrier DO NOTHING RETURNING id"
        let rows = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger).collect()
        return rows.count
    }

    public func barrierReason(gid: String, branchID: String, op: String, barrierID: String) async throws -> String? {
        var bindings = PostgresBindings()
        for value in [gid, branchID, op, barrierID] { bindings.append(value) }
        let sql = "SELECT reason FROM \(tableName) WHERE gid = $1 AND branch_id = $2 AND op = $3 AND barrier_id = $4"
        for try await reason in try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
            .decode(String.self) {
            return reason
        }
        return nil
    }
}
