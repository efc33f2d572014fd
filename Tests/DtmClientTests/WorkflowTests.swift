import DtmClient
import DtmSync
import Foundation
import Testing

/// Workflows run through the SDK: recorded branches, rollback on FAILURE, resume after a crash.
@Suite struct WorkflowTests {
    /// Two recorded branches succeed; the workflow's result comes back, and running the gid
    /// again returns the stored result without calling anything.
    @Test(arguments: Transport.allCases)
    func workflowSucceeds(_ transport: Transport) async throws {
        try await Fixture.with(transport, engine: patientEngine) { f in
            let name = "transfer-ok-\(transport)"
            try f.workflows.register(name) { wf, data in
                try wf.newBranch().onRollback { barrier in
                    _ = try await wf.client.callBranch(f.url("TransOutRevert"), payload: data, info: barrier.info)
                }
                try await wf.callBranch(f.url("TransOut"), payload: data)
                try wf.newBranch().onRollback { barrier in
                    _ = try await wf.client.callBranch(f.url("TransInRevert"), payload: data, info: barrier.info)
                }
                try await wf.callBranch(f.url("TransIn"), payload: data)
                return Array("done".utf8)
            }
            let gid = uniqueGid("wf-ok")
            let result = try await f.workflows.execute(name, gid: gid, data: f.payload())
            #expect(result == Array("done".utf8))
            #expect(try await f.global(gid)?.status == "succeed")
            #expect(try await f.bank.balances() == [70, 130])
            #expect(try await f.workflows.execute(name, gid: gid, data: f.payload()) == Array("done".utf8))
            #expect(f.bank.calls(gid) == ["TransOut/action", "TransIn/action"])
        }
    }

    /// The second branch answers FAILURE: the first branch's rollback runs, the workflow is
    /// failed, and running it again reports the FAILURE without calling anything.
    @Test(arguments: Transport.allCases)
    func workflowFailureRollsBack(_ transport: Transport) async throws {
        try await Fixture.with(transport, engine: patientEngine) { f in
            let name = "transfer-fail-\(transport)"
            try f.workflows.register(name) { wf, data in
                try wf.newBranch().onRollback { barrier in
                    _ = try await wf.client.callBranch(f.url("TransOutRevert"), payload: data, info: barrier.info)
                }
                try await wf.callBranch(f.url("TransOut"), payload: data)
                try wf.newBranch().onRollback { barrier in
                    _ = try await wf.client.callBranch(f.url("TransInRevert"), payload: data, info: barrier.info)
                }
                try await wf.callBranch(f.url("TransIn"), payload: data)
                return []
            }
            let gid = uniqueGid("wf-fail")
            let payload = f.payload(Transfer(transInResult: "FAILURE"))
            await #expect { try await f.workflows.execute(name, gid: gid, data: payload) } throws: {
                ($0 as? DtmClientError)?.isFailure == true
            }
            let stored = try #require(try await f.global(gid))
            #expect(stored.status == "failed")
            #expect(stored.rollbackReason.contains("insufficient balance"), "\(stored.rollbackReason)")
            #expect(try await f.bank.balances() == [100, 100])
            #expect(f.bank.calls(gid) == ["TransOut/action", "TransIn/action", "TransOutRevert/rollback"])
            await #expect { try await f.workflows.execute(name, gid: gid, data: payload) } throws: {
                ($0 as? DtmClientError)?.isFailure == true
            }
            #expect(f.bank.calls(gid).count == 3)
        }
    }

    /// The process "crashes" after the first branch (its second step throws an ordinary error):
    /// the workflow stays unfinished, the coordinator calls the resume callback, and the resumed
    /// run takes branch 1 from its record and finishes branch 2.
    @Test(arguments: Transport.allCases)
    func workflowResumesAfterCrash(_ transport: Transport) async throws {
        // The coordinator resumes after 10 s, not 1 s: a loaded machine must not let it resume
        // while the first run is still going (then branch 1 legitimately runs twice).
        try await Fixture.with(transport, engine: patientEngine) { f in
            let name = "transfer-resume-\(transport)"
            let crashes = Locked(1)
            try f.workflows.register(name) { wf, data in
                try wf.newBranch()
                try await wf.callBranch(f.url("TransOut"), payload: data)
                try wf.newBranch()
                let crash = crashes.withLock { count in
                    defer { count = max(0, count - 1) }
                    return count > 0
                }
                if crash { throw DtmClientError.transport("simulated crash") }
                try await wf.callBranch(f.url("TransIn"), payload: data)
                return []
            }
            let gid = uniqueGid("wf-resume")
            await #expect(throws: DtmClientError.transport("simulated crash")) {
                try await f.workflows.execute(name, gid: gid, data: f.payload())
            }
            #expect(try await f.global(gid)?.status == "prepared")
            #expect(try await f.waitFinal(gid, timeout: .seconds(90)).status == "succeed")
            #expect(try await f.bank.balances() == [70, 130])
            #expect(f.bank.calls(gid) == ["TransOut/action", "TransIn/action"], "branch 1 ran once")
        }
    }
}
