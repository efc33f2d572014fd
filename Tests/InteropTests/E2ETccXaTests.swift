import DtmEngine
import Foundation
import Testing

/// TCC and XA driven as DTM's SDKs do: Prepare, RegisterBranch per branch, the client's own
/// try / action calls, then Submit or Abort; the coordinator runs phase two.
@Suite struct E2ETccXaTests {
    /// The SDK's direct call of a busi method (TCC try, XA action), with DTM's identifiers.
    static func direct(_ busi: BusiPeer, _ transport: Transport, _ method: String, gid: String, transType: String,
                       branchID: String, op: String, dtm: String, transIn: String = "") -> [String: Any] {
        switch transport {
        case .grpc:
            return Op.busi(busi.grpcTarget, method, ["Amount": 30, "TransInResult": transIn], metadata: [
                "dtm-gid": gid, "dtm-trans_type": transType, "dtm-branch_id": branchID, "dtm-op": op, "dtm-dtm": dtm,
            ])
        case .http:
            var components = URLComponents(string: busi.url(method, .http))!
            components.queryItems = [URLQueryItem(name: "gid", value: gid), URLQueryItem(name: "trans_type", value: transType),
                                     URLQueryItem(name: "branch_id", value: branchID), URLQueryItem(name: "op", value: op),
                                     URLQueryItem(name: "dtm", value: dtm)]
            return ["http": components.string!, "body": ["amount": 30, "trans_in_result": transIn]]
        }
    }

    static func tccOps(_ gid: String, _ busi: BusiPeer, _ transport: Transport, dtm: String, secondTry: String,
                       finish: [String: Any]) -> [[String: Any]] {
        var ops: [[String: Any]] = [Op.prepare(["Gid": gid, "TransType": "tcc"])]
        for (branch, name) in [("01", "TransOut"), ("02", "TransIn")] {
            ops.append(Op.registerBranch([
                "Gid": gid, "TransType": "tcc", "BranchID": branch,
                "Data": ["confirm": busi.url("\(name)Confirm", transport), "cancel": busi.url("\(name)Revert", transport)],
                "BusiPayload": busiPayload(transport),
            ]))
            ops.append(direct(busi, transport, "\(name)Tcc", gid: gid, transType: "tcc", branchID: branch, op: "try",
                              dtm: dtm, transIn: branch == "02" ? secondTry : ""))
        }
        ops.append(finish)
        return ops
    }

    /// Both tries succeed, Submit → confirms in reverse registration order → `succeed`,
    /// cancel rows untouched: `[prepared, succeed, prepared, succeed]`.
    @Test(arguments: Transport.allCases)
    func tccSubmitConfirms(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("tcc-ok-\(transport)")
            let results = try await runClient(dtm.target, Self.tccOps(
                gid, busi, transport, dtm: dtm.target, secondTry: "", finish: Op.submit(["Gid": gid, "TransType": "tcc"])))
            let ok = transport == .grpc ? "OK" : "HTTP_200"
            #expect(results.map(\.code) == ["OK", "OK", ok, "OK", ok, "OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .succeed)
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])
            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOutTcc/try/01", "TransInTcc/try/02",
                                   "TransInConfirm/confirm/02", "TransOutConfirm/confirm/01"], "\(calls)")
            for call in calls.ops("confirm") {
                #expect(call.transType == "tcc")
                #expect(call.amount == 30, "the registered payload reaches confirm")
                if transport == .http { #expect(call.httpMethod == "POST") }
            }
        }
    }

    /// The second try fails, the client aborts → cancels in reverse registration order →
    /// `failed` with the client's reason; `[succeed, prepared, succeed, prepared]`.
    @Test(arguments: Transport.allCases)
    func tccAbortCancels(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("tcc-abort-\(transport)")
            let reason = "try of branch 02 failed"
            let results = try await runClient(dtm.target, Self.tccOps(
                gid, busi, transport, dtm: dtm.target, secondTry: "FAILURE",
                finish: Op.abort(["Gid": gid, "TransType": "tcc", "RollbackReason": reason])))
            let (ok, refused) = transport == .grpc ? ("OK", "ABORTED") : ("HTTP_200", "HTTP_409")
            #expect(results.map(\.code) == ["OK", "OK", ok, "OK", refused, "OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .failed)
            #expect(final.rollbackReason == reason)
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "prepared", "succeed", "prepared"])
            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOutTcc/try/01", "TransInTcc/try/02",
                                   "TransInRevert/cancel/02", "TransOutRevert/cancel/01"], "\(calls)")
        }
    }

    static func xaOps(_ gid: String, _ busi: BusiPeer, _ transport: Transport, dtm: String,
                      finish: [String: Any]) -> [[String: Any]] {
        var ops: [[String: Any]] = [Op.prepare(["Gid": gid, "TransType": "xa"])]
        for (branch, name) in [("01", "TransOutXa"), ("02", "TransInXa")] {
            // As in DTM, the busi's action handler registers itself, then the SDK's call returns.
            ops.append(Op.registerBranch(["Gid": gid, "TransType": "xa", "BranchID": branch,
                                          "Data": ["url": busi.url(name, transport)]]))
            ops.append(direct(busi, transport, name, gid: gid, transType: "xa", branchID: branch, op: "action", dtm: dtm))
        }
        ops.append(finish)
        return ops
    }

    /// Submit → commit (op commit) on every branch, first to last → `succeed`,
    /// `[prepared, succeed, prepared, succeed]`; XA phase two is POSTed even with no body.
    @Test(arguments: Transport.allCases)
    func xaSubmitCommits(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("xa-ok-\(transport)")
            let results = try await runClient(dtm.target, Self.xaOps(
                gid, busi, transport, dtm: dtm.target, finish: Op.submit(["Gid": gid, "TransType": "xa"])))
            #expect(results.allSatisfy { $0.code == "OK" || $0.code == "HTTP_200" }, "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .succeed)
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])
            let phaseTwo = busi.calls(gid).filter { $0.op != "action" }
            #expect(phaseTwo.keys == ["TransOutXa/commit/01", "TransInXa/commit/02"], "\(phaseTwo)")
            for call in phaseTwo where transport == .http {
                #expect(call.httpMethod == "POST")
                #expect(call.body == "")
            }
        }
    }

    /// Abort → rollback (op rollback) on every branch → `failed`, `[succeed, prepared, succeed, prepared]`.
    @Test(arguments: Transport.allCases)
    func xaAbortRollsBack(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("xa-abort-\(transport)")
            let results = try await runClient(dtm.target, Self.xaOps(
                gid, busi, transport, dtm: dtm.target,
                finish: Op.abort(["Gid": gid, "TransType": "xa", "RollbackReason": "local error"])))
            #expect(results.allSatisfy { $0.code == "OK" || $0.code == "HTTP_200" }, "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .failed)
            #expect(final.rollbackReason == "local error")
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "prepared", "succeed", "prepared"])
            let phaseTwo = busi.calls(gid).filter { $0.op != "action" }
            #expect(phaseTwo.keys == ["TransOutXa/rollback/01", "TransInXa/rollback/02"], "\(phaseTwo)")
            #expect(phaseTwo.allSatisfy { $0.transType == "xa" })
        }
    }
}
