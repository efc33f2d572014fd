import Foundation
import Testing
@testable import DtmEngine
import DtmTestSupport

/// Issue 9: several coordinators on one store. A branch is called only while the caller's lease
/// on the transaction outlasts the call; otherwise another coordinator could claim the
/// transaction and call the same branch at the same time (seen after a PostgreSQL restart: the
/// cron could not renew leases while the database was down, and a pass that resumed launched
/// calls on a lapsed lease).
@Suite struct LeaseTests {
    @Test func everyCallIsCoveredByTheCallersLease() async throws {
        let harness = Harness(config: EngineConfig(retryInterval: 1, requestTimeout: 3), owner: "A")
        await harness.start()
        let store = harness.store
        let clock = harness.clock
        let uncovered = Recorder<String>()
        await harness.caller.onCall { call, global in
            let row = await store.findGlobal(gid: global.gid)
            let left = (row?.nextCronTime.timeIntervalSince(clock.now())) ?? -1
            if row?.owner != "A" || left < 3 {
                await uncovered.append("\(call.branchID)/\(call.op): owner \(row?.owner ?? "-"), lease left \(left) s")
            }
        }
        try await harness.coordinator.submit(sagaRequest("lease-1", steps: 3))
        try await harness.coordinator.submit(sagaRequest("lease-2", steps: 2))
        // The request passes were held up (a store outage, a busy machine) past the 1 s lease.
        clock.advance(5)
        await harness.process()
        #expect(await harness.global("lease-1").status == .succeed)
        #expect(await harness.global("lease-2").status == .succeed)
        #expect(await harness.log().count == 5)
        let problems = await uncovered.values
        #expect(problems.isEmpty, "\(problems)")
    }

    /// A pass started from a copy read before another coordinator took the lease stops without
    /// calling anything (the pass re-reads the owner first).
    @Test func aPassThatLostItsLeaseCallsNothing() async throws {
        let harness = Harness(config: EngineConfig(retryInterval: 1, requestTimeout: 3), owner: "A")
        await harness.start()
        try await harness.coordinator.submit(sagaRequest("taken-1", steps: 2))
        let stale = await harness.global("taken-1")
        harness.clock.advance(5)
        // B claims the lapsed lease; A's pass then runs from what it read before.
        let claimed = try await harness.store.claimDue(now: harness.clock.now(),
                                                       leaseUntil: harness.clock.now().addingTimeInterval(1),
                                                       owner: "B", limit: 10)
        #expect(claimed.map(\.gid) == ["taken-1"])
        #expect(stale.owner == "A")
        let report = await harness.driver.process(stale)
        #expect(report.calls.isEmpty)
        #expect(await harness.log().isEmpty)
    }
}
