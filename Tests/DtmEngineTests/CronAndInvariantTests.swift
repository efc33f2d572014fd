import Foundation
import Testing
@testable import DtmEngine
import DtmTestSupport

private let p = BranchStatus.prepared
private let s = BranchStatus.succeed

@Suite("Cron loop and engine invariants (DESIGN.md)")
struct CronAndInvariantTests {
    @Test("two coordinators over one store never drive the same gid at once")
    func leaseSplitsWork() async throws {
        let store = InMemoryStore()
        let clock = FakeClock()
        let caller = ScriptedCaller()
        await caller.attach(store)
        await caller.yieldInsideCalls()
        let drivers = ["A", "B"].map { TransactionDriver(store: store, caller: caller, clock: clock, owner: $0) }
        let loops = drivers.map { CronLoop(driver: $0, maxConcurrent: 8) }
        // Stored but never processed (as after a crash): every one is due once its time passes.
        let coordinator = Coordinator(driver: drivers[0], schedule: { _ in })
        let gids = (0..<24).map { "lease-\($0)" }
        for gid in gids { try await coordinator.submit(sagaRequest(gid)) }
        clock.advance(10)

        async let a = loops[0].runOnce()
        async let b = loops[1].runOnce()
        let (byA, byB) = await (a, b)
        let setA = Set(byA.map(\.global.gid))
        let setB = Set(byB.map(\.global.gid))
        #expect(setA.isDisjoint(with: setB))
        #expect(setA.count + setB.count == 16)
        #expect(await caller.maxConcurrentPerGid == 1)
        for report in byA { #expect(await store.findGlobal(gid: report.global.gid)?.owner == "A") }
        for report in byB { #expect(await store.findGlobal(gid: report.global.gid)?.owner == "B") }
        // The rest comes with the next rounds; nothing is processed twice.
        var rounds = [PassReport]()
        for loop in loops { rounds += await loop.runOnce() }
        let all = byA + byB + rounds
        #expect(Set(all.map(\.global.gid)) == Set(gids))
        #expect(all.count == gids.count)
        for gid in gids { #expect(await store.findGlobal(gid: gid)?.status == .succeed) }
        #expect(await caller.violations == [])
    }

    @Test("a leased transaction is not claimed by another coordinator until the lease expires")
    func leaseExpiry() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("exp"))
        await h.process()
        h.clock.advance(10)
        // Claimed by a coordinator that then dies before writing anything.
        let claimed = await h.store.claimDue(now: h.clock.now(), leaseUntil: h.clock.now().addingTimeInterval(10),
                                                 owner: "dead", limit: 10)
        #expect(claimed.map(\.gid) == ["exp"])
        #expect(await h.cron(after: 9).isEmpty)
        let recovered = await h.cron(after: 1)
        #expect(recovered.map(\.global.gid) == ["exp"])
        #expect(await h.global("exp").status == .succeed)
        #expect(await h.global("exp").owner == "test-owner")
    }

    @Test("recovery: transactions stored before a crash are finished by the first cron pass")
    func recovery() async throws {
        let h = Harness()
        await h.start()
        // Written by a previous process: a saga mid-way, an aborting one, a submitted tcc.
        let dropping = Coordinator(driver: h.driver, schedule: { _ in })
        try await dropping.submit(sagaRequest("r-saga", steps: 3))
        try await h.store.updateBranches(gid: "r-saga", expecting: .submitted,
                                         updates: [BranchUpdate(branchID: "01", op: .action, status: .succeed,
                                                                finishTime: h.clock.now())], now: h.clock.now())
        try await dropping.submit(sagaRequest("r-abort"))
        try await h.store.changeStatus(gid: "r-abort", from: .submitted, to: .aborting,
                                       update: GlobalUpdate(rollbackReason: "x"), now: h.clock.now())
        try await h.prepareTcc("r-tcc", branches: 2)
        try await dropping.submit(TransRequest(gid: "r-tcc", transType: "tcc"))
        let reports = await h.cron(after: 10)
        #expect(Set(reports.map(\.global.gid)) == ["r-saga", "r-abort", "r-tcc"])
        #expect(await h.global("r-saga").status == .succeed)
        #expect(await h.statuses("r-saga") == [p, s, p, s, p, s])
        let saga = reports.first { $0.global.gid == "r-saga" }!
        #expect(launched([saga]) == ["02/action", "03/action"])
        // Nothing was started forward after aborting: the runnable first action is presumed run.
        let abort = reports.first { $0.global.gid == "r-abort" }!
        #expect(launched([abort]) == ["01/compensate"])
        #expect(await h.global("r-abort").status == .failed)
        #expect(await h.global("r-tcc").status == .succeed)
        #expect(await h.violations() == [])
    }

    @Test("a saga crashed after recording an action FAILURE aborts with 'fail message lost'")
    func failMessageLost() async throws {
        let h = Harness()
        await h.start()
        let dropping = Coordinator(driver: h.driver, schedule: { _ in })
        try await dropping.submit(sagaRequest("lost"))
        try await h.store.updateBranches(gid: "lost", expecting: .submitted, updates: [
            BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: nil),
            BranchUpdate(branchID: "02", op: .action, status: .failed, finishTime: nil),
        ], now: h.clock.now())
        let reports = await h.cron(after: 10)
        #expect(launched(reports) == ["02/compensate", "01/compensate"])
        #expect(await h.global("lost").rollbackReason == "fail message lost")
        #expect(await h.global("lost").status == .failed)
    }

