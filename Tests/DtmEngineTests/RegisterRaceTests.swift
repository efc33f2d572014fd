import Foundation
import Testing
@testable import DtmEngine

/// An `InMemoryStore` that runs `beforeAbort` once, just before the first status change from
/// `prepared` to `aborting` is applied: the place where another coordinator's RegisterBranch
/// can commit after a pass read the branch rows and before its compare-and-set.
private final class RacingStore: ForwardingStore, @unchecked Sendable {
    private let hook: OnceHook

    init(beforeAbort: @escaping @Sendable () async -> Void) {
        hook = OnceHook(beforeAbort)
    }

    override func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                               branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                               now: Date) async throws(StoreError) {
        if from == .prepared && to == .aborting { await hook.run() }
        try await super.changeStatus(gid: gid, from: from, to: to, update: update, branchUpdates: branchUpdates,
                                     attempts: attempts, now: now)
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
        let coordinatorA = Coordinator(driver: driverA, schedule: { cronA.enqueue($0) })
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
