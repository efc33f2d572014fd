import DtmEngine
import Foundation
import Logging

/// The coordinator's view of its store: every call goes to `base`; on the way, each write is
/// timed (`dtm_store_operation_duration_seconds`) and each transaction state change that
/// became durable is counted and logged, one line per change. Every status change passes
/// through the store, so this is the one place that sees them all, whoever made them (a
/// request, a pass, an operator tool).
struct ObservedStore: TransactionStore {
    let base: any TransactionStore
    let metrics: CoordinatorMetrics
    let logger: Logger

    private func timed<T>(_ operation: StoreOperation,
                          _ body: () async throws(StoreError) -> T) async throws(StoreError) -> T {
        let start = ContinuousClock.now
        do {
            let value = try await body()
            metrics.storeCall(operation, ok: true, duration: .now - start)
            return value
        } catch {
            metrics.storeCall(operation, ok: false, duration: .now - start)
            throw error
        }
    }

    private func logChange(_ gid: String, model: TransType, from: StatusOrigin, to: GlobalStatus, reason: String?) {
        metrics.statusChanged(model: model, from: from, to: to)
        // Built only when info is logged (the metadata argument is evaluated lazily).
        logger.info("transaction state changed", metadata: {
            var metadata: Logger.Metadata = ["gid": Redaction.logValue(gid), "trans_type": "\(model.rawValue)",
                                             "from": "\(from.label)", "status": "\(to.rawValue)"]
            if let reason, !reason.isEmpty { metadata["reason"] = Redaction.logValue(reason) }
            return metadata
        }())
    }

    // MARK: Writes that change state

    func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        let created = try await timed(.saveNew) { () async throws(StoreError) in
            try await base.saveNew(global, branches: branches)
        }
        if created {
            metrics.created(model: global.transType, status: global.status)
            logChange(global.gid, model: global.transType, from: .absent, to: global.status, reason: nil)
        }
        return created
    }

    func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                      branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        try await timed(.changeStatus) { () async throws(StoreError) in
            try await base.changeStatus(gid: gid, from: from, to: to, update: update, branchUpdates: branchUpdates,
                                        attempts: attempts, now: now)
        }
        guard from != to else { return }
        // The engine's writers name the mode; anyone else's change costs one read.
        let model: TransType
        if let known = update.transType {
            model = known
        } else {
            model = (try? await base.findGlobal(gid: gid))?.transType ?? .saga
        }
        logChange(gid, model: model, from: .status(from), to: to, reason: update.rollbackReason)
    }

    func forceFail(gid: String, reason: String, now: Date) async throws(StoreError) {
        try await timed(.forceFail) { () async throws(StoreError) in
            try await base.forceFail(gid: gid, reason: reason, now: now)
        }
        let model = (try? await base.findGlobal(gid: gid))?.transType ?? .saga
        logChange(gid, model: model, from: .unreadable, to: .failed, reason: reason)
    }

    // MARK: Other writes

    func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                        now: Date) async throws(StoreError) {
        try await timed(.appendBranches) { () async throws(StoreError) in
            try await base.appendBranches(gid: gid, expecting: expecting, branches: branches, now: now)
        }
    }

    func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                        attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        try await timed(.updateBranches) { () async throws(StoreError) in
            try await base.updateBranches(gid: gid, expecting: expecting, owner: owner, updates: updates,
                                          attempts: attempts, now: now)
        }
    }

    func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                   nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                   now: Date) async throws(StoreError) {
        try await timed(.touchCron) { () async throws(StoreError) in
            try await base.touchCron(gid: gid, status: status, owner: owner, nextCronInterval: nextCronInterval,
                                     nextCronTime: nextCronTime, branchUpdates: branchUpdates, attempts: attempts,
                                     now: now)
        }
    }

    func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) async throws(StoreError)
        -> [GlobalTransaction] {
        try await timed(.claimDue) { () async throws(StoreError) in
            try await base.claimDue(now: now, leaseUntil: leaseUntil, owner: owner, limit: limit)
        }
    }

    func extendLeases(gids: [String], owner: String?, until: Date, now: Date) async throws(StoreError) {
        try await timed(.extendLeases) { () async throws(StoreError) in
            try await base.extendLeases(gids: gids, owner: owner, until: until, now: now)
        }
    }

    func resetCronTime(after: Date, limit: Int, now: Date) async throws(StoreError) -> Int {
        try await base.resetCronTime(after: after, limit: limit, now: now)
    }

    func resetNextCronTime(gid: String, now: Date) async throws(StoreError) {
        try await base.resetNextCronTime(gid: gid, now: now)
    }

    func deleteFinished(before: Date, limit: Int) async throws(StoreError) -> Int {
        try await timed(.deleteFinished) { () async throws(StoreError) in
            try await base.deleteFinished(before: before, limit: limit)
        }
    }

    func createKV(cat: String, key: String, value: String, now: Date) async throws(StoreError) {
        try await base.createKV(cat: cat, key: key, value: value, now: now)
    }

    func updateKV(cat: String, key: String, value: String, expectedVersion: Int64, now: Date) async throws(StoreError) {
        try await base.updateKV(cat: cat, key: key, value: value, expectedVersion: expectedVersion, now: now)
    }

    func deleteKV(cat: String, key: String) async throws(StoreError) {
        try await base.deleteKV(cat: cat, key: key)
    }

    // MARK: Reads

    func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? {
        try await base.findGlobal(gid: gid)
    }

    func findBranches(gid: String) async throws(StoreError) -> [BranchRecord] {
        try await base.findBranches(gid: gid)
    }

    func findAttempts(gid: String) async throws(StoreError) -> [BranchAttempt] {
        try await base.findAttempts(gid: gid)
    }

    func scanGlobals(_ query: GlobalQuery) async throws(StoreError) -> [GlobalTransaction] {
        try await base.scanGlobals(query)
    }

    func findKV(cat: String, key: String) async throws(StoreError) -> [KVRecord] {
        try await base.findKV(cat: cat, key: key)
    }

    func scanKV(cat: String, position: Int64?, limit: Int) async throws(StoreError) -> [KVRecord] {
        try await base.scanKV(cat: cat, position: position, limit: limit)
    }

    func countDue(now: Date) async throws(StoreError) -> Int {
        try await base.countDue(now: now)
    }

    func health() async -> StoreHealth {
        await base.health()
    }
}
