import Foundation
import Testing
@testable import DtmEngine

/// An `InMemoryStore` that runs `beforeAbort` once, just before the first status change from
/// `prepared` to `aborting` is applied: the place where another coordinator's RegisterBranch
/// can commit after a pass read the branch rows and before its compare-and-set.
private final class RacingStore: TransactionStore {
    let inner = InMemoryStore()
    private let hook: OnceHook

    init(beforeAbort: @escaping @Sendable () async -> Void) {
        hook = OnceHook(beforeAbort)
    }

    func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        try await inner.saveNew(global, branches: branches)
    }
    func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? { await inner.findGlobal(gid: gid) }
    func findBranches(gid: String) async throws(StoreError) -> [BranchRecord] { await inner.findBranches(gid: gid) }
    func findAttempts(gid: String) async throws(StoreError) -> [BranchAttempt] { await inner.findAttempts(gid: gid) }
    func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                      branchUpdates: [BranchUpdate], attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        if from == .prepared && to == .aborting { await hook.run() }
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

private actor OnceHook {
    private var body: (@Sendable () async -> Void)?
    init(_ body: @escaping @Sendable () async -> Void) { self.body = body }
    func run() async {
        guard let body else { return }
        self.body = nil
        await body()
    }
}

private func tccBranch(_ gid: String, _ index: Int) -> BranchRegistration {
    BranchRegistration(gid: gid, transType: "tcc", branchID: stepBranchID(index),
                       data: ["confirm": "http://busi/confirm\(index)", "cancel": "http://busi/cancel\(index)"])
}

@Suite("RegisterBranch racing a timeout abort (issue 9, several coordinators)")
struct RegisterRaceTests {
    /// Seen once under PostgreSQL with three coordinators: a TCC stored `failed` whose branch 02
    /// was never cancelled. Coordinator A's cron pass read the rows (only 01) while the TCC was
    /// `prepared`; coordinator B's RegisterBranch of 02 committed before A's prepared → aborting
    /// compare-and-set (legal: the row was still `prepared`); A then cancelled only what it had read.
    @Test("a branch registered after the pass read the rows but before its abort is cancelled too")
    func branchRegisteredDuringTimeoutAbort() async throws {
        let gid = "register-race-\(UUID().uuidString)"
        let clock = FakeClock()
        let caller = ScriptedCaller()
        let config = EngineConfig()
        let registered = Recorder<String>()
        let other = Locked<Coordinator?>(nil)
        let store = RacingStore {
            guard let coordinator = other.value else { return }
            do {
                try await coordinator.registerBranch(tccBranch(gid, 2))
                await registered.append("02")
            } catch {
                await registered.append("02 refused: \(error)")
            }
        }
        await caller.attach(store.inner)
        let driverA = TransactionDriver(store: store, caller: caller, clock: clock, config: config, owner: "a")
        let cronA = CronLoop(driver: driverA)
        let coordinatorA = Coordinator(driver: driverA, schedule: { await cronA.enqueue($0) })
        let driverB = TransactionDriver(store: store.inner, caller: caller, clock: clock, config: config, owner: "b")
        other.value = Coordinator(driver: driverB, schedule: { _ in })

        try await coordinatorA.prepare(TransRequest(gid: gid, transType: "tcc",
                                                    options: TransOptions(timeoutToFail: 5)))
        try await coordinatorA.registerBranch(tccBranch(gid, 1))
        if let global = await store.inner.findGlobal(gid: gid) { clock.set(global.nextCronTime) }
        await cronA.runOnce()

        #expect(await registered.values == ["02"])
        #expect(await store.inner.findGlobal(gid: gid)?.status == .failed)
        #expect(await caller.log == ["02/cancel", "01/cancel"])
        let cancels = await store.inner.findBranches(gid: gid).filter { $0.op == .cancel }
        #expect(cancels.map(\.branchID) == ["01", "02"])
        #expect(cancels.allSatisfy { $0.status == .succeed })
        #expect(await caller.violations.isEmpty)
    }
}

/// A value shared with a `@Sendable` closure created before the value exists.
private final class Locked<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
