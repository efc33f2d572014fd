import DtmEngine
import DtmStore
import DtmTestSupport
import Foundation
import Testing

/// Issue 8, finding 1: one row that could not be read back failed every claim, so no transaction
/// was retried or recovered any more; `/query` failed on it and nothing could remove it.
@Suite("Quarantine of unreadable rows")
struct QuarantineTests {
    /// Damages one column of `gid` behind the store's back, as another program or an older
    /// build could have.
    static func damage(_ file: TemporaryDatabase, _ gid: String, _ assignment: String) throws {
        try RawDatabase(path: file.path).execute("UPDATE trans_global SET \(assignment) WHERE gid = '\(gid)'")
    }

    @Test("a row that cannot be decoded is skipped by the claim, shown with its reason, and force-stoppable",
          arguments: [
            ("options = '{\"retry_limit\":10000000000000000}'", "cannot decode options"),
            ("options = 'not json'", "cannot decode options 'not json'"),
            ("trans_type = 'sagax'", "unknown trans_type 'sagax'"),
            ("protocol = 'smtp'", "unknown protocol 'smtp'"),
            ("status = 'weird'", "unknown status 'weird'"),
          ])
    func quarantined(_ assignment: String, _ reason: String) async throws {
        try await withSQLiteStore { store, file in
            for gid in ["before", "bad", "after"] {
                _ = try await store.saveNew(sampleGlobal(gid, status: .submitted, nextCron: at(1)), branches: [])
            }
            try Self.damage(file, "bad", assignment)

            let claimed = try await store.claimDue(now: at(5), leaseUntil: at(15), owner: "me", limit: 10)
            #expect(claimed.map(\.gid) == ["before", "after"])
            let bad = try #require(try await store.findGlobal(gid: "bad"))
            #expect(bad.isQuarantined)
            #expect(bad.quarantine.contains(reason), "\(bad.quarantine)")
            #expect(try await store.scanGlobals(GlobalQuery()).count == 3)
            // Parked: later claims never return it again.
            #expect(try await store.claimDue(now: at(100_000), leaseUntil: at(100_010), owner: "me", limit: 10)
                .map(\.gid).sorted() == ["after", "before"])

            try await store.forceFail(gid: "bad", reason: "operator", now: at(7))
            let stopped = try #require(try await store.findGlobal(gid: "bad"))
            #expect(stopped.status == .failed)
            #expect(stopped.rollbackReason == "operator")
            let again = await outcome { () async throws(StoreError) in
                try await store.forceFail(gid: "bad", reason: "again", now: at(8))
            }
            #expect(again.error?.isNotFound == true)
        }
    }

    @Test func theCoordinatorDrivesOthersAndForceStopsTheQuarantinedOne() async throws {
        try await withSQLiteStore { store, file in
            let caller = CountingCaller()
            let driver = TransactionDriver(store: store, caller: caller, config: EngineConfig(), owner: "me")
            let coordinator = Coordinator(driver: driver, schedule: { _ in })
            let steps = [["action": "http://busi/a", "compensate": "http://busi/c"]]
            for gid in ["q-ok-1", "q-bad", "q-ok-2"] {
                try await coordinator.submit(TransRequest(gid: gid, transType: "saga", steps: steps, payloads: [[]]))
            }
            try Self.damage(file, "q-bad", "options = '{\"retry_limit\":1e99}'")
            try RawDatabase(path: file.path).execute("UPDATE trans_global SET next_cron_time = 0")

            let cron = CronLoop(driver: driver)
            let reports = await cron.runOnce()
            #expect(Set(reports.map(\.global.gid)) == ["q-ok-1", "q-ok-2"])
            #expect(try await store.findGlobal(gid: "q-ok-1")?.status == .succeed)
            #expect(try await store.findGlobal(gid: "q-ok-2")?.status == .succeed)

            // Requests that would drive it are refused; forceStop ends it.
            let error = await caught { try await coordinator.submit(TransRequest(gid: "q-bad", transType: "saga",
                                                                                  steps: steps, payloads: [[]])) }
            guard case .failure(let message)? = error else {
                Issue.record("expected failure, got \(String(describing: error))")
                return
            }
            #expect(message.contains("quarantined"))
            try await coordinator.forceStop(gid: "q-bad")
            let stopped = try #require(try await store.findGlobal(gid: "q-bad"))
            #expect(stopped.status == .failed)
            #expect(stopped.rollbackReason.contains("cannot decode options"))
            #expect(await caller.calls == 2)
        }
    }
}

/// Answers every call with success and counts them.
actor CountingCaller: BranchCaller {
    private(set) var calls = 0
    nonisolated func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        await count()
        return .success
    }
    private func count() { calls += 1 }
}
