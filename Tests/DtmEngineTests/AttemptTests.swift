import Dispatch
import DtmSync
import Foundation
import Testing
@testable import DtmEngine

@Suite("Attempt history of branch calls")
struct AttemptTests {
    /// A saga whose action errors twice then succeeds: three attempts, in order, each with the
    /// time its pass started it, its result and its text, written by the passes' own writes.
    @Test func failingTwiceThenSucceedingLeavesThreeAttempts() async throws {
        let h = Harness(owner: "coordinator-a")
        await h.start()
        await h.caller.script("01", .action, .error(message: "HTTP 503: busy"),
                              .error(message: String(repeating: "x", count: 5000)))
        try await h.coordinator.submit(sagaRequest("att-1", steps: 1))
        let firstStart = h.clock.now()
        await h.process()
        #expect(await h.global("att-1").status == .submitted)
        await h.cronWhenDue("att-1")
        let secondStart = h.clock.now()
        #expect(await h.global("att-1").status == .submitted)
        await h.cronWhenDue("att-1")
        let thirdStart = h.clock.now()
        #expect(await h.global("att-1").status == .succeed)

        let attempts = await h.store.findAttempts(gid: "att-1")
        #expect(attempts.map(\.result) == [.error, .error, .success])
        #expect(attempts.allSatisfy { $0.branchID == "01" && $0.op == .action && $0.url == "http://busi/a1" })
        #expect(attempts.allSatisfy { $0.owner == "coordinator-a" && $0.gid == "att-1" && $0.durationMs >= 0 })
        #expect(attempts.map(\.startTime) == [firstStart, secondStart, thirdStart])
        #expect(attempts[0].message == "HTTP 503: busy")
        // Remote text is clipped; a success keeps no text.
        #expect(attempts[1].message.hasPrefix(String(repeating: "x", count: BranchAttempt.maxMessageBytes) + "…"))
        #expect(attempts[1].message.utf8.count < BranchAttempt.maxMessageBytes + 40)
        #expect(attempts[2].message.isEmpty)
    }

    /// Compensations, the msg back-check (op `msg`) and FAILURE answers are attempts too.
    @Test func compensationsAndBackChecksAreRecorded() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("02", .action, .failure(message: "reason: no money"))
        try await h.coordinator.submit(sagaRequest("att-2", steps: 2))
        await h.process()
        #expect(await h.global("att-2").status == .failed)
        let saga = await h.store.findAttempts(gid: "att-2")
        #expect(saga.map { "\($0.branchID)/\($0.op)/\($0.result.rawValue)" }
                == ["01/action/success", "02/action/failure", "02/compensate/success", "01/compensate/success"])
        #expect(saga[1].message == "reason: no money FAILURE")

        await h.caller.script("00", .msg, .ongoing)
        try await h.coordinator.prepare(msgRequest("att-3", steps: 1))
        // The back-check comes once the prepared msg timed out.
        await h.cron(after: 180)
        #expect(await h.global("att-3").status == .prepared)
        await h.cron(after: 180)
        #expect(await h.global("att-3").status == .succeed)
        let msg = await h.store.findAttempts(gid: "att-3")
        #expect(msg.map { "\($0.branchID)/\($0.op)/\($0.result.rawValue)" }
                == ["00/msg/ongoing", "00/msg/success", "01/action/success"])
        #expect(msg.first?.url == "http://busi/query")
    }

    /// A workflow resume changes neither a branch nor the schedule: its attempt is the one record
    /// that takes a write of its own (owner-checked, at the end of the pass).
    @Test func workflowResumesAreRecorded() async throws {
        let h = Harness()
        await h.start()
        _ = try await h.coordinator.prepareWorkflow(TransRequest(
            gid: "att-wf", transType: "workflow", queryPrepared: "http://client/resume",
            customData: #"{"name":"wf_transfer","data":"aW4="}"#))
        await h.caller.script("00", BranchOp("wf_transfer"), .error(message: "client down"))
        await h.cronWhenDue("att-wf")
        await h.cronWhenDue("att-wf")
        let attempts = await h.store.findAttempts(gid: "att-wf")
        #expect(attempts.map { "\($0.branchID)/\($0.op)/\($0.result.rawValue)" }
                == ["00/wf_transfer/error", "00/wf_transfer/success"])
        #expect(attempts.first?.message == "client down")
        #expect(await h.global("att-wf").status == .prepared)
    }

    /// Attempts ride on the writes a pass makes anyway: a 2-step saga still takes 3 store writes
    /// (saveNew, the first result with the second launch, the final status with the last result).
    @Test func attemptsAddNoStoreWrite() async throws {
        let counting = CountingStore()
        let driver = TransactionDriver(store: counting, caller: ScriptedCaller(), clock: FakeClock(), owner: "c")
        let cron = CronLoop(driver: driver)
        let coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        try await coordinator.submit(sagaRequest("att-4", steps: 2))
        await cron.runOnce()
        #expect(await counting.inner.findGlobal(gid: "att-4")?.status == .succeed)
        #expect(await counting.inner.findAttempts(gid: "att-4").count == 2)
        #expect(counting.writes() == ["saveNew", "updateBranches", "changeStatus"])
    }

    /// Every status change the engine writes names the transaction's mode, so that the store's
    /// observers (metrics and logs by mode) need not read the row back.
    @Test func statusChangesNameTheirMode() async throws {
        let counting = CountingStore()
        let driver = TransactionDriver(store: counting, caller: ScriptedCaller(), clock: FakeClock(), owner: "c")
        let cron = CronLoop(driver: driver)
        let coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        try await coordinator.submit(sagaRequest("att-mode-saga", steps: 2))
        await cron.runOnce()
        try await coordinator.prepare(TransRequest(gid: "att-mode-tcc", transType: "tcc"))
        try await coordinator.abort(TransRequest(gid: "att-mode-tcc", transType: "tcc"))
        await cron.runOnce()
        #expect(await counting.inner.findGlobal(gid: "att-mode-tcc")?.status == .failed)
        #expect(counting.modes() == ["saga", "tcc", "tcc"])
    }

    @Test func retentionKeepsTheFirstAndTheLatest() {
        let numbers = Array(1...250)
        let kept = AttemptRetention.trimmed(numbers)
        #expect(kept.count == AttemptRetention.limit)
        #expect(kept.prefix(10) == numbers.prefix(10))
        #expect(kept.suffix(90) == numbers.suffix(90))
        #expect(AttemptRetention.trimmed(Array(1...100)) == Array(1...100))
    }
}

