import Foundation
import DtmTestSupport
import Testing
@testable import DtmEngine

private func workflowRequest(_ gid: String, proto: String = "", data: [UInt8] = Array("input".utf8),
                             query: String = "http://client/api/busi/workflow/resume") -> TransRequest {
    TransRequest(gid: gid, transType: "workflow", queryPrepared: query, transProtocol: proto,
                 customData: #"{"name":"wf_transfer","data":"\#(Data(data).base64EncodedString())"}"#)
}

@Suite("Workflow (spec 3.9, DTM workflow tests)")
struct WorkflowTests {
    @Test("prepareWorkflow creates a prepared row, returns no progress and processes nothing")
    func prepareNew() async throws {
        let h = Harness()
        await h.start()
        let progress = try await h.coordinator.prepareWorkflow(workflowRequest("wf-new"))
        #expect(progress.transaction.gid == "wf-new")
        #expect(progress.transaction.status == .prepared)
        #expect(progress.progresses.isEmpty)
        #expect(await h.process().isEmpty)
        #expect(await h.caller.seen.isEmpty)
    }

    @Test("prepareWorkflow again returns the stored row and its progresses, whatever the status")
    func prepareExisting() async throws {
        let h = Harness()
        _ = try await h.coordinator.prepareWorkflow(workflowRequest("wf-again"))
        try await h.coordinator.registerBranch(BranchRegistration(
            gid: "wf-again", transType: "workflow", branchID: "01",
            data: ["op": "action", "status": "succeed", "data": "step result"]))
        try await h.coordinator.registerBranch(BranchRegistration(
            gid: "wf-again", transType: "workflow", branchID: "02",
            data: ["op": "action", "status": "failed"], payload: Array("insufficient".utf8)))
        let progress = try await h.coordinator.prepareWorkflow(workflowRequest("wf-again"))
        #expect(progress.progresses.map(\.branchID) == ["01", "02"])
        #expect(progress.progresses.map(\.op) == [.action, .action])
        #expect(progress.progresses.map(\.status) == [.succeed, .failed])
        #expect(progress.progresses.map(\.binData) == [Array("step result".utf8), Array("insufficient".utf8)])
        #expect(progress.progresses.allSatisfy { $0.url.isEmpty })

        try await h.coordinator.submit(TransRequest(gid: "wf-again", transType: "workflow",
                                                    reqExtra: ["status": "failed", "rollback_reason": "insufficient"]))
        let finished = try await h.coordinator.prepareWorkflow(workflowRequest("wf-again"))
        #expect(finished.transaction.status == .failed)
        #expect(finished.transaction.rollbackReason == "insufficient")
    }

    @Test("TestWorkflowBranchConflict: the same (branch_id, op) twice is a storage error")
    func branchConflict() async throws {
        let h = Harness()
        _ = try await h.coordinator.prepareWorkflow(workflowRequest("wf-dup"))
        let registration = BranchRegistration(gid: "wf-dup", transType: "workflow", branchID: "01",
                                              data: ["op": "action", "status": "succeed"])
        try await h.coordinator.registerBranch(registration)
        let error = await caught { try await h.coordinator.registerBranch(registration) }
        guard case .storage(.uniqueConflict) = error else {
            Issue.record("expected a unique conflict, got \(String(describing: error))")
            return
        }
    }

    @Test("submit stores the client's final status, reason and result; then it is done")
    func submitFinal() async throws {
        let h = Harness()
        _ = try await h.coordinator.prepareWorkflow(workflowRequest("wf-done"))
        try await h.coordinator.submit(TransRequest(gid: "wf-done", transType: "workflow",
                                                    reqExtra: ["status": "succeed", "result": "cmV0"]))
        let stored = await h.global("wf-done")
        #expect(stored.status == .succeed)
        #expect(stored.result == "cmV0")
        #expect(stored.finishTime != nil)
        #expect(await h.process().isEmpty)
        // Again: the row is no longer prepared (DTM answers 500 here).
        let again = await caught {
            try await h.coordinator.submit(TransRequest(gid: "wf-done", transType: "workflow",
                                                        reqExtra: ["status": "succeed"]))
        }
        #expect(again == .storage(.notFound("no trans with gid: wf-done status: prepared found")))
    }

    @Test("submit needs req_extra.status succeed or failed", arguments: ["", "submitted", "bogus"])
    func submitStatusChecked(_ status: String) async throws {
        let h = Harness()
        _ = try await h.coordinator.prepareWorkflow(workflowRequest("wf-bad"))
        await expectError(.invalidArgument("req_extra.status: must be 'succeed' or 'failed', got '\(status)'")) {
            try await h.coordinator.submit(TransRequest(gid: "wf-bad", transType: "workflow",
                                                        reqExtra: ["status": status]))
        }
        #expect(await h.global("wf-bad").status == .prepared)
    }

    @Test("the cron resumes an unfinished workflow: branch 00, op = name, input as body",
          arguments: [("", Array("input".utf8)), ("grpc", [0x0A, 5] + Array("input".utf8))])
    func resume(proto: String, body: [UInt8]) async throws {
        let h = Harness()
        await h.start()
        _ = try await h.coordinator.prepareWorkflow(workflowRequest("wf-resume", proto: proto))
        #expect(await h.cron(after: 5).isEmpty)
        await h.caller.script("00", BranchOp("wf_transfer"), .error(message: "client down"))
        let reports = await h.cronWhenDue("wf-resume")
        #expect(launched(reports) == ["00/wf_transfer"])
        let call = try #require(await h.caller.seen.first)
        #expect(call == SeenCall(gid: "wf-resume", kind: .workflowResume, branchID: "00", op: "wf_transfer",
                                 url: "http://client/api/busi/workflow/resume", payload: body))
        // The answer changes nothing: the lease alone brings the next resume one RetryInterval later.
        let stored = await h.global("wf-resume")
        #expect(stored.status == .prepared)
        #expect(stored.nextCronInterval == 10)
        #expect(await h.nextCronOffset("wf-resume") == 10)
        #expect(launched(await h.cronWhenDue("wf-resume")) == ["00/wf_transfer"])
        #expect(await h.violations() == [])
    }

    @Test("resume payload: empty input stays empty, long input gets a multi-byte length")
    func resumePayload() {
        #expect(WorkflowCustomData(name: "n").resumePayload(for: .grpc) == [])
        let long = [UInt8](repeating: 1, count: 300)
        let encoded = WorkflowCustomData(name: "n", data: long).resumePayload(for: .grpc)
        #expect(Array(encoded.prefix(3)) == [0x0A, 0xAC, 0x02])
        #expect(encoded.count == 303)
    }
}
