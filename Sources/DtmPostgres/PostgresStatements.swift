import DtmEngine
import DtmStore
import PostgresNIO

/// A statement the store runs, prepared once per connection by postgres-nio (its type's name is
/// the prepared statement's name). Only plain SQL: no server-side functions, no advisory locks,
/// so PostgreSQL-compatible distributed databases can run it too.
protocol Statement: PostgresPreparedStatement where Row == PostgresRow {
    var bindings: PostgresBindings { get }
    init(bindings: PostgresBindings)
}

extension Statement {
    func makeBindings() throws -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

/// Statuses the cron still has work for.
private let unfinished = "status IN ('prepared', 'submitted', 'aborting')"

/// Stands for NULL inside an int8 array (postgres-nio encodes no optional array elements).
let nullTime = Int64.min
private let nullable = "-9223372036854775808"

/// The branch rows of one transaction as parallel arrays, inserted in array order:
/// $1 gid, then url, bin_data, branch_id, op, status, create/update/finish/rollback time.
private let insertBranchesFrom = """
    INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status, create_time, update_time, \
    finish_time, rollback_time) \
    SELECT $1, u.url, u.bin, u.bid, u.op, u.st, u.ct, u.ut, NULLIF(u.ft, \(nullable)), NULLIF(u.rt, \(nullable)) \
    FROM unnest($2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[], \
    $9::int8[], $10::int8[]) WITH ORDINALITY AS u(url, bin, bid, op, st, ct, ut, ft, rt, n)
    """

// MARK: Global transactions

/// One statement: the global row (if its gid is new) and its branches (only then).
/// Returns whether the global row was inserted.
struct SaveNew: Statement {
    static let sql = """
        WITH g AS (INSERT INTO trans_global (gid, trans_type, status, query_prepared, protocol, create_time, \
        update_time, finish_time, rollback_time, options, custom_data, next_cron_interval, next_cron_time, owner, \
        ext_data, result, rollback_reason) VALUES ($1, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
        $23, $24, $25, $26) ON CONFLICT (gid) DO NOTHING RETURNING id), \
        b AS (\(insertBranchesFrom) WHERE EXISTS (SELECT 1 FROM g) ORDER BY u.n RETURNING 1) \
        SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM b)
        """
    let bindings: PostgresBindings
}

struct FindGlobal: Statement {
    static let sql = "SELECT \(GlobalColumns.select) FROM trans_global WHERE gid = $1"
    let bindings: PostgresBindings
}

struct FindBranches: Statement {
    static let sql = "SELECT \(BranchColumns.select) FROM trans_branch_op WHERE gid = $1 ORDER BY id"
    let bindings: PostgresBindings
}

/// Compare-and-set of the status; returns the id when it matched.
struct ChangeStatus: Statement {
    static let sql = """
        UPDATE trans_global SET status = $1, update_time = $2, \
        rollback_reason = COALESCE($3, rollback_reason), result = COALESCE($4, result), \
        finish_time = COALESCE($5, finish_time), rollback_time = COALESCE($6, rollback_time), \
        next_cron_interval = COALESCE($7, next_cron_interval), next_cron_time = COALESCE($8, next_cron_time), \
        owner = COALESCE($9, owner) \
        WHERE gid = $10 AND status = $11 AND ($12::text IS NULL OR owner = $12) RETURNING id
        """
    let bindings: PostgresBindings
}

/// DTM's SELECT … FOR UPDATE as one statement: the row stays locked until the commit.
struct LockGlobal: Statement {
    static let sql = """
        UPDATE trans_global SET update_time = $1 \
        WHERE gid = $2 AND status = $3 AND ($4::text IS NULL OR owner = $4) RETURNING id
        """
    let bindings: PostgresBindings
}

/// One statement: branches appended while the global row is in the expected status.
/// Returns (global rows matched, branch rows inserted).
struct AppendBranches: Statement {
    static let sql = """
        WITH g AS (UPDATE trans_global SET update_time = $11 WHERE gid = $1 AND status = $12 RETURNING id), \
        b AS (\(insertBranchesFrom) WHERE EXISTS (SELECT 1 FROM g) ORDER BY u.n RETURNING 1) \
        SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM b)
        """
    let bindings: PostgresBindings
}

/// Branch results by (branch_id, op): $1 gid, $2 update time, then parallel arrays.
struct UpdateBranches: Statement {
    static let sql = """
        UPDATE trans_branch_op AS b SET status = u.st, finish_time = NULLIF(u.ft, \(nullable)), update_time = $2 \
        FROM unnest($3::text[], $4::text[], $5::text[], $6::int8[]) AS u(bid, op, st, ft) \
        WHERE b.gid = $1 AND b.branch_id = u.bid AND b.op = u.op RETURNING b.id
        """
    let bindings: PostgresBindings
}

struct TouchCron: Statement {
    static let sql = """
        UPDATE trans_global SET next_cron_interval = $1, next_cron_time = $2, update_time = $3 \
        WHERE gid = $4 AND status = $5 AND ($6::text IS NULL OR owner = $6) RETURNING id
        """
    let bindings: PostgresBindings
}

/// Leases due rows; SKIP LOCKED lets coordinators claim side by side without waiting on each other.
struct ClaimDue: Statement {
    static let sql = """
        UPDATE trans_global SET owner = $1, next_cron_time = $2, update_time = $3 \
        WHERE id IN (SELECT id FROM trans_global WHERE \(unfinished) AND next_cron_time <= $3 \
        ORDER BY next_cron_time LIMIT $4 FOR UPDATE SKIP LOCKED) \
        RETURNING \(GlobalColumns.select)
        """
    let bindings: PostgresBindings
}

/// A row that cannot be read back is set aside: never due again until an operator acts.
struct ParkGlobal: Statement {
    static let sql = "UPDATE trans_global SET next_cron_time = $1 WHERE id = $2 AND owner = $3 RETURNING id"
    let bindings: PostgresBindings
}

struct ExtendLeases: Statement {
    static let sql = """
        UPDATE trans_global SET next_cron_time = $1, update_time = $2 \
        WHERE gid = ANY($3::text[]) AND \(unfinished) AND next_cron_time < $1 AND ($4::text IS NULL OR owner = $4) \
        RETURNING id
        """
    let bindings: PostgresBindings
}

struct ForceFail: Statement {
    static let sql = """
        UPDATE trans_global SET status = 'failed', update_time = $1, rollback_time = $1, rollback_reason = $2 \
        WHERE gid = $3 AND status NOT IN ('succeed', 'failed') RETURNING id
        """
    let bindings: PostgresBindings
}

struct ResetCronTime: Statement {
    static let sql = """
        UPDATE trans_global SET next_cron_time = $1 \
        WHERE id IN (SELECT id FROM trans_global WHERE \(unfinished) AND next_cron_time > $2 LIMIT $3 \
        FOR UPDATE SKIP LOCKED) RETURNING id
        """
    let bindings: PostgresBindings
}

/// Retention: one batch of old finished rows and their branches, in one statement.
struct DeleteFinished: Statement {
    static let sql = """
        WITH doomed AS (SELECT id, gid FROM trans_global WHERE status IN ('succeed', 'failed') AND update_time < $1 \
        ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED), \
        branches AS (DELETE FROM trans_branch_op WHERE gid IN (SELECT gid FROM doomed)), \
        attempts AS (DELETE FROM trans_attempt WHERE gid IN (SELECT gid FROM doomed)) \
        DELETE FROM trans_global WHERE id IN (SELECT id FROM doomed) RETURNING id
        """
    let bindings: PostgresBindings
}

struct CountDue: Statement {
    static let sql = "SELECT count(*) FROM trans_global WHERE \(unfinished) AND next_cron_time <= $1"
    let bindings: PostgresBindings
}

struct ResetNextCronTime: Statement {
    static let sql = "UPDATE trans_global SET next_cron_time = $1, update_time = $1 WHERE gid = $2 RETURNING id"
    let bindings: PostgresBindings
}

struct ScanGlobals: Statement {
    static let sql = """
        SELECT \(GlobalColumns.select) FROM trans_global \
        WHERE id < $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR trans_type = $3) \
        AND ($4::int8 IS NULL OR create_time >= $4) AND ($5::int8 IS NULL OR create_time <= $5) \
        AND ($7::text = '' OR substr(gid, 1, char_length($7::text)) = $7::text) \
        ORDER BY id DESC LIMIT $6
        """
    let bindings: PostgresBindings
}

// MARK: Attempts

/// Attempts of one transaction as parallel arrays, inserted in array order: $1 gid, then
/// branch_id, op, url, start_time, duration_ms, result, message, owner.
struct InsertAttempts: Statement {
    static let sql = """
        INSERT INTO trans_attempt (gid, branch_id, op, url, start_time, duration_ms, result, message, owner) \
        SELECT $1, u.bid, u.op, u.url, u.st, u.dur, u.res, u.msg, u.own \
        FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::text[], $8::text[], \
        $9::text[]) WITH ORDINALITY AS u(bid, op, url, st, dur, res, msg, own, n) ORDER BY u.n RETURNING id
        """
    let bindings: PostgresBindings
}

/// Keeps the first and the latest (AttemptRetention): deletes what lies strictly between the
/// first's last id and the latest's first id; with fewer rows a bound is NULL and nothing goes.
/// A separate statement: a data-modifying CTE would not see the rows just inserted.
struct TrimAttempts: Statement {
    static let sql = """
        DELETE FROM trans_attempt WHERE gid = $1 \
        AND id > (SELECT id FROM trans_attempt WHERE gid = $1 ORDER BY id LIMIT 1 OFFSET \(AttemptRetention.first - 1)) \
        AND id < (SELECT id FROM trans_attempt WHERE gid = $1 ORDER BY id DESC LIMIT 1 OFFSET \(AttemptRetention.latest - 1)) \
        RETURNING id
        """
    let bindings: PostgresBindings
}

struct FindAttempts: Statement {
    static let sql = "SELECT \(AttemptColumns.select) FROM trans_attempt WHERE gid = $1 ORDER BY id"
    let bindings: PostgresBindings
}

// MARK: KV

struct FindKV: Statement {
    static let sql = """
        SELECT \(KVColumns.select) FROM kv WHERE ($1 = '' OR cat = $1) AND ($2 = '' OR k = $2) ORDER BY id
        """
    let bindings: PostgresBindings
}

struct ScanKV: Statement {
    static let sql = "SELECT \(KVColumns.select) FROM kv WHERE cat = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    let bindings: PostgresBindings
}

struct CreateKV: Statement {
    static let sql = """
        INSERT INTO kv (cat, k, v, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4) RETURNING id
        """
    let bindings: PostgresBindings
}

struct UpdateKV: Statement {
    static let sql = """
        UPDATE kv SET v = $1, version = version + 1, update_time = $2 \
        WHERE cat = $3 AND k = $4 AND version = $5 RETURNING id
        """
    let bindings: PostgresBindings
}

struct DeleteKV: Statement {
    static let sql = "DELETE FROM kv WHERE cat = $1 AND k = $2 RETURNING id"
    let bindings: PostgresBindings
}

/// Proves that a write commits (a read-only standby or a full disk fails it).
struct ProbeWrite: Statement {
    static let sql = """
        INSERT INTO dtm_health (id, checked_at) VALUES (1, $1) \
        ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at RETURNING id
        """
    let bindings: PostgresBindings
}
