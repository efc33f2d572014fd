import DtmEngine
import DtmGRPC
import DtmNet
import DtmProto
@testable import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Testing

/// Workflow mode driven by a client as DTM's workflow SDK drives it: prepareWorkflow, one
/// registerBranch per finished step, submit with req_extra — and the coordinator's retry
/// loop calling the client back to resume an unfinished one.
@Suite struct ClientDrivenWorkflowTests {
    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    static func prepareBody(_ gid: String, callback: String, retryInterval: Int = 60) -> String {
        #"{"gid":"\#(gid)","trans_type":"workflow","query_prepared":"\#(callback)","custom_data":"{\"name\":\"transfer\",\"data\":\"\#(base64("input"))\"}","retry_interval":\#(retryInterval)}"#
    }

    static func step(_ gid: String, _ branch: String, _ op: String, _ status: String, _ data: String) -> String {
        #"{"gid":"\#(gid)","trans_type":"workflow","branch_id":"\#(branch)","op":"\#(op)","status":"\#(status)","data":"\#(data)"}"#
    }

    static func finish(_ gid: String, _ status: String, reason: String = "", result: String = "") -> String {
        #"{"gid":"\#(gid)","trans_type":"workflow","req_extra":{"status":"\#(status)","rollback_reason":"\#(reason)","result":"\#(result)"}}"#
    }

    /// Both steps succeed; the stored result is what a repeated prepareWorkflow returns.
    @Test func workflowSucceeds() async throws {
        try await withCoordinator { _, api in
            let created = try await api.post("/api/dtmsvr/prepareWorkflow", Self.prepareBody("w1", callback: "http://127.0.0.1:9/wf"))
            #expect(created.status == 200, "\(created)")
            #expect((created.json["transaction"] as? [String: Any])?["status"] as? String == "prepared")
            #expect(try await api.post("/api/dtmsvr/registerBranch", Self.step("w1", "01", "action", "succeed", "r1")).status == 200)
            #expect(try await api.post("/api/dtmsvr/registerBranch", Self.step("w1", "02", "action", "succeed", "r2")).status == 200)

            let resumed = try await api.post("/api/dtmsvr/prepareWorkflow", Self.prepareBody("w1", callback: "http://127.0.0.1:9/wf")).json
            let progresses = try #require(resumed["progresses"] as? [[String: Any]])
            #expect(progresses.map { $0["branch_id"] as? String } == ["01", "02"])
            #expect(progresses.map { $0["bin_data"] as? String } == [Self.base64("r1"), Self.base64("r2")])
            #expect(progresses.allSatisfy { $0["op"] as? String == "action" && $0["status"] as? String == "succeed" })

            let result = Self.base64("done")
            #expect(try await api.post("/api/dtmsvr/submit", Self.finish("w1", "succeed", result: result)).text
                    == #"{"dtm_result":"SUCCESS"}"#)
            let (global, _) = try await api.query("w1")
            #expect(global["status"] as? String == "succeed" && global["result"] as? String == result)
            #expect(global["finish_time"] != nil)
            let again = try await api.post("/api/dtmsvr/prepareWorkflow", Self.prepareBody("w1", callback: "http://127.0.0.1:9/wf")).json
            #expect((again["transaction"] as? [String: Any])?["result"] as? String == result)
            let late = try await api.post("/api/dtmsvr/submit", Self.finish("w1", "succeed"))
            // As DTM (whose handler panics here): 500, and nothing changes.
            #expect(late.status == 500, "a finished workflow is not submitted twice: \(late)")
        }
    }

