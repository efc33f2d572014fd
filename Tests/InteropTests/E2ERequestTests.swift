import DtmEngine
import Foundation
import Testing

/// The coordinator API's request-level contracts, end to end: wait_result, repeated
/// Submit / Prepare, malformed requests, branch headers.
@Suite struct E2ERequestTests {
    /// wait_result: Submit returns only after the saga finished; the status is final at return.
    @Test func waitResultReturnsAfterTheSagaFinished() async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("wait-ok")
            try busi.control(gid, ["delay": 0.3])
            // RetryInterval 10: the lease outlasts the request's pass (see waitResultPassRacesTheCron...).
            let options: [String: Any] = ["WaitResult": true, "RetryInterval": 10]
            let results = try await runClient(dtm.target, [Op.submit(transferSaga(gid, busi, .grpc, options: options), timeout: 60)])
            let submit = try #require(results.first)
            #expect(submit.code == "OK", "\(submit)")
            #expect(try await dtm.global(gid)?.status == .succeed)
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])
            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOut/action/01", "TransIn/action/02"], "\(calls)")
            if let last = calls.last, let end = submit.end {
                #expect(end >= last.t + last.delay, "Submit returned before the last branch answered")
            }
        }
    }

    /// wait_result with a rollback: Submit answers ABORTED with the reason, after compensating.
    @Test func waitResultRollbackIsAbortedWithTheReason() async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("wait-rb")
            let results = try await runClient(dtm.target, [
                Op.submit(transferSaga(gid, busi, .grpc, transIn: "FAILURE", options: ["WaitResult": true, "RetryInterval": 10]), timeout: 60),
            ])
            let submit = try #require(results.first)
            #expect(submit.code == "ABORTED", "\(submit)")
            #expect(submit.details?.contains("reason:TransIn insufficient balance") ?? false, "\(submit)")
            #expect(try await dtm.global(gid)?.status == .failed)
            #expect(try await dtm.branchStatuses(gid) == ["succeed", "succeed", "succeed", "failed"])
            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOut/action/01", "TransIn/action/02",
                                   "TransInRevert/compensate/02", "TransOutRevert/compensate/01"], "\(calls)")
        }
    }

    /// A wait_result Submit drives the transaction in the request under a lease of one reset
    /// interval (1 s here). Its pass outlasts the lease, so the cron claims the gid meanwhile;
    /// it must not drive it at the same time (DESIGN: one driver at a time; DTM has this race).
    @Test func waitResultPassIsNotRacedByTheCronAfterItsLease() async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("wait-race")
            try busi.control(gid, ["delay": ["TransOut": 2.5]])
            let results = try await runClient(dtm.target, [Op.submit(transferSaga(gid, busi, .grpc, options: ["WaitResult": true]), timeout: 60)])
            #expect(results.map(\.code) == ["OK"], "\(results)")
            #expect(try await dtm.global(gid)?.status == .succeed)
            let transOuts = busi.calls(gid).named("TransOut")
            #expect(transOuts.count == 1, "\(transOuts)")
        }
    }

    /// DTM: Submit of a gid that is `submitted` succeeds and keeps processing; after it finished,
    /// Submit and Prepare are refused (ABORTED, DTM's texts). Prepare of a prepared gid is a no-op.
    @Test func duplicateSubmitAndPrepare() async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("dup")
            // TransOut answers ONGOING until the test lets it succeed: the saga is still running
            // when the second Submit comes, however slow this run is.
            try busi.control(gid, ["TransOut": "ONGOING"])
            let saga = transferSaga(gid, busi, .grpc)
            let running = try await runClient(dtm.target, [Op.submit(saga), Op.submit(saga)])
            #expect(running.map(\.code) == ["OK", "OK"], "\(running)")
            #expect(try await dtm.global(gid)?.status == .submitted, "the second Submit came while it ran")

            try busi.control(gid, [:])
            #expect(try await dtm.waitFinal(gid).status == .succeed)
            #expect(try await dtm.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])
            let after = try await runClient(dtm.target, [Op.submit(saga), Op.prepare(saga)])
            #expect(after.map(\.code) == ["ABORTED", "ABORTED"], "\(after)")
            #expect(after[0].details == "current status 'succeed', cannot sumbmit. FAILURE")
            #expect(after[1].details == "current status 'succeed', cannot prepare. FAILURE")
            #expect(try await dtm.global(gid)?.status == .succeed)
            let calls = busi.calls(gid)
            #expect(calls.named("TransOut", "TransIn").count >= 2, "\(calls)")
            #expect(calls.named("TransOutRevert", "TransInRevert").isEmpty, "\(calls)")

            // Prepare twice (msg): both OK, nothing changes; Abort → failed; then Prepare is refused.
            let msg = uniqueGid("dup-msg")
            let request: [String: Any] = ["Gid": msg, "TransType": "msg", "Steps": [["action": busi.url("TransIn", .grpc)]],
                                          "BinPayloads": [busiPayload(.grpc)], "QueryPrepared": busi.url("QueryPrepared", .grpc)]
            let prepared = try await runClient(dtm.target, [Op.prepare(request), Op.prepare(request),
                                                            Op.abort(["Gid": msg, "TransType": "msg"]), Op.prepare(request)])
            #expect(prepared.map(\.code) == ["OK", "OK", "OK", "ABORTED"], "\(prepared)")
            #expect(prepared.last?.details == "current status 'failed', cannot prepare. FAILURE")
            #expect(try await dtm.global(msg)?.status == .failed)
            #expect(try await dtm.branchStatuses(msg) == ["prepared"])
            #expect(busi.calls(msg).isEmpty)
        }
    }

    /// Bad requests get INVALID_ARGUMENT naming the field; nothing is stored; the server goes on serving.
    @Test func malformedRequestsAreRefusedAndStoreNothing() async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("bad")
            let step = [["action": busi.url("TransOut", .grpc), "compensate": busi.url("TransOutRevert", .grpc)]]
            let cases: [(op: [String: Any], mentions: String)] = [
                (Op.raw("Submit", hex: "ffffffff"), "DtmRequest"),
                (Op.raw("Prepare", hex: "0a"), "DtmRequest"),
                (Op.raw("RegisterBranch", hex: "ff"), "DtmBranchRequest"),
                (Op.submit(["TransType": "saga", "Steps": step, "BinPayloads": [busiPayload(.grpc)]]), "gid"),
                (Op.submit(["Gid": String(repeating: "g", count: 129), "TransType": "saga"]), "gid"),
                (Op.submit(["Gid": gid + "-1", "TransType": "sagax", "Steps": step, "BinPayloads": [busiPayload(.grpc)]]), "trans_type"),
                (Op.submit(["Gid": gid + "-2", "Steps": step, "BinPayloads": [busiPayload(.grpc)]]), "trans_type"),
                (Op.submit(["Gid": gid + "-3", "TransType": "saga", "Steps": "[{\"action\": ", "BinPayloads": [busiPayload(.grpc)]]), "steps"),
                (Op.submit(["Gid": gid + "-4", "TransType": "saga", "Steps": "[\"TransOut\"]", "BinPayloads": [busiPayload(.grpc)]]), "steps"),
                (Op.submit(["Gid": gid + "-5", "TransType": "saga", "Steps": step + step, "BinPayloads": [busiPayload(.grpc)]]), "payloads"),
                (Op.submit(["Gid": gid + "-6", "TransType": "saga", "Steps": step, "BinPayloads": [busiPayload(.grpc)],
                            "CustomedData": "{not json"]), "custom_data"),
                (Op.submit(["Gid": gid + "-7", "TransType": "saga", "Steps": step, "BinPayloads": [busiPayload(.grpc)],
                            "TransOptions": ["TimeoutToFail": -1]]), "timeout_to_fail"),
                (Op.prepare(["Gid": gid + "-8", "TransType": "msg", "Steps": "{}", "QueryPrepared": "x"]), "steps"),
                // Issue 8: a NUL cut the gid short (colliding with another client's), invalid UTF-8 was
                // repaired, a file:// step and a retry_limit no store could read back were stored.
                (Op.submit(["Gid": gid + "-9\u{0}tail", "TransType": "saga", "Steps": step, "BinPayloads": [busiPayload(.grpc)]]),
                 "Gid contains NUL"),
                (Op.raw("Submit", hex: "0a026aff120473616761"), "Gid is not valid UTF-8"),
                (Op.submit(["Gid": gid + "-10", "TransType": "saga", "BinPayloads": [busiPayload(.grpc)],
                            "Steps": [["action": "file:///etc/passwd", "compensate": ""]]]), "steps[0].action"),
                (Op.submit(["Gid": gid + "-11", "TransType": "saga", "Steps": step, "BinPayloads": [busiPayload(.grpc)],
                            "TransOptions": ["RetryLimit": 10_000_000_000_000_000]]), "retry_limit"),
            ]
            let results = try await runClient(dtm.target, cases.map(\.op) + [Op.newGid])
            for (index, (result, expected)) in zip(results, cases).enumerated() {
                #expect(result.code == "INVALID_ARGUMENT", "case \(index): \(result)")
                #expect(result.details?.contains(expected.mentions) ?? false, "case \(index): \(result)")
            }
            #expect(results.last?.code == "OK", "NewGid after the bad requests: \(String(describing: results.last))")
            #expect(results.last?.gid?.count == 22)

            let dump = try await dumpDatabase(dtm.dbPath)
            #expect(dump.globals.isEmpty, "stored: \(dump.globals.keys.sorted())")
            #expect(dump.orphanBranches == 0)
            #expect(busi.calls().filter { $0.gid.hasPrefix(gid) }.isEmpty)

            // Still serving transactions.
            let good = gid + "-good"
            #expect(try await runClient(dtm.target, [Op.submit(transferSaga(good, busi, .grpc))]).map(\.code) == ["OK"])
            #expect(try await dtm.waitFinal(good).status == .succeed)
        }
    }

    /// branch_headers reach the busi as gRPC metadata / HTTP headers on every call, including the
    /// cron's retries after ONGOING (also the legacy gRPC ABORTED "ONGOING" / HTTP 200 body form).
    @Test(arguments: Transport.allCases)
    func branchHeadersReachEveryCall(_ transport: Transport) async throws {
        let busi = try await BusiPeer.shared()
        try await E2ECoordinator.with { dtm in
            let gid = uniqueGid("headers-\(transport)")
            try busi.control(gid, ["TransOut": ["ONGOING_LEGACY", "ONGOING", "SUCCESS"]])
            let headers = ["test_header": "yes", "x-trace-id": "trace-\(gid)"]
            let results = try await runClient(dtm.target, [
                Op.submit(transferSaga(gid, busi, transport, options: ["BranchHeaders": headers])),
            ])
            #expect(results.map(\.code) == ["OK"], "\(results)")

            let final = try await dtm.waitFinal(gid)
            #expect(final.status == .succeed, "ONGOING (both forms) is retried, not a failure")
            let calls = busi.calls(gid)
            #expect(calls.keys == ["TransOut/action/01", "TransOut/action/01", "TransOut/action/01", "TransIn/action/02"],
                    "\(calls)")
            for call in calls {
                #expect(call.headers["test_header"] == "yes", "\(call)")
                #expect(call.headers["x-trace-id"] == "trace-\(gid)", "\(call)")
            }
            if calls.count >= 3 {
                #expect(calls[1].t - calls[0].t >= 0.5, "the retry came from the cron after an interval")
            }
        }
    }
}
