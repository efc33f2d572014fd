import Foundation
import Testing
@testable import DtmEngine

/// Opens once; every waiter before and after goes on.
private actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters = []
    }
}

@Suite struct DrainTests {
    /// The graceful stop of the retry loop: a pass under way when `drain()` comes finishes its
    /// work, a pass handed over afterwards is not started (it stays submitted in the store for
    /// the next coordinator), and `run()` returns once nothing runs.
    @Test func drainLetsRunningPassesFinishAndStartsNothingMore() async throws {
        let store = InMemoryStore()
        let caller = ScriptedCaller()
        await caller.attach(store)
        let driver = TransactionDriver(store: store, caller: caller, clock: FakeClock(), owner: "drainer")
        let cron = CronLoop(driver: driver, sleep: { _ in try? await Task.sleep(for: .seconds(3600)) })
        let coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        let gate = Gate()
        let (entered, enteredSink) = AsyncStream.makeStream(of: String.self)
        await caller.onCall { call, global in
            guard global.gid == "drain-running", call.url == "http://busi/a1" else { return }
            enteredSink.yield(global.gid)
            await gate.wait()
        }
        let loop = Task { await cron.run() }

        try await coordinator.submit(sagaRequest("drain-running"))
        var calls = entered.makeAsyncIterator()
        #expect(await calls.next() == "drain-running")  // its first action is under way

        await cron.drain()
        try await coordinator.submit(sagaRequest("drain-late"))
        await gate.open()
        await loop.value

        #expect(await store.findGlobal(gid: "drain-running")?.status == .succeed)
        #expect(await store.findGlobal(gid: "drain-late")?.status == .submitted)
        #expect(await caller.seen.allSatisfy { $0.gid != "drain-late" })
        #expect(await caller.violations == [])
    }
}
