import DtmEngine
import Foundation
import Testing

/// Sagas driven end to end: a Python grpcio client submits, the in-process coordinator calls
/// the Python busi over gRPC or (DTM's HTTP fallback) HTTP, the SQLite file holds the outcome.
@Suite struct E2ESagaTests {
    /// Both actions succeed: called once each, in order, with DTM's metadata / query parameters
    /// and the step's payload; `[prepared, succeed, prepared, succeed]`, `succeed`.
    @Test(arguments: Transport.allCases)
    func sagaSucceeds(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("saga-ok-\(transport)")
            let results = try await runClient(dtm.target, [Op.submit(transferSaga(gid, busi, transport))])
            #expect(results.map(\.code) == ["OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .succeed)
            #expect(final.rollbackReason == "")
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])

            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOut/action/01", "TransIn/action/02"], "\(calls)")
            for call in calls {
                #expect(call.transport == transport.rawValue)
                #expect(call.transType == "saga")
                #expect(call.amount == 30)
                switch transport {
                case .grpc:
                    #expect(call.dtm == "", "the server sends an empty dtm-dtm")
                case .http:
                    #expect(call.httpMethod == "POST", "a branch with a payload is POSTed")
                    #expect(call.headers["content-type"] == "application/json")
                    #expect(Set(call.query?.keys.map { $0 } ?? []) == ["gid", "trans_type", "branch_id", "op"])
                    #expect(call.body.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }?["amount"] as? Int == 30)
                }
            }
        }
    }

    /// The second action answers FAILURE: compensations run in reverse order (the failed step's
    /// own compensation first), `[succeed, succeed, succeed, failed]`, `failed`, and the busi's
    /// message is in the rollback reason.
    @Test(arguments: Transport.allCases)
    func sagaRollsBackInReverseOrder(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("saga-rb-\(transport)")
            let results = try await runClient(dtm.target, [Op.submit(transferSaga(gid, busi, transport, transIn: "FAILURE"))])
            #expect(results.map(\.code) == ["OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .failed)
            #expect(final.rollbackReason.contains("reason:TransIn insufficient balance"), "\(final.rollbackReason)")
            #expect(final.rollbackReason.contains(busi.url("TransIn", transport)), "\(final.rollbackReason)")
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "succeed", "succeed", "failed"])

            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOut/action/01", "TransIn/action/02",
                                   "TransInRevert/compensate/02", "TransOutRevert/compensate/01"], "\(calls)")
            if transport == .http {
                #expect(calls.allSatisfy { $0.httpMethod == "POST" && $0.amount == 30 })
            }
        }
    }

    /// A saga stopped by retry_limit while a duplicate Submit is queued behind its running pass:
    /// once `aborting` is stored no action may be called again (DESIGN invariant), even by the
    /// pass the duplicate Submit scheduled from what it read before the rollback.
    @Test func noActionAfterRollbackWhenADuplicateSubmitWasQueued() async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("saga-dup-rb")
            try busi.control(gid, ["TransOut": "ERROR", "delay": ["TransOut": 0.6]])
            let request = transferSaga(gid, busi, .grpc, options: ["RetryLimit": 1])
            let results = try await runClient(dtm.target, [Op.submit(request), Op.sleep(0.2), Op.submit(request)])
            #expect(results.map(\.code) == ["OK", "OK", "OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .failed)
            #expect(final.rollbackReason == "RetryCount is greater than RetryLimit, RetryLimit: 1")
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "prepared", "prepared", "prepared"])
            // Let a wrongly scheduled pass show itself.
            try await Task.sleep(for: .seconds(1.5))
            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOut/action/01", "TransOut/action/01", "TransOutRevert/compensate/01"], "\(calls)")
        }
    }
}