    /// Step 2 fails; the client rolls step 1 back and submits `failed` with the reason.
    @Test func workflowFailsAndRollsBack() async throws {
        try await withCoordinator { _, api in
            #expect(try await api.post("/api/dtmsvr/prepareWorkflow", Self.prepareBody("w2", callback: "http://127.0.0.1:9/wf")).status == 200)
            #expect(try await api.post("/api/dtmsvr/registerBranch", Self.step("w2", "01", "action", "succeed", "")).status == 200)
            #expect(try await api.post("/api/dtmsvr/registerBranch", Self.step("w2", "02", "action", "failed", "insufficient balance")).status == 200)
            #expect(try await api.post("/api/dtmsvr/registerBranch", Self.step("w2", "01", "rollback", "succeed", "")).status == 200)
            #expect(try await api.post("/api/dtmsvr/submit", Self.finish("w2", "failed", reason: "insufficient balance")).status == 200)

            let (global, branches) = try await api.query("w2")
            #expect(global["status"] as? String == "failed")
            #expect(global["rollback_reason"] as? String == "insufficient balance")
            #expect(global["rollback_time"] != nil)
            #expect(branches.map { "\($0["branch_id"] ?? "")-\($0["op"] ?? "")-\($0["status"] ?? "")" }
                    == ["01-action-succeed", "02-action-failed", "01-rollback-succeed"])
            let late = try await api.post("/api/dtmsvr/registerBranch", Self.step("w2", "03", "action", "succeed", ""))
            #expect(late.status == 409 && late.json["dtm_result"] as? String == "FAILURE")
        }
    }

    /// The client stops after step 1 and the coordinator restarts; the restarted retry loop
    /// calls the workflow's callback, and the client resumes: step 1 is skipped, step 2 runs.
    @Test func workflowResumedAfterRestart() async throws {
        try await withStarted(await SQLiteStoreForTests.open()) { database in
            actor Current { var api: API?; func set(_ value: API) { api = value } }
            let current = Current()
            actor Resumes { var count = 0; func add() { count += 1 } }
            let resumes = Resumes()
            let handle: @Sendable (TestBusi.Received) async -> (Int, String) = { request in
                guard request.path == "/wf", let api = await current.api else { return (404, "{}") }
                await resumes.add()
                do {
                    // The workflow SDK's replay: skip what is recorded, run the rest, submit.
                    let body = Self.prepareBody(request.query["gid"] ?? "", callback: "")
                    let progresses = try await api.post("/api/dtmsvr/prepareWorkflow", body).json["progresses"] as? [[String: Any]] ?? []
                    let done = Set(progresses.map { "\($0["branch_id"] ?? "")-\($0["op"] ?? "")" })
                    for branch in ["01", "02"] where !done.contains("\(branch)-action") {
                        _ = try await api.post("/api/dtmsvr/registerBranch", Self.step("w3", branch, "action", "succeed", "resumed"))
                    }
                    _ = try await api.post("/api/dtmsvr/submit", Self.finish("w3", "succeed", result: Self.base64("ok")))
                    return (200, #"{"dtm_result":"SUCCESS"}"#)
                } catch {
                    return (500, "{}")
                }
            }
            try await withStarted(await TestBusi(handle)) { busi in
                // The first coordinator's retry loop looks once when it starts and then sleeps an
                // hour: however slow this run, it cannot resume w3 before the restart.
                var idle = quickEngine
                idle.transCronInterval = 3600
                try await withCoordinator(store: database.store, caller: nil, engine: idle) { _, api async throws in
                    #expect(try await api.post("/api/dtmsvr/prepareWorkflow", Self.prepareBody("w3", callback: busi.url("/wf"), retryInterval: 2)).status == 200)
                    #expect(try await api.post("/api/dtmsvr/registerBranch", Self.step("w3", "01", "action", "succeed", "first run")).status == 200)
                }

                try await withCoordinator(store: database.store, caller: nil) { _, api in
                    await current.set(api)
                    try await api.waitFor("w3", status: "succeed")
                }

                // The callback may be called more than once (at-least-once: a call cut off on a
                // slow machine is retried), and the SDK's replay makes that harmless. What must
                // hold: the restarted coordinator called it, every call was the resume call, and
                // step 1 ran once, before the restart.
                let calls = await busi.requests("/wf")
                #expect(await resumes.count >= 1, "the restarted coordinator resumed the workflow")
                #expect(!calls.isEmpty)
                for call in calls {
                    #expect(call.method == "POST" && String(decoding: call.body, as: UTF8.self) == "input")
                    #expect(call.query["op"] == "transfer" && call.query["branch_id"] == "00" && call.query["trans_type"] == "workflow")
                }
            }
            let (global, branches) = try await withCoordinator(store: database.store) { _, api in try await api.query("w3") }
            #expect(global["status"] as? String == "succeed" && global["result"] as? String == Self.base64("ok"))
            #expect(branches.map { $0["bin_data"] as? String } == [Self.base64("first run"), Self.base64("resumed")])
        }
    }

    /// The same over gRPC: PrepareWorkflow returns the stored progress, and the retry loop
    /// resumes the workflow through `workflow.Workflow/Execute` with the input as WorkflowData.
    @Test func grpcWorkflowResumedThroughCallback() async throws {
        let executed = AsyncStream.makeStream(of: GRPCRequest.self)
        var router = GRPCRouter()
        router.register(service: "workflow.Workflow", method: "Execute", .sync { request throws(RPCError) in
            executed.continuation.yield(request)
            return GRPCResponse(message: [])
        })
        try await withStarted(await GRPCServer.start(host: "127.0.0.1", port: 0, router: router)) { callback in
        try await withCoordinator(caller: nil) { coordinator, api in try await withGRPCClient(coordinator) { client, target in
            let prepare = DtmRequest(gid: "g1", transType: "workflow", transOptions: DtmTransOptions(retryInterval: 1),
                                     customedData: #"{"name":"pay","data":"\#(Self.base64("x"))"}"#,
                                     queryPrepared: "127.0.0.1:\(callback.port)/workflow.Workflow/Execute")
            let created = try DtmProgressesReply(decoding: try await client.unary(
                target: target, path: "/dtmgimp.Dtm/PrepareWorkflow", message: prepare.encode(), timeout: .seconds(30)).message)
            #expect(created.transaction?.status == "prepared" && created.progresses.isEmpty)
            let branch = DtmBranchRequest(gid: "g1", transType: "workflow", branchID: "01",
                                          data: ["op": "action", "status": "succeed"], busiPayload: [1, 2])
            _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/RegisterBranch", message: branch.encode(),
                                       timeout: .seconds(30))
            let stored = try DtmProgressesReply(decoding: try await client.unary(
                target: target, path: "/dtmgimp.Dtm/PrepareWorkflow", message: prepare.encode(), timeout: .seconds(30)).message)
            #expect(stored.progresses == [DtmProgress(status: "succeed", binData: [1, 2], branchID: "01", op: "action")])

            var calls = executed.stream.makeAsyncIterator()
            let resume = try #require(await calls.next())
            #expect(try WorkflowData(decoding: resume.message).data == Array("x".utf8))
            #expect(resume.metadata["dtm-op"] == "pay" && resume.metadata["dtm-branch_id"] == "00")
            let submit = DtmRequest(gid: "g1", transType: "workflow", reqExtra: ["status": "succeed", "result": Self.base64("r")])
            _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/Submit", message: submit.encode(), timeout: .seconds(30))

            let (global, branches) = try await api.query("g1")
            #expect(global["status"] as? String == "succeed" && global["protocol"] as? String == "grpc")
            #expect(branches.first?["bin_data"] as? String == Data([1, 2]).base64EncodedString())
        } }
        }
    }
}
