import DtmSync
import Foundation
import Testing
@testable import DtmEngine

/// A transaction's first pass skips reading it back only when the copy it was handed is the row
/// its request inserted, untouched since (`FreshTransactions`).
@Suite struct FreshPassTests {
    /// Counts the store reads of transactions.
    final class ReadCountingStore: ForwardingStore, @unchecked Sendable {
        private let reads = Locked(0)
        var globalReads: Int { reads.withLock { $0 } }
        func resetReads() { reads.withLock { $0 = 0 } }

        override func findGlobal(gid: String) async throws(StoreError) -> GlobalTransaction? {
            reads.withLock { $0 += 1 }
            return try await super.findGlobal(gid: gid)
        }
    }

    struct Rig {
        let store = ReadCountingStore()
        let clock = FakeClock()
        let caller = ScriptedCaller()
        let driver: TransactionDriver
        let cron: CronLoop
        let coordinator: Coordinator

        init() {
            driver = TransactionDriver(store: store, caller: caller, clock: clock, owner: "fresh-test")
            let cron = CronLoop(driver: driver)
            self.cron = cron
            coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        }

        func start() async { await caller.attach(store.inner) }
        func status(_ gid: String) async -> GlobalStatus? { await store.inner.findGlobal(gid: gid)?.status }
    }

    @Test func aNewTransactionsFirstPassReadsNothingBack() async throws {
        let rig = Rig()
        await rig.start()
        try await rig.coordinator.submit(sagaRequest("fresh"))
        #expect(rig.driver.fresh.count == 1)
        rig.store.resetReads()
        let reports = await rig.cron.runOnce()
        #expect(reports.count == 1)
        #expect(await rig.status("fresh") == .succeed)
        #expect(rig.store.globalReads == 0)
        #expect(await rig.caller.log == ["01/action", "02/action"])
        #expect(rig.driver.fresh.count == 0)
        #expect(await rig.caller.violations.isEmpty)
    }

    /// forceStop between the insert and the pass: the pass reads the stopped row and calls nothing.
    @Test func aRequestOnTheGidBeforeThePassMakesItRead() async throws {
        let rig = Rig()
        await rig.start()
        try await rig.coordinator.submit(sagaRequest("stopped"))
        try await rig.coordinator.forceStop(gid: "stopped")
        rig.store.resetReads()
        let reports = await rig.cron.runOnce()
        #expect(reports.count == 1)
        #expect(rig.store.globalReads >= 1)
        #expect(await rig.status("stopped") == .failed)
        #expect(await rig.caller.log.isEmpty)
        #expect(await rig.caller.violations.isEmpty)
    }

    /// A repeated Submit of the gid (it looks the row up) also ends the trust.
    @Test func aRepeatedSubmitMakesThePassRead() async throws {
        let rig = Rig()
        await rig.start()
        try await rig.coordinator.submit(sagaRequest("twice"))
        try await rig.coordinator.submit(sagaRequest("twice"))
        #expect(rig.driver.fresh.count == 0)
        rig.store.resetReads()
        _ = await rig.cron.runOnce()
        #expect(rig.store.globalReads >= 1)
        #expect(await rig.status("twice") == .succeed)
    }

    /// Another pass of the gid (the retry loop's, a request's) started first: it took the mark,
    /// so the handed-over pass reads the row it left and calls nothing more.
    @Test func anEarlierPassTakesTheMark() async throws {
        let rig = Rig()
        await rig.start()
        try await rig.coordinator.submit(sagaRequest("overtaken"))
        let first = try await rig.driver.process(gid: "overtaken")
        #expect(first?.global.status == .succeed)
        #expect(await rig.caller.log == ["01/action", "02/action"])
        rig.store.resetReads()
        _ = await rig.cron.runOnce()
        #expect(rig.store.globalReads >= 1)
        #expect(await rig.caller.log == ["01/action", "02/action"])
        #expect(await rig.caller.violations.isEmpty)
    }

    /// A lease that ends within the margin may be another coordinator's to take: read.
    @Test func aLeaseAboutToEndMakesThePassRead() async throws {
        let rig = Rig()
        await rig.start()
        try await rig.coordinator.submit(sagaRequest("late"))
        let interval = Double(EngineConfig().retryInterval)
        rig.clock.advance(interval - TransactionDriver.leaseMargin / 2)
        rig.store.resetReads()
        _ = await rig.cron.runOnce()
        #expect(rig.store.globalReads >= 1)
        #expect(await rig.status("late") == .succeed)
    }

    /// A Submit whose insert found the gid taken (a prepared msg) leaves no mark behind.
    @Test func anExistingGidLeavesNoMark() async throws {
        let rig = Rig()
        await rig.start()
        try await rig.coordinator.prepare(msgRequest("msg"))
        #expect(rig.driver.fresh.count == 0)
        try await rig.coordinator.submit(msgRequest("msg"))
        #expect(rig.driver.fresh.count == 0)
        _ = await rig.cron.runOnce()
        #expect(await rig.status("msg") == .succeed)
    }
}
