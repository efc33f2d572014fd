import DtmSync
import DtmTestSupport
import Foundation
import Testing
@testable import DtmEngine

/// The end of a pass wakes `run()` only when something waits for it (a blocked pass of the same
/// gid, a `runNow` of it, a full loop, a drain); otherwise it is taken at the next wake-up. These
/// check that nothing waiting on an end is left behind by that.
@Suite struct LazyEndTests {
    private struct Harness {
        let store = InMemoryStore()
        let caller = ScriptedCaller()
        let finished = Locked([String]())
        let driver: TransactionDriver
        let cron: CronLoop
        let coordinator: Coordinator

        init() {
            driver = TransactionDriver(store: store, caller: caller, clock: FakeClock(), owner: "lazy")
            let finished = self.finished
            cron = CronLoop(driver: driver, sleep: { _ in try? await Task.sleep(for: .seconds(3600)) },
                            onEvent: { event in
                                if case .passFinished(let report) = event {
                                    finished.withLock { $0.append(report.global.gid) }
                                }
                            })
            let cron = self.cron
            coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        }

        /// Attaches the caller and runs the loop; the caller cancels the returned task.
        func start() async -> Task<Void, Never> {
            await caller.attach(store)
            let cron = self.cron
            return Task { await cron.run() }
        }

        func passes(of gid: String) -> Int { finished.withLock { $0.filter { $0 == gid }.count } }
    }

    @Test("a pass that ended unseen does not hold up a wait_result pass of its gid")
    func runNowAfterALazyEnd() async throws {
        let h = Harness()
        let loop = await h.start()
        defer { loop.cancel() }

        try await h.coordinator.submit(sagaRequest("lazy-run-now"))
        try await waitUntil("the handed-over pass ended") { h.passes(of: "lazy-run-now") == 1 }
        try await waitUntil("depths count no ended pass as running") { await h.cron.depths().running == 0 }

        let global = try #require(await h.store.findGlobal(gid: "lazy-run-now"))
        let finishedInTime = await withTaskGroup(of: Bool.self) { group in
            group.addTask { _ = await h.cron.runNow(ScheduledPass(global: global)); return true }
            group.addTask { try? await Task.sleep(for: .seconds(20)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        #expect(finishedInTime)
        #expect(await h.caller.violations == [])
    }

    @Test("a pass handed over while its gid runs starts when that pass ends")
    func blockedPassStartsAfterTheEnd() async throws {
        let h = Harness()
        let loop = await h.start()
        defer { loop.cancel() }
        let (entered, enteredSink) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseSink) = AsyncStream.makeStream(of: Void.self)
        let held = Locked(false)
        await h.caller.onCall { call, global in
            guard global.gid == "lazy-blocked", held.withLock({ was in defer { was = true }; return !was }) else {
                return
            }
            enteredSink.yield()
            var releases = release.makeAsyncIterator()
            _ = await releases.next()
        }

        try await h.coordinator.submit(sagaRequest("lazy-blocked"))
        var calls = entered.makeAsyncIterator()
        _ = await calls.next()  // the first pass is inside its first branch call
        let global = try #require(await h.store.findGlobal(gid: "lazy-blocked"))
        h.cron.enqueue(ScheduledPass(global: global))
        try await waitUntil("the second pass waits for the first") { await h.cron.depths().blocked == 1 }

        releaseSink.yield()
        try await waitUntil("both passes ran") { h.passes(of: "lazy-blocked") == 2 }
        #expect(await h.cron.depths() == CronDepths(ready: 0, blocked: 0, running: 0))
        #expect(await h.store.findGlobal(gid: "lazy-blocked")?.status == .succeed)
    }

    @Test("many passes in a row all end and none stays counted as running")
    func manyPassesInARow() async throws {
        let h = Harness()
        let loop = await h.start()
        defer { loop.cancel() }
        for i in 0..<200 {
            try await h.coordinator.submit(sagaRequest("lazy-row-\(i)"))
        }
        try await waitUntil("all 200 passes ended") {
            h.finished.withLock { $0.count } == 200
        }
        try await waitUntil("nothing counted as running") { await h.cron.depths().running == 0 }
        for i in 0..<200 {
            #expect(await h.store.findGlobal(gid: "lazy-row-\(i)")?.status == .succeed)
        }
    }
}
