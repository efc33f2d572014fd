import DtmEngine
import Foundation
import Testing

/// Msg (2-phase message): Prepare without Submit; once timeout_to_fail (2 s here) has passed,
/// the coordinator back-checks query_prepared (branch 00, op msg) and acts on the answer.
@Suite struct E2EMsgTests {
    static func prepareMsg(_ gid: String, _ busi: BusiPeer, _ transport: Transport) -> [String: Any] {
        [
            "Gid": gid, "TransType": "msg",
            "Steps": [["action": busi.url("TransOut", transport)], ["action": busi.url("TransIn", transport)]],
            "BinPayloads": [busiPayload(transport), busiPayload(transport)],
            "QueryPrepared": busi.url("QueryPrepared", transport),
            // The msg's own timeout: the coordinator's default is far off (see E2ECoordinator).
            "TransOptions": ["TimeoutToFail": 2],
        ]
    }

    static func checkBackCheck(_ call: BusiCall, _ gid: String, _ transport: Transport) {
        #expect(call.method == "QueryPrepared")
        #expect(call.op == "msg")
        #expect(call.branchId == "00")
        #expect(call.transType == "msg")
        if transport == .http {
            #expect(call.httpMethod == "GET", "the back-check has no body")
            #expect(call.body == "")
        }
    }

    /// Back-check SUCCESS → submitted → both steps called in order → `succeed`; not before the timeout.
    @Test(arguments: Transport.allCases)
    func backCheckSuccessSubmits(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("msg-ok-\(transport)")
            try busi.control(gid, ["QueryPrepared": "SUCCESS"])
            let results = try await runClient(dtm.target, [Op.prepare(Self.prepareMsg(gid, busi, transport))])
            #expect(results.map(\.code) == ["OK"], "\(results)")
            // Prepared until its back-check (which may already have come on a slow run).
            let status = try await dtm.global(gid)?.status
            #expect(status == .prepared || !busi.calls(gid).isEmpty, "\(String(describing: status)) before any back-check")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .succeed)
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "succeed"])
            let calls = busi.calls(gid)
            #expect(calls.keys == ["QueryPrepared/msg/00", "TransOut/action/01", "TransIn/action/02"], "\(calls)")
            if let check = calls.first, let prepared = results.first?.start {
                Self.checkBackCheck(check, gid, transport)
                #expect(check.t >= prepared + 1.9, "back-checked \(check.t - prepared) s after Prepare, before the 2 s timeout")
            }
        }
    }

    /// Back-check FAILURE → `failed`, no step is ever called.
    @Test(arguments: Transport.allCases)
    func backCheckFailureFails(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("msg-fail-\(transport)")
            try busi.control(gid, ["QueryPrepared": "FAILURE"])
            let results = try await runClient(dtm.target, [Op.prepare(Self.prepareMsg(gid, busi, transport))])
            #expect(results.map(\.code) == ["OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .failed)
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "prepared"])
            try await Task.sleep(for: .seconds(1.2))  // a cron round later: still nothing called
            let calls = busi.calls(gid)
            #expect(calls.keys == ["QueryPrepared/msg/00"], "\(calls)")
            if let check = calls.first { Self.checkBackCheck(check, gid, transport) }
        }
    }

    /// Back-check ONGOING → stays `prepared` and is checked again (at least twice, no step
    /// called meanwhile); once the back-check says SUCCESS the steps run and it succeeds.
    @Test(arguments: Transport.allCases)
    func backCheckOngoingKeepsChecking(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("msg-ongoing-\(transport)")
            try busi.control(gid, ["QueryPrepared": "ONGOING"])
            let results = try await runClient(dtm.target, [Op.prepare(Self.prepareMsg(gid, busi, transport))])
            #expect(results.map(\.code) == ["OK"], "\(results)")

            try await busi.waitForCalls(gid, count: 2) { $0.method == "QueryPrepared" }
            #expect(try await dtm.global(gid)?.status == .prepared)
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "prepared"])
            let checks = busi.calls(gid)
            #expect(checks.allSatisfy { $0.method == "QueryPrepared" && $0.result == "ONGOING" }, "\(checks)")
            if checks.count >= 2 {
                #expect(checks[1].t - checks[0].t >= 0.5, "re-checked after an interval, not in a loop: \(checks)")
            }

            try busi.control(gid, ["QueryPrepared": "SUCCESS"])
            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .succeed)
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "succeed"])
            let calls = busi.calls(gid)
            #expect(calls.suffix(3).map(\.key) == ["QueryPrepared/msg/00", "TransOut/action/01", "TransIn/action/02"], "\(calls)")
            #expect(calls.dropLast(2).allSatisfy { $0.method == "QueryPrepared" }, "\(calls)")
        }
    }
}
