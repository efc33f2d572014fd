import Foundation

/// A `TransactionStore` held in memory, with the documented semantics (CAS on status, unique
/// keys, leases). For tests and for running the server without persistence.
public actor InMemoryStore: TransactionStore {
    private var globals: [String: GlobalTransaction] = [:]
    private var branches: [String: [BranchRecord]] = [:]
    private var attempts: [String: [BranchAttempt]] = [:]
    private var kv: [KVKey: KVRecord] = [:]
    private var lastID: Int64 = 0

    private struct KVKey: Hashable {
        var cat: String
        var key: String
    }

    public init() {}

    private func nextID() -> Int64 {
        lastID += 1
        return lastID
    }

    // MARK: Transactions

    public func saveNew(_ global: GlobalTransaction, branches rows: [BranchRecord]) throws(StoreError) -> Bool {
        guard globals[global.gid] == nil else { return false }
        try checkUnique(rows, gid: global.gid)  // all or nothing, as in one SQL transaction
        var stored = global
        stored.id = nextID()
        globals[global.gid] = stored
        branches[global.gid] = []
        try insert(rows, gid: global.gid)
        return true
    }

    public func findGlobal(gid: String) -> GlobalTransaction? {
        globals[gid]
    }

    public func findBranches(gid: String) -> [BranchRecord] {
        branches[gid] ?? []
    }

    public func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                             branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) throws(StoreError) {
        guard var global = globals[gid], global.status == from,
              update.expectedOwner.map({ $0 == global.owner }) ?? true else {
            throw StoreError.notFound("no transaction \(gid) in status \(from.rawValue)"
                                      + (update.expectedOwner.map { " leased by \($0)" } ?? ""))
        }
        try applyBranchUpdates(branchUpdates, gid: gid, now: now)
        append(attempts, gid: gid)
        global.apply(status: to, update, now: now)
        globals[gid] = global
    }

    public func appendBranches(gid: String, expecting: GlobalStatus, branches rows: [BranchRecord],
                               now: Date) throws(StoreError) {
        try requireStatus(gid, expecting)
        try insert(rows, gid: gid)
    }

    public func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                               attempts: [BranchAttempt], now: Date) throws(StoreError) {
        try requireStatus(gid, expecting, owner: owner)
        try applyBranchUpdates(updates, gid: gid, now: now)
        append(attempts, gid: gid)
    }

    public func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                          nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                          now: Date) throws(StoreError) {
        guard var global = globals[gid], global.status == status, owner.map({ $0 == global.owner }) ?? true
        else { return }
        try applyBranchUpdates(branchUpdates, gid: gid, now: now)
        append(attempts, gid: gid)
        global.nextCronInterval = nextCronInterval
        global.nextCronTime = nextCronTime
        global.updateTime = now
        globals[gid] = global
    }

    public func extendLeases(gids: [String], owner: String?, until: Date, now: Date) {
        for gid in gids {
            guard var global = globals[gid], !global.status.isFinished, global.nextCronTime < until,
                  owner.map({ $0 == global.owner }) ?? true else { continue }
            global.nextCronTime = until
            global.updateTime = now
            globals[gid] = global
        }
    }

    public func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) -> [GlobalTransaction] {
        let due = globals.values
            .filter { !$0.status.isFinished && $0.nextCronTime <= now }
            .sorted { ($0.nextCronTime, $0.id ?? 0) < ($1.nextCronTime, $1.id ?? 0) }
            .prefix(max(0, limit))
        return due.map { global in
            var leased = global
            leased.owner = owner
            leased.nextCronTime = leaseUntil
            leased.updateTime = now
            globals[global.gid] = leased
            return leased
        }
    }

    public func forceFail(gid: String, reason: String, now: Date) throws(StoreError) {
        guard var global = globals[gid], !global.status.isFinished else {
            throw StoreError.notFound("no unfinished transaction \(gid)")
        }
        global.apply(status: .failed, .transition(to: .failed, reason: reason, now: now), now: now)
        globals[gid] = global
    }

    public func resetCronTime(after: Date, limit: Int, now: Date) -> Int {
        let late = globals.values
            .filter { !$0.status.isFinished && $0.nextCronTime > after }
            .sorted { ($0.id ?? 0) < ($1.id ?? 0) }
            .prefix(max(0, limit))
        for global in late {
            globals[global.gid]?.nextCronTime = now
            globals[global.gid]?.updateTime = now
        }
        return late.count
    }

    public func deleteFinished(before: Date, limit: Int) -> Int {
        let expired = globals.values
            .filter { $0.status.isFinished && $0.updateTime < before }
            .sorted { ($0.id ?? 0) < ($1.id ?? 0) }
            .prefix(max(0, limit))
        for global in expired {
            globals[global.gid] = nil
            branches[global.gid] = nil
            attempts[global.gid] = nil
        }
        return expired.count
    }

    public func countDue(now: Date) -> Int {
        globals.values.count { !$0.status.isFinished && $0.nextCronTime <= now }
    }

    public func resetNextCronTime(gid: String, now: Date) throws(StoreError) {
        guard globals[gid] != nil else { throw StoreError.notFound("no transaction \(gid)") }
        globals[gid]?.nextCronTime = now
        globals[gid]?.updateTime = now
    }

    public func scanGlobals(_ query: GlobalQuery) -> [GlobalTransaction] {
        let rows = globals.values.filter { global in
            (query.status.map { global.status == $0 } ?? true)
                && (query.transType.map { global.transType == $0 } ?? true)
                && (query.createdFrom.map { global.createTime >= $0 } ?? true)
                && (query.createdTo.map { global.createTime <= $0 } ?? true)
                && global.gid.hasPrefix(query.gidPrefix)
                && (query.position.map { (global.id ?? 0) < $0 } ?? true)
        }
        return Array(rows.sorted { ($0.id ?? 0) > ($1.id ?? 0) }.prefix(max(0, query.limit)))
    }

    public func findAttempts(gid: String) -> [BranchAttempt] {
        attempts[gid] ?? []
    }

    /// Appends with ids, then keeps what `AttemptRetention` keeps.
    private func append(_ new: [BranchAttempt], gid: String) {
        guard !new.isEmpty else { return }
        var rows = attempts[gid] ?? []
        for var attempt in new {
            attempt.id = nextID()
            attempt.gid = gid
            rows.append(attempt)
        }
        attempts[gid] = AttemptRetention.trimmed(rows)
    }

    private func requireStatus(_ gid: String, _ expecting: GlobalStatus, owner: String? = nil) throws(StoreError) {
        guard let global = globals[gid], global.status == expecting, owner.map({ $0 == global.owner }) ?? true else {
            throw StoreError.notFound("no transaction \(gid) in status \(expecting.rawValue)"
                                      + (owner.map { " leased by \($0)" } ?? ""))
        }
    }

    /// All or nothing: a duplicate (gid, branch_id, op), stored or within `rows`, inserts none.
    private func checkUnique(_ rows: [BranchRecord], gid: String) throws(StoreError) {
        var keys = Set((branches[gid] ?? []).map(\.key))
        for row in rows where !keys.insert(row.key).inserted {
            throw StoreError.uniqueConflict("duplicate branch \(gid)/\(row.branchID)/\(row.op)")
        }
    }

    /// Records results only if every addressed row exists (the SQL stores fail the whole write).
    private func applyBranchUpdates(_ updates: [BranchUpdate], gid: String, now: Date) throws(StoreError) {
        guard !updates.isEmpty else { return }
        let keys = Set((branches[gid] ?? []).map(\.key))
        for update in updates where !keys.contains(CallKey(update.branchID, update.op)) {
            throw StoreError.notFound("no branch \(update.branchID)/\(update.op) in global transaction \(gid)")
        }
        branches[gid, default: []].apply(updates, now: now)
    }

    private func insert(_ rows: [BranchRecord], gid: String) throws(StoreError) {
        try checkUnique(rows, gid: gid)
        for var row in rows {
            row.id = nextID()
            row.gid = gid
            branches[gid, default: []].append(row)
        }
    }

    // MARK: KV

    public func findKV(cat: String, key: String) -> [KVRecord] {
        kv.values
            .filter { (cat.isEmpty || $0.cat == cat) && (key.isEmpty || $0.key == key) }
            .sorted { ($0.id ?? 0) < ($1.id ?? 0) }
    }

    public func scanKV(cat: String, position: Int64?, limit: Int) -> [KVRecord] {
        let rows = kv.values.filter { row in row.cat == cat && (position.map { (row.id ?? 0) < $0 } ?? true) }
        return Array(rows.sorted { ($0.id ?? 0) > ($1.id ?? 0) }.prefix(max(0, limit)))
    }

    public func createKV(cat: String, key: String, value: String, now: Date) throws(StoreError) {
        let id = KVKey(cat: cat, key: key)
        guard kv[id] == nil else { throw StoreError.uniqueConflict("kv \(cat)/\(key) exists") }
        kv[id] = KVRecord(id: nextID(), cat: cat, key: key, value: value, version: 1, createTime: now)
    }

    public func updateKV(cat: String, key: String, value: String, expectedVersion: Int64,
                         now: Date) throws(StoreError) {
        let id = KVKey(cat: cat, key: key)
        guard var row = kv[id], row.version == expectedVersion else {
            throw StoreError.notFound("kv \(cat)/\(key) at version \(expectedVersion)")
        }
        row.value = value
        row.version += 1
        row.updateTime = now
        kv[id] = row
    }

    public func deleteKV(cat: String, key: String) throws(StoreError) {
        guard kv.removeValue(forKey: KVKey(cat: cat, key: key)) != nil else {
            throw StoreError.notFound("kv \(cat)/\(key)")
        }
    }
}