/// An `InMemoryStore` that names every write it gets (claims and lease renewals of the cron left out).
final class CountingStore: ForwardingStore, @unchecked Sendable {
    private let log = NSLockedLog()
    private let modeLog = NSLockedLog()

    func writes() -> [String] { log.values }
    /// The mode each status change named (`GlobalUpdate.transType`), "none" when it named none.
    func modes() -> [String] { modeLog.values }

    override func saveNew(_ global: GlobalTransaction, branches: [BranchRecord]) async throws(StoreError) -> Bool {
        log.append("saveNew")
        return try await super.saveNew(global, branches: branches)
    }
    override func changeStatus(gid: String, from: GlobalStatus, to: GlobalStatus, update: GlobalUpdate,
                               branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                               now: Date) async throws(StoreError) {
        log.append("changeStatus")
        if from != to { modeLog.append(update.transType?.rawValue ?? "none") }
        try await super.changeStatus(gid: gid, from: from, to: to, update: update, branchUpdates: branchUpdates,
                                     attempts: attempts, now: now)
    }
    override func appendBranches(gid: String, expecting: GlobalStatus, branches: [BranchRecord],
                                 now: Date) async throws(StoreError) {
        log.append("appendBranches")
        try await super.appendBranches(gid: gid, expecting: expecting, branches: branches, now: now)
    }
    override func updateBranches(gid: String, expecting: GlobalStatus, owner: String?, updates: [BranchUpdate],
                                 attempts: [BranchAttempt], now: Date) async throws(StoreError) {
        log.append("updateBranches")
        try await super.updateBranches(gid: gid, expecting: expecting, owner: owner, updates: updates,
                                       attempts: attempts, now: now)
    }
    override func touchCron(gid: String, status: GlobalStatus, owner: String?, nextCronInterval: Int64,
                            nextCronTime: Date, branchUpdates: [BranchUpdate], attempts: [BranchAttempt],
                            now: Date) async throws(StoreError) {
        log.append("touchCron")
        try await super.touchCron(gid: gid, status: status, owner: owner, nextCronInterval: nextCronInterval,
                                  nextCronTime: nextCronTime, branchUpdates: branchUpdates, attempts: attempts,
                                  now: now)
    }
    override func forceFail(gid: String, reason: String, now: Date) async throws(StoreError) {
        log.append("forceFail")
        try await super.forceFail(gid: gid, reason: reason, now: now)
    }
}

/// Names appended from concurrent code.
final class NSLockedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ item: String) { lock.withLock { items.append(item) } }
    var values: [String] { lock.withLock { items } }
}

/// A task executor that counts the jobs it runs (on Dispatch's global queue).
final class CountingExecutor: TaskExecutor {
    private let count = Locked(0)
    var jobs: Int { count.withLock { $0 } }

    func enqueue(_ job: consuming ExecutorJob) {
        count.withLock { $0 += 1 }
        let job = UnownedJob(job)
        DispatchQueue.global().async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

@Suite struct PassExecutorTests {
    /// The server runs passes on its event loops: the cron hands each pass to the executor it is
    /// given (and without one, to Swift's global executor, as before).
    @Test func passesRunOnTheGivenExecutor() async throws {
        let executor = CountingExecutor()
        let store = InMemoryStore()
        let driver = TransactionDriver(store: store, caller: ScriptedCaller(), clock: FakeClock(), owner: "c")
        let cron = CronLoop(driver: driver, passExecutor: { executor })
        let coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        try await coordinator.submit(sagaRequest("pass-exec", steps: 2))
        #expect(executor.jobs == 0)
        await cron.runOnce()
        #expect(await store.findGlobal(gid: "pass-exec")?.status == .succeed)
        #expect(executor.jobs > 0)
    }
}
