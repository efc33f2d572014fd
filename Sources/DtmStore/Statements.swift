import DtmEngine

/// Every statement the store runs. Each connection prepares a statement on first use and
/// keeps it (see `SQLiteConnection`); the case name is the context of its error messages.
enum SQL: Int, CaseIterable {
    case begin, commit, rollback, savepoint, releaseSavepoint, rollbackToSavepoint
    case journalModeWAL, userVersion
    case insertGlobal, insertBranch, findGlobal, findBranches, changeStatus, lockGlobal, updateBranch
    case touchCron, claimDue, parkGlobal, extendLease, forceFail, resetCronTime, resetNextCronTime, scanGlobals
    case findKV, scanKV, createKV, updateKV, deleteKV
    case expiredFinished, deleteFinishedGlobal, deleteBranchesOf, countDue
    case insertAttempt, trimAttempts, findAttempts, deleteAttemptsOf
    case probeWrite

    /// Statuses the cron still has work for.
    private static let unfinished = "status IN ('prepared', 'submitted', 'aborting')"

    var text: String {
        switch self {
        case .begin: "BEGIN IMMEDIATE"
        case .commit: "COMMIT"
        case .rollback: "ROLLBACK"
        case .savepoint: "SAVEPOINT request"
        case .releaseSavepoint: "RELEASE request"
        case .rollbackToSavepoint: "ROLLBACK TO request"
        case .journalModeWAL: "PRAGMA journal_mode = WAL"
        case .userVersion: "PRAGMA user_version"

        case .insertGlobal: """
            INSERT INTO trans_global (gid, trans_type, status, query_prepared, protocol, create_time, \
            update_time, finish_time, rollback_time, options, custom_data, next_cron_interval, next_cron_time, \
            owner, ext_data, result, rollback_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
            ON CONFLICT (gid) DO NOTHING
            """
        case .insertBranch: """
            INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status, create_time, update_time, \
            finish_time, rollback_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """
        case .findGlobal: "SELECT \(GlobalColumns.select) FROM trans_global WHERE gid = ?"
        case .findBranches: "SELECT \(BranchColumns.select) FROM trans_branch_op WHERE gid = ? ORDER BY id"
        case .changeStatus: """
            UPDATE trans_global SET status = ?, update_time = ?, \
            rollback_reason = COALESCE(?, rollback_reason), result = COALESCE(?, result), \
            finish_time = COALESCE(?, finish_time), rollback_time = COALESCE(?, rollback_time), \
            next_cron_interval = COALESCE(?, next_cron_interval), next_cron_time = COALESCE(?, next_cron_time), \
            owner = COALESCE(?, owner) \
            WHERE gid = ? AND status = ? AND (?12 IS NULL OR owner = ?12)
            """
        // DTM's SELECT … FOR UPDATE: inside the writer's transaction the row cannot change until
        // the commit; touching update_time makes the check a single statement.
        case .lockGlobal: """
            UPDATE trans_global SET update_time = ?1 WHERE gid = ?2 AND status = ?3 AND (?4 IS NULL OR owner = ?4)
            """
        case .updateBranch: """
            UPDATE trans_branch_op SET status = ?, finish_time = ?, update_time = ? \
            WHERE gid = ? AND branch_id = ? AND op = ?
            """
        case .touchCron: """
            UPDATE trans_global SET next_cron_interval = ?1, next_cron_time = ?2, update_time = ?3 \
            WHERE gid = ?4 AND status = ?5 AND (?6 IS NULL OR owner = ?6)
            """
        case .claimDue: """
            UPDATE trans_global SET owner = ?, next_cron_time = ?, update_time = ? \
            WHERE id IN (SELECT id FROM trans_global WHERE \(Self.unfinished) AND next_cron_time <= ? \
            ORDER BY next_cron_time LIMIT ?) \
            RETURNING \(GlobalColumns.select)
            """
        // A row that cannot be read back is set aside: never due again until an operator acts.
        case .parkGlobal: "UPDATE trans_global SET next_cron_time = ? WHERE id = ?"
        case .extendLease: """
            UPDATE trans_global SET next_cron_time = ?1, update_time = ?2 \
            WHERE gid = ?3 AND \(Self.unfinished) AND next_cron_time < ?1 AND (?4 IS NULL OR owner = ?4)
            """
        case .forceFail: """
            UPDATE trans_global SET status = 'failed', update_time = ?1, rollback_time = ?1, rollback_reason = ?2 \
            WHERE gid = ?3 AND status NOT IN ('succeed', 'failed')
            """
        case .resetCronTime: """
            UPDATE trans_global SET next_cron_time = ? \
            WHERE id IN (SELECT id FROM trans_global WHERE \(Self.unfinished) AND next_cron_time > ? LIMIT ?)
            """
        case .resetNextCronTime: "UPDATE trans_global SET next_cron_time = ?, update_time = ? WHERE gid = ?"
        case .scanGlobals: """
            SELECT \(GlobalColumns.select) FROM trans_global \
            WHERE id < ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR trans_type = ?3) \
            AND (?4 IS NULL OR create_time >= ?4) AND (?5 IS NULL OR create_time <= ?5) \
            AND (?7 = '' OR substr(gid, 1, length(?7)) = ?7) \
            ORDER BY id DESC LIMIT ?6
            """

        case .expiredFinished: """
            SELECT gid FROM trans_global WHERE status IN ('succeed', 'failed') AND update_time < ? ORDER BY id LIMIT ?
            """
        case .deleteFinishedGlobal: "DELETE FROM trans_global WHERE gid = ? AND status IN ('succeed', 'failed')"
        case .deleteBranchesOf: "DELETE FROM trans_branch_op WHERE gid = ?"
        case .countDue: "SELECT count(*) FROM trans_global WHERE \(Self.unfinished) AND next_cron_time <= ?"

        case .insertAttempt: """
            INSERT INTO trans_attempt (gid, branch_id, op, url, start_time, duration_ms, result, message, owner) \
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """
        // Keeps the first and the latest (AttemptRetention): deletes what lies strictly between the
        // first's last id and the latest's first id; with fewer rows a bound is NULL and nothing goes.
        case .trimAttempts: """
            DELETE FROM trans_attempt WHERE gid = ?1 \
            AND id > (SELECT id FROM trans_attempt WHERE gid = ?1 ORDER BY id LIMIT 1 OFFSET \(AttemptRetention.first - 1)) \
            AND id < (SELECT id FROM trans_attempt WHERE gid = ?1 ORDER BY id DESC LIMIT 1 OFFSET \(AttemptRetention.latest - 1))
            """
        case .findAttempts: "SELECT \(AttemptColumns.select) FROM trans_attempt WHERE gid = ? ORDER BY id"
        case .deleteAttemptsOf: "DELETE FROM trans_attempt WHERE gid = ?"

        case .findKV: """
            SELECT \(KVColumns.select) FROM kv WHERE (?1 = '' OR cat = ?1) AND (?2 = '' OR k = ?2) ORDER BY id
            """
        case .scanKV: "SELECT \(KVColumns.select) FROM kv WHERE cat = ? AND id < ? ORDER BY id DESC LIMIT ?"
        case .createKV: "INSERT INTO kv (cat, k, v, version, create_time, update_time) VALUES (?, ?, ?, 1, ?, ?)"
        case .updateKV: """
            UPDATE kv SET v = ?, version = version + 1, update_time = ? WHERE cat = ? AND k = ? AND version = ?
            """
        case .deleteKV: "DELETE FROM kv WHERE cat = ? AND k = ?"
        case .probeWrite: """
            INSERT INTO health (id, checked_at, filler) VALUES (1, ?1, zeroblob(16384)) \
            ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at, filler = excluded.filler
            """
        }
    }
}