    @Test("a lost compare-and-set ends the pass quietly: no further calls")
    func lostRace() async throws {
        let h = Harness()
        await h.start()
        let coordinator = h.coordinator
        await h.caller.onCall { call, global in
            if call.branchID == "01" && call.op == .action { try? await coordinator.forceStop(gid: global.gid) }
        }
        try await h.coordinator.submit(sagaRequest("race"))
        let reports = await h.process()
        #expect(reports.first?.lostRace == true)
        #expect(launched(reports) == ["01/action"])
        #expect(await h.global("race").status == .failed)
        #expect(await h.statuses("race") == [p, p, p, p])
        #expect(await h.cron(after: 100).isEmpty)
    }

    @Test("wait_result after a lost race judges the stored outcome")
    func lostRaceWait() async throws {
        let h = Harness()
        await h.start()
        let coordinator = h.coordinator
        await h.caller.onCall { _, global in try? await coordinator.forceStop(gid: global.gid) }
        await expectError(.failure("wait result not return success: FAILURE")) {
            try await h.coordinator.submit(sagaRequest("race-wait", options: TransOptions(waitResult: true)))
        }
    }

    @Test("no saga action is called once aborting is stored, even with actions in flight")
    func noActionAfterAborting() async throws {
        let h = Harness()
        await h.start()
        await h.caller.yieldInsideCalls()
        await h.caller.script("02", .action, .failure(message: "no"))
        try await h.coordinator.submit(sagaRequest("inflight", steps: 5,
                                                   customData: #"{"orders":{"3":[0],"4":[3]},"concurrent":true}"#))
        let reports = await h.process()
        let calls = launched(reports)
        let firstCompensate = try #require(calls.firstIndex { $0.hasSuffix("compensate") })
        #expect(calls[..<firstCompensate].allSatisfy { $0.hasSuffix("action") })
        #expect(calls[firstCompensate...].allSatisfy { $0.hasSuffix("compensate") })
        #expect(await h.global("inflight").status == .failed)
        #expect(await h.violations() == [])
    }

    @Test("run(): enqueued work starts at once, an empty poll sleeps the jittered interval, wake() polls, cancel stops")
    func runLoop() async throws {
        let store = InMemoryStore()
        let clock = FakeClock()
        let caller = ScriptedCaller()
        let driver = TransactionDriver(store: store, caller: caller, clock: clock, owner: "runner")
        let (events, sink) = AsyncStream.makeStream(of: PassReport.self)
        let sleeps = Recorder<Double>()
        let cron = CronLoop(driver: driver, sleep: { seconds in
            await sleeps.append(seconds)
            // A sleep that only ends when the loop is cancelled or woken.
            try? await Task.sleep(nanoseconds: 3_600_000_000_000)
        }, jitter: { 0.25 }, onEvent: { event in
            if case .passFinished(let report) = event { sink.yield(report) }
        })
        let coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        let loop = Task { await cron.run() }
        var finished = events.makeAsyncIterator()

        try await coordinator.submit(sagaRequest("run-1"))
        #expect(await finished.next()?.global.status == .succeed)

        // A transaction that becomes due while the loop sleeps: wake() makes it poll now.
        let quiet = Coordinator(driver: driver, schedule: { _ in })
        try await quiet.submit(sagaRequest("run-2"))
        clock.advance(10)
        await cron.wake()
        let second = await finished.next()
        #expect(second?.global.gid == "run-2")
        #expect(second?.global.status == .succeed)

        loop.cancel()
        await loop.value
        #expect(await sleeps.values.first == 2.75)
        #expect(await cron.idleInterval() == 2.75)
    }

    @Test("runOnce processes at most maxConcurrent passes at a time and reports them all")
    func runOnceLimit() async throws {
        let h = Harness()
        await h.start()
        let small = CronLoop(driver: h.driver, maxConcurrent: 2)
        let coordinator = Coordinator(driver: h.driver, schedule: { small.enqueue($0) })
        for index in 0..<5 { try await coordinator.submit(sagaRequest("limit-\(index)")) }
        let reports = await small.runOnce()
        #expect(reports.count == 5)
        #expect(reports.allSatisfy { $0.global.status == .succeed })
    }
}

@Suite("InMemoryStore semantics (spec 6.4, DTM store tests)")
struct InMemoryStoreTests {
    private let now = Date(timeIntervalSince1970: 1_700_000_000)

    private func global(_ gid: String, _ status: GlobalStatus = .prepared, due: Double = 10) -> GlobalTransaction {
        GlobalTransaction(gid: gid, transType: .tcc, status: status, createTime: now, nextCronInterval: 10,
                          nextCronTime: now.addingTimeInterval(due))
    }

    private func branch(_ gid: String, _ id: String, _ op: BranchOp) -> BranchRecord {
        BranchRecord(gid: gid, url: "u", branchID: id, op: op, createTime: now)
    }

    @Test("TestStoreSave: insert once, ids in order, append under the expected status")
    func save() async throws {
        let store = InMemoryStore()
        #expect(try await store.saveNew(global("g"), branches: [branch("g", "01", .cancel)]))
        #expect(try await !store.saveNew(global("g"), branches: [branch("g", "02", .cancel)]))
        try await store.appendBranches(gid: "g", expecting: .prepared, branches: [branch("g", "01", .confirm)], now: now)
        let rows = await store.findBranches(gid: "g")
        #expect(rows.map(\.op) == [.cancel, .confirm])
        #expect(rows[0].id! < rows[1].id!)
        await #expect(throws: StoreError.self) {
            try await store.appendBranches(gid: "g", expecting: .submitted, branches: [branch("g", "03", .cancel)],
                                           now: self.now)
        }
        await #expect(throws: StoreError.uniqueConflict("duplicate branch g/01/confirm")) {
            try await store.appendBranches(gid: "g", expecting: .prepared,
                                           branches: [branch("g", "05", .cancel), branch("g", "01", .confirm)],
                                           now: self.now)
        }
        #expect(await store.findBranches(gid: "g").count == 2)
    }

