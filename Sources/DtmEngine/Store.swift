import Foundation

/// Why a store operation did not happen.
public enum StoreError: Error, Equatable, Sendable {
    /// A compare-and-set found no row in the expected state (row missing or status changed).
    case notFound(String)
    /// A unique key was violated: duplicate (gid, branch_id, op) or (cat, k).
    case uniqueConflict(String)
    /// The database failed (I/O, corruption, closed); the message comes from the driver.
    case database(String)
}

/// Whether a store can take writes now.
public enum StoreHealth: Sendable, Equatable {
    case healthy
    /// Writes fail or would fail (read-only, full, locked, I/O errors); the reason says which.
    case unhealthy(String)
}

/// Fields a status change may also set, in the same statement.
public struct GlobalUpdate: Sendable, Equatable {
    public var rollbackReason: String?
    public var result: String?
    public var finishTime: Date?
    public var rollbackTime: Date?
    public var nextCronInterval: Int64?
    public var nextCronTime: Date?
    /// New lease owner (a request that leases the transaction for its own pass).
    public var owner: String?
    /// Fencing: the change happens only while the row's owner is this one (a pass whose lease
    /// was taken over by another coordinator stops at its next write).
    public var expectedOwner: String?
    /// The transaction's mode, when the writer knows it: not written, but told to observers of
    /// the store (metrics and logs by mode), which otherwise read the row back to learn it.
    public var transType: TransType?

    public init(rollbackReason: String? = nil, result: String? = nil, finishTime: Date? = nil,
                rollbackTime: Date? = nil, nextCronInterval: Int64? = nil, nextCronTime: Date? = nil,
                owner: String? = nil, expectedOwner: String? = nil, transType: TransType? = nil) {
        self.rollbackReason = rollbackReason
        self.result = result
        self.finishTime = finishTime
        self.rollbackTime = rollbackTime
        self.nextCronInterval = nextCronInterval
        self.nextCronTime = nextCronTime
        self.owner = owner
        self.expectedOwner = expectedOwner
        self.transType = transType
    }
}

/// A branch row's new status, addressed by its unique key.
public struct BranchUpdate: Sendable, Equatable {
    public var branchID: String
    public var op: BranchOp
    public var status: BranchStatus
    public var finishTime: Date?

    public init(branchID: String, op: BranchOp, status: BranchStatus, finishTime: Date?) {
        self.branchID = branchID
        self.op = op
        self.status = status
        self.finishTime = finishTime
    }
}

/// Filters of the `/all` listing; nil means "any".
public struct GlobalQuery: Sendable, Equatable {
    public var status: GlobalStatus?
    public var transType: TransType?
    public var createdFrom: Date?
    public var createdTo: Date?
    /// Only gids starting with this text (taken literally: `%` and `_` are no wildcards); "" for any.
    public var gidPrefix: String
    /// Return rows with id < position (ids descend); nil starts at the newest.
    public var position: Int64?
    public var limit: Int

    public init(status: GlobalStatus? = nil, transType: TransType? = nil, createdFrom: Date? = nil,
                createdTo: Date? = nil, gidPrefix: String = "", position: Int64? = nil, limit: Int = 100) {
        self.status = status
        self.transType = transType
        self.createdFrom = createdFrom
        self.createdTo = createdTo
        self.gidPrefix = gidPrefix
        self.position = position
        self.limit = limit
    }
}

/// One row of the `kv` table (topics live under cat `topics`).
public struct KVRecord: Sendable, Equatable {
    public var id: Int64?
    public var cat: String
    public var key: String
    public var value: String
    public var version: Int64
    public var createTime: Date
    public var updateTime: Date

    public init(id: Int64? = nil, cat: String, key: String, value: String, version: Int64 = 1,
                createTime: Date, updateTime: Date? = nil) {
        self.id = id
        self.cat = cat
        self.key = key
        self.value = value
        self.version = version
        self.createTime = createTime
        self.updateTime = updateTime ?? createTime
    }
}

