import Foundation
@testable import DtmEngine

/// An `InMemoryStore` behind every call; test stores subclass it and override the calls they
/// watch or disturb (each override ends by calling `super`).
class ForwardingStore: TransactionStore, @unchecked Sendable {
    let inner = InMemoryStore()

    func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        try await inner.saveNew(global, branches: branches)
    }
    func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? { await inner.findGlobal(gid: gid) }
    func findBranches(gid: String) async throws(StoreError) -> [BranchRecord] { await inner.findBranches(gid: gid) }
    func findAttempts(gid: String) async throws(StoreError) -> [BranchAttempt] { await inner.findAttempts(gid: gid) }
    func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                      branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        try await inner.changeStatus(gid: gid, from: from, to: to, update: update, branchUpdates: branchUpdates,
                                     attempts: attempts, now: now)
    }
    func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                        now: Date) async throws(StoreError) {
        try await inner.appendBranches(gid: gid, expecting: expecting, branches: branches, now: now)
    }
    func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                        attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        try await inner.updateBranches(gid: gid, expecting: expecting, owner: owner, updates: updates,
                                       attempts: attempts, now: now)
    }
    func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                   nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                   now: Date) async throws(StoreError) {
        try await inner.touchCron(gid: gid, status: status, owner: owner, nextCronInterval: nextCronInterval,
                                  nextCronTime: nextCronTime, branchUpdates: branchUpdates, attempts: attempts,
                                  now: now)
    }
    func claimDue(now: Date, leaseUntil: Date, owner: String, limit: Int) async throws(StoreError)
        -> [GlobalTransaction] {
        await inner.claimDue(now: now, leaseUntil: leaseUntil, owner: owner, limit: limit)
    }
    func extendLeases(gids: [String], owner: String?, until: Date, now: Date) async throws(StoreError) {
        await inner.extendLeases(gids: gids, owner: owner, until: until, now: now)
    }
    func forceFail(gid: String, reason: String, now: Date) async throws(StoreError) {
        try await inner.forceFail(gid: gid, reason: reason, now: now)
    }
    func resetCronTime(after: Date, limit: Int, now: Date) async throws(StoreError) -> Int {
        await inner.resetCronTime(after: after, limit: limit, now: now)
    }
    func resetNextCronTime(gid: String, now: Date) async throws(StoreError) {
        try await inner.resetNextCronTime(gid: gid, now: now)
    }
    func scanGlobals(_ query: GlobalQuery) async throws(StoreError) -> [GlobalTransaction] {
        await inner.scanGlobals(query)
    }
    func deleteFinished(before: Date, limit: Int) async throws(StoreError) -> Int {
        try await inner.deleteFinished(before: before, limit: limit)
    }
    func countDue(now: Date) async throws(StoreError) -> Int { try await inner.countDue(now: now) }
    func findKV(cat: String, key: String) async throws(StoreError) -> [KVRecord] {
        await inner.findKV(cat: cat, key: key)
    }
    func scanKV(cat: String, position: Int64?, limit: Int) async throws(StoreError) -> [KVRecord] {
        await inner.scanKV(cat: cat, position: position, limit: limit)
    }
    func createKV(cat: String, key: String, value: String, now: Date) async throws(StoreError) {
        try await inner.createKV(cat: cat, key: key, value: value, now: now)
    }
    func updateKV(cat: String, key: String, value: String, expectedVersion: Int64,
                  now: Date) async throws(StoreError) {
        try await inner.updateKV(cat: cat, key: key, value: value, expectedVersion: expectedVersion, now: now)
    }
    func deleteKV(cat: String, key: String) async throws(StoreError) {
        try await inner.deleteKV(cat: cat, key: key)
    }
}