    @Test("TestStoreChangeStatus: compare-and-set on the old status")
    func changeStatus() async throws {
        let store = InMemoryStore()
        _ = try await store.saveNew(global("g"), branches: [])
        await #expect(throws: StoreError.self) {
            try await store.changeStatus(gid: "g", from: .submitted, to: .succeed, update: GlobalUpdate(), now: self.now)
        }
        try await store.changeStatus(gid: "g", from: .prepared, to: .failed,
                                     update: .transition(to: .failed, reason: "why", now: now), now: now)
        let stored = await store.findGlobal(gid: "g")!
        #expect(stored.status == .failed && stored.rollbackReason == "why" && stored.rollbackTime == now)
        await #expect(throws: StoreError.self) {
            try await store.updateBranches(gid: "g", expecting: .prepared, updates: [], now: self.now)
        }
    }

    @Test("TestStoreLockTrans: claims due unfinished rows only, leases them")
    func claim() async throws {
        let store = InMemoryStore()
        _ = try await store.saveNew(global("due"), branches: [])
        _ = try await store.saveNew(global("later", due: 100), branches: [])
        _ = try await store.saveNew(global("done", .succeed), branches: [])
        let at = now.addingTimeInterval(10)
        let claimed = await store.claimDue(now: at, leaseUntil: at.addingTimeInterval(10), owner: "me", limit: 10)
        #expect(claimed.map(\.gid) == ["due"])
        #expect(claimed.first?.owner == "me")
        #expect(await store.findGlobal(gid: "due")?.nextCronTime == at.addingTimeInterval(10))
        #expect(await store.claimDue(now: at, leaseUntil: at, owner: "other", limit: 10).isEmpty)
        try await store.touchCron(gid: "later", status: .submitted, nextCronInterval: 1, nextCronTime: now, now: now)
        #expect(await store.findGlobal(gid: "later")?.nextCronInterval == 10)
    }

    @Test("TestStoreResetCronTime and resetNextCronTime")
    func resetCron() async throws {
        let store = InMemoryStore()
        for index in 0..<3 { _ = try await store.saveNew(global("g\(index)", due: 1000), branches: []) }
        _ = try await store.saveNew(global("soon", due: 5), branches: [])
        #expect(await store.resetCronTime(after: now.addingTimeInterval(100), limit: 2, now: now) == 2)
        #expect(await store.resetCronTime(after: now.addingTimeInterval(100), limit: 2, now: now) == 1)
        #expect(await store.resetCronTime(after: now.addingTimeInterval(100), limit: 2, now: now) == 0)
        await #expect(throws: StoreError.self) { try await store.resetNextCronTime(gid: "none", now: self.now) }
    }

    @Test("scanGlobals filters and pages by id descending")
    func scan() async throws {
        let store = InMemoryStore()
        for index in 0..<5 { _ = try await store.saveNew(global("s\(index)", index % 2 == 0 ? .prepared : .failed), branches: []) }
        let page = await store.scanGlobals(GlobalQuery(limit: 2))
        #expect(page.map(\.gid) == ["s4", "s3"])
        let next = await store.scanGlobals(GlobalQuery(position: page.last?.id, limit: 2))
        #expect(next.map(\.gid) == ["s2", "s1"])
        #expect(await store.scanGlobals(GlobalQuery(status: .failed)).map(\.gid) == ["s3", "s1"])
    }

    @Test("KV: create once, optimistic update, delete")
    func kv() async throws {
        let store = InMemoryStore()
        try await store.createKV(cat: "topics", key: "t", value: "[]", now: now)
        await #expect(throws: StoreError.self) { try await store.createKV(cat: "topics", key: "t", value: "[]", now: self.now) }
        try await store.updateKV(cat: "topics", key: "t", value: "[1]", expectedVersion: 1, now: now)
        await #expect(throws: StoreError.self) {
            try await store.updateKV(cat: "topics", key: "t", value: "[2]", expectedVersion: 1, now: self.now)
        }
        #expect(await store.findKV(cat: "topics", key: "t").first?.version == 2)
        #expect(await store.findKV(cat: "", key: "").count == 1)
        #expect(await store.scanKV(cat: "topics", position: nil, limit: 10).count == 1)
        try await store.deleteKV(cat: "topics", key: "t")
        await #expect(throws: StoreError.self) { try await store.deleteKV(cat: "topics", key: "t") }
    }
}