/// The durable truth of the coordinator. Every method returns only after its write is
/// durable (implementations may share one commit among concurrent callers).
///
/// Status changes are compare-and-set on the old status, as DTM's are, so that a request
/// and a cron pass racing on one transaction cannot both win.
public protocol TransactionStore: Sendable {
    /// Inserts the global row and its branches in one transaction if `gid` is new.
    /// Returns false, writing nothing, when the gid already exists. Fills in ids.
    func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool

    func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction?

    /// Branch rows of a transaction in insertion order.
    func findBranches(gid: String) async throws(StoreError) -> [BranchRecord]

    /// Sets `status` (and the given fields, and update_time = now) where the stored status is `from`,
    /// and records `branchUpdates` and `attempts` in the same transaction: all of it or nothing.
    /// Throws `.notFound` when no global row matched (or a branch row is missing).
    ///
    /// `attempts` (here and in `updateBranches` / `touchCron`) are appended to the transaction's
    /// attempt history, which keeps at most `AttemptRetention.limit` rows per transaction
    /// (the first and the latest); a write that does not happen stores none of them.
    func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                      branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) async throws(StoreError)

    /// Inserts branches while the global row is in `expecting` (checked in the same
    /// transaction). `.notFound` if it is not; `.uniqueConflict` on a duplicate (gid, branch_id, op).
    func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                        now: Date) async throws(StoreError)

    /// Records branch results while the global row is in `expecting` (and, when `owner` is
    /// given, leased by it). `.notFound` if it is not.
    func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                        attempts: [BranchAttempt], now: Date) async throws(StoreError)

    /// Moves next_cron_time / next_cron_interval and records `branchUpdates` while the status is
    /// still `status` (and, when `owner` is given, the row is leased by it); does nothing (no
    /// error) otherwise: a pass that lost its race has nothing worth keeping.
    func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                   nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                   now: Date) async throws(StoreError)

    /// Attempts of a transaction, oldest first (see `changeStatus`).
    func findAttempts(gid: String) async throws(StoreError) -> [BranchAttempt]

    /// Leases up to `limit` due transactions: unfinished with next_cron_time <= now. Each
    /// returned row has been updated in the same statement to owner = `owner` and
    /// next_cron_time = `leaseUntil`, so no other coordinator picks it until then.
    func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) async throws(StoreError)
        -> [GlobalTransaction]

    /// Keeps the lease of transactions this coordinator is still driving: for each unfinished
    /// gid whose next_cron_time is earlier than `until` (and, when `owner` is given, that it
    /// still leases), sets it to `until`. Unknown, finished or lost gids are skipped without error.
    func extendLeases(gids: [String], owner: String?, until: Date, now: Date) async throws(StoreError)

    /// Operator tool for a row that cannot be driven: sets status `failed`, finish_time and
    /// `reason` as rollback reason, whatever the stored (possibly unreadable) status is, unless
    /// it is already final. `.notFound` for an unknown or finished gid.
    func forceFail(gid: String, reason: String, now: Date) async throws(StoreError)

    /// Operator tool: for up to `limit` unfinished rows whose next_cron_time is later than
    /// `after`, set next_cron_time = now. Returns how many rows changed.
    func resetCronTime(after: Date, limit: Int, now: Date) async throws(StoreError) -> Int

    /// Sets next_cron_time = now for one gid, whatever its status. `.notFound` for an unknown gid.
    func resetNextCronTime(gid: String, now: Date) async throws(StoreError)

    /// Listing for `/all` and the admin API: ordered by id descending.
    func scanGlobals(_ query: GlobalQuery) async throws(StoreError) -> [GlobalTransaction]

    /// KV rows matching cat and key; an empty string matches any.
    func findKV(cat: String, key: String) async throws(StoreError) -> [KVRecord]

    /// KV rows of `cat` by id descending, id < position when given.
    func scanKV(cat: String, position: Int64?, limit: Int) async throws(StoreError) -> [KVRecord]

    /// Inserts with version 1; `.uniqueConflict` when (cat, key) exists.
    func createKV(cat: String, key: String, value: String, now: Date) async throws(StoreError)

    /// Sets value and version+1 where version == `expectedVersion`; `.notFound` otherwise.
    func updateKV(cat: String, key: String, value: String, expectedVersion: Int64,
                  now: Date) async throws(StoreError)

    /// `.notFound` when (cat, key) does not exist.
    func deleteKV(cat: String, key: String) async throws(StoreError)

    /// Whether writes can succeed now: checked cheaply, for health probes.
    func health() async -> StoreHealth

    /// Retention (DTM's FinishedDataExpire): deletes up to `limit` finished transactions
    /// (`succeed` or `failed`) last updated before `before`, oldest ids first, with their branch
    /// rows and attempts, in one transaction. Never touches an unfinished row. Returns how many were deleted.
    func deleteFinished(before: Date, limit: Int) async throws(StoreError) -> Int

    /// Unfinished transactions whose next_cron_time has passed (due, not leased by a running pass).
    func countDue(now: Date) async throws(StoreError) -> Int
}

