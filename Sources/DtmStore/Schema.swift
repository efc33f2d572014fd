import DtmEngine
import Logging

/// The SQLite schema, modelled on DTM's `trans_global`, `trans_branch_op` and `kv` tables
/// (same column names; DTM's deprecated `trans_branch_op.data` column is left out).
///
/// Times are INTEGER microseconds since 1970-01-01 UTC; `options` is the JSON text of
/// `TransOptions`; `bin_data` is a BLOB. The version lives in `PRAGMA user_version`.
enum Schema {
    /// `migrations[n]` takes a database from version n to n + 1, in one transaction.
    /// To change the schema, append a script; never edit one that has shipped.
    static let migrations: [String] = [
        // 1: DTM's three tables and their keys.
        """
        CREATE TABLE trans_global (
            id INTEGER PRIMARY KEY,
            gid TEXT NOT NULL,
            trans_type TEXT NOT NULL,
            status TEXT NOT NULL,
            query_prepared TEXT NOT NULL DEFAULT '',
            protocol TEXT NOT NULL DEFAULT '',
            create_time INTEGER NOT NULL,
            update_time INTEGER NOT NULL,
            finish_time INTEGER,
            rollback_time INTEGER,
            options TEXT NOT NULL DEFAULT '',
            custom_data TEXT NOT NULL DEFAULT '',
            next_cron_interval INTEGER NOT NULL DEFAULT 0,
            next_cron_time INTEGER NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            ext_data TEXT NOT NULL DEFAULT '',
            result TEXT NOT NULL DEFAULT '',
            rollback_reason TEXT NOT NULL DEFAULT ''
        ) STRICT;
        CREATE UNIQUE INDEX gid ON trans_global (gid);
        CREATE INDEX owner ON trans_global (owner);
        CREATE INDEX status_next_cron_time ON trans_global (status, next_cron_time);

        CREATE TABLE trans_branch_op (
            id INTEGER PRIMARY KEY,
            gid TEXT NOT NULL,
            url TEXT NOT NULL DEFAULT '',
            bin_data BLOB NOT NULL DEFAULT x'',
            branch_id TEXT NOT NULL,
            op TEXT NOT NULL,
            status TEXT NOT NULL,
            finish_time INTEGER,
            rollback_time INTEGER,
            create_time INTEGER NOT NULL,
            update_time INTEGER NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX gid_branch_uniq ON trans_branch_op (gid, branch_id, op);

        -- AUTOINCREMENT: rows are deleted here, and ids are paging cursors, so never reuse one.
        CREATE TABLE kv (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            cat TEXT NOT NULL,
            k TEXT NOT NULL,
            v TEXT NOT NULL DEFAULT '',
            version INTEGER NOT NULL DEFAULT 1,
            create_time INTEGER NOT NULL,
            update_time INTEGER NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX uniq_k ON kv (cat, k);
        """,
        // 2: one row the health probe rewrites to prove that writes succeed again after a failure
        // (with a few pages of filler: a store that can only rewrite a page in place is still full).
        """
        CREATE TABLE health (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            checked_at INTEGER NOT NULL,
            filler BLOB NOT NULL
        ) STRICT;
        """,
        // 3: the history of branch calls (BranchAttempt), at most AttemptRetention.limit rows a
        // transaction, read and trimmed along (gid, id).
        """
        CREATE TABLE trans_attempt (
            id INTEGER PRIMARY KEY,
            gid TEXT NOT NULL,
            branch_id TEXT NOT NULL,
            op TEXT NOT NULL,
            url TEXT NOT NULL DEFAULT '',
            start_time INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            result TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            owner TEXT NOT NULL DEFAULT ''
        ) STRICT;
        CREATE INDEX attempt_gid_id ON trans_attempt (gid, id);
        """,
    ]

    static var currentVersion: Int { migrations.count }

    /// Brings the database to `currentVersion`; a no-op when it is there already.
    /// Returns the version found before migrating.
    @discardableResult
    static func migrate(_ connection: SQLiteConnection, logger: Logger) throws(StoreError) -> Int {
        try connection.run(.begin)
        do throws(StoreError) {
            let found = try version(of: connection)
            guard found <= currentVersion else {
                throw .database("schema version \(found) of \(connection.path) is newer than this build knows (\(currentVersion))")
            }
            for version in found..<currentVersion {
                try connection.executeScript(migrations[version], context: "migration \(version + 1)")
                try connection.executeScript("PRAGMA user_version = \(version + 1)",
                                             context: "migration \(version + 1)")
                logger.notice("migrated SQLite schema", metadata: [
                    "path": "\(connection.path)", "version": "\(version + 1)",
                ])
            }
            try connection.run(.commit)
            return found
        } catch {
            _ = try? connection.run(.rollback)
            throw error
        }
    }

    static func version(of connection: SQLiteConnection) throws(StoreError) -> Int {
        let rows = try connection.query(.userVersion) { row in
            Int(row.int(0))
        }
        return rows.first ?? 0
    }
}
