import DtmEngine
import Foundation

/// One page of a listing: the rows and where the next page starts ("" once the end is
/// reached), as DTM pages `/all` and `/scanKV` (ids descending).
public struct Page<Row: Sendable>: Sendable {
    public var rows: [Row]
    public var nextPosition: String
}

/// The read-side and operator operations of DTM's HTTP API that the engine has no call
/// for (spec 1.3, 1.9, 8.2, 8.3): they work on the store directly.
public struct CoordinatorAdmin: Sendable {
    let store: any TransactionStore
    let config: EngineConfig
    let clock: any DtmClock
    /// Makes the retry loop look for due transactions now.
    let wake: @Sendable () async -> Void

    /// The largest page `/all` and `/scanKV` return.
    public static let maxLimit = 1000

    public init(store: any TransactionStore, config: EngineConfig, clock: any DtmClock = SystemClock(),
                wake: @escaping @Sendable () async -> Void = {}) {
        self.store = store
        self.config = config
        self.clock = clock
        self.wake = wake
    }

    /// The transaction (nil when unknown) and its branch rows in insertion order.
    public func query(gid: String) async throws(DtmError) -> (GlobalTransaction?, [BranchRecord]) {
        if gid.isEmpty { throw DtmError.invalidArgument("no gid specified") }
        return try await storage { () async throws(StoreError) in
            guard let global = try await store.findGlobal(gid: gid) else { return (nil, []) }
            return (global, try await store.findBranches(gid: gid))
        }
    }

    /// Whether the store can take writes now.
    public func health() async -> StoreHealth {
        await store.health()
    }

    /// One transaction by gid (nil when unknown).
    public func find(gid: String) async throws(DtmError) -> GlobalTransaction? {
        try await storage { () async throws(StoreError) in try await store.findGlobal(gid: gid) }
    }

    /// A page of transactions, newest first. An unknown status or trans type matches nothing.
    public func list(status: String, transType: String, createdFrom: Date?, createdTo: Date?,
                     position: Int64?, limit: Int) async throws(DtmError) -> Page<GlobalTransaction> {
        try Self.check(limit: limit)
        let statusFilter = status.isEmpty ? nil : GlobalStatus(rawValue: status)
        let typeFilter = transType.isEmpty ? nil : TransType(rawValue: transType)
        if (!status.isEmpty && statusFilter == nil) || (!transType.isEmpty && typeFilter == nil) {
            return Page(rows: [], nextPosition: "")
        }
        let query = GlobalQuery(status: statusFilter, transType: typeFilter, createdFrom: createdFrom,
                                createdTo: createdTo, position: position, limit: limit)
        let rows = try await storage { () async throws(StoreError) in try await store.scanGlobals(query) }
        return Page(rows: rows, nextPosition: Self.nextPosition(rows.count, limit, rows.last?.id))
    }

    /// KV rows matching both filters; an empty filter matches any.
    public func findKV(cat: String, key: String) async throws(DtmError) -> [KVRecord] {
        try await storage { () async throws(StoreError) in try await store.findKV(cat: cat, key: key) }
    }

    /// A page of the kv rows of `cat`, newest first.
    public func scanKV(cat: String, position: Int64?, limit: Int) async throws(DtmError) -> Page<KVRecord> {
        try Self.check(limit: limit)
        let rows = try await storage { () async throws(StoreError) in
            try await store.scanKV(cat: cat, position: position, limit: limit)
        }
        return Page(rows: rows, nextPosition: Self.nextPosition(rows.count, limit, rows.last?.id))
    }

    /// Makes up to `limit` unfinished transactions due now whose next retry is more than
    /// `timeout` seconds away (default 3 × TimeoutToFail). Returns how many changed and
    /// whether more may remain.
    public func resetCronTime(timeout: Int64?, limit: Int) async throws(DtmError)
        -> (succeeded: Int, hasRemaining: Bool) {
        if limit < 1 { throw DtmError.invalidArgument("limit: must be at least 1 (got \(limit))") }
        if let timeout { try RequestLimits.check("timeout", timeout) }
        let now = clock.now()
        let after = now.addingTimeInterval(Double(timeout ?? 3 * config.timeoutToFail))
        let changed = try await storage { () async throws(StoreError) in
            try await store.resetCronTime(after: after, limit: limit, now: now)
        }
        if changed > 0 { await wake() }
        return (changed, changed == limit)
    }

    static func check(limit: Int) throws(DtmError) {
        guard (1...maxLimit).contains(limit) else {
            throw DtmError.invalidArgument("limit: must be between 1 and \(maxLimit) (got \(limit))")
        }
    }

    private static func nextPosition(_ count: Int, _ limit: Int, _ lastID: Int64?) -> String {
        count < limit ? "" : lastID.map(String.init) ?? ""
    }

    private func storage<T>(_ body: () async throws(StoreError) -> T) async throws(DtmError) -> T {
        do { return try await body() } catch { throw DtmError.storage(error) }
    }
}