extension TransactionStore {
    /// Stores with nothing that can fail (in memory) are always healthy.
    public func health() async -> StoreHealth { .healthy }

    /// A status change with no branch results.
    public func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                             now: Date) async throws(StoreError) {
        try await changeStatus(gid: gid, from: from, to: to, update: update, branchUpdates: [], attempts: [], now: now)
    }

    /// A status change with branch results and no attempts.
    public func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                             branchUpdates: [BranchUpdate], now: Date) async throws(StoreError) {
        try await changeStatus(gid: gid, from: from, to: to, update: update, branchUpdates: branchUpdates,
                               attempts: [], now: now)
    }

    /// Branch results with no attempts.
    public func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                               now: Date) async throws(StoreError) {
        try await updateBranches(gid: gid, expecting: expecting, owner: owner, updates: updates, attempts: [], now: now)
    }

    /// A schedule change with no attempts.
    public func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                          nextCronTime: Date, branchUpdates: [BranchUpdate], now: Date) async throws(StoreError) {
        try await touchCron(gid: gid, status: status, owner: owner, nextCronInterval: nextCronInterval,
                            nextCronTime: nextCronTime, branchUpdates: branchUpdates, attempts: [], now: now)
    }

    /// A schedule change with no branch results and no owner check.
    public func touchCron(gid: String, status: GlobalStatus, nextCronInterval: Int64,
                          nextCronTime: Date, now: Date) async throws(StoreError) {
        try await touchCron(gid: gid, status: status, owner: nil, nextCronInterval: nextCronInterval,
                            nextCronTime: nextCronTime, branchUpdates: [], attempts: [], now: now)
    }

    /// A schedule change without owner check.
    public func touchCron(gid: String, status: GlobalStatus, nextCronInterval: Int64,
                          nextCronTime: Date, branchUpdates: [BranchUpdate], now: Date) async throws(StoreError) {
        try await touchCron(gid: gid, status: status, owner: nil, nextCronInterval: nextCronInterval,
                            nextCronTime: nextCronTime, branchUpdates: branchUpdates, attempts: [], now: now)
    }

    /// Branch results without owner check.
    public func updateBranches(gid: String, expecting: GlobalStatus, updates: [BranchUpdate],
                               now: Date) async throws(StoreError) {
        try await updateBranches(gid: gid, expecting: expecting, owner: nil, updates: updates, attempts: [], now: now)
    }

    /// Lease extension without owner check.
    public func extendLeases(gids: [String], until: Date, now: Date) async throws(StoreError) {
        try await extendLeases(gids: gids, owner: nil, until: until, now: now)
    }
}