@Suite struct CancelledPassTests {
    /// Shutdown cancels passes; the call they were waiting for is not the branch's error, whether
    /// it ran in the pass's task or in a child task.
    @Test(arguments: [true, false])
    func aCancelledPassKeepsTheRetryInterval(callsInPassTask: Bool) async throws {
        let h = Harness(endsCalls: callsInPassTask)
        await h.start()
        let coordinator = Coordinator(driver: h.driver, schedule: { _ in })
        try await coordinator.submit(sagaRequest("cut"))
        let before = await h.global("cut")
        await h.caller.onCall { _, _ in
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(5)) }
        }
        let pass = Task { try await h.driver.process(gid: "cut") }
        try await waitUntil("the pass to call the first branch") { await !h.log().isEmpty }
        pass.cancel()
        _ = try await pass.value
        let after = await h.global("cut")
        #expect(after.nextCronInterval == before.nextCronInterval)
        #expect(await h.statuses("cut") == [.prepared, .prepared, .prepared, .prepared])
    }
}

@Suite struct LeaseKeepingTests {
    /// A pass that outlives the lease its claim took keeps it: another coordinator sharing the
    /// store does not drive the transaction meanwhile (DESIGN: one driver at a time).
    @Test func aLongPassKeepsItsLeaseAgainstAnotherCoordinator() async throws {
        let h = Harness()
        await h.start()
        let quiet = Coordinator(driver: h.driver, schedule: { _ in })
        try await quiet.submit(sagaRequest("long"))
        let release = AsyncStream.makeStream(of: Void.self)
        await h.caller.onCall { call, global in
            // Only A's pass waits; if B took over, its calls go through and the test fails.
            if call.branchID == "01" && global.owner == "A" { for await _ in release.stream { break } }
        }
        let mine = h.coordinator(named: "A")
        let other = h.coordinator(named: "B")
        h.clock.advance(10)
        let pass = Task { await mine.runOnce() }
        // Wait until A is inside the first branch call.
        try await waitUntil("A to call the first branch") { await !h.log().isEmpty }

        h.clock.advance(6)  // past half the 10 s lease
        await mine.renewLeases()
        h.clock.advance(6)  // past the lease A's claim took
        #expect(await other.runOnce().isEmpty, "B took over a transaction A is still driving")

        release.continuation.yield()
        release.continuation.finish()
        let report = await pass.value.first
        #expect(report?.lostRace == false)
        let log = await h.log()
        #expect(log.filter { $0.contains("01") && $0.contains("action") }.count == 1, "\(log)")
    }
}
