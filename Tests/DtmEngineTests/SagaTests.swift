import Foundation
import Testing
@testable import DtmEngine

/// A scripted answer: calls of (branch, op) get these results in turn, then success.
struct Answer: Sendable {
    var branchID: String
    var op: BranchOp
    var results: [BranchResult]

    init(_ branchID: String, _ op: BranchOp, _ results: BranchResult...) {
        self.branchID = branchID
        self.op = op
        self.results = results
    }
}

extension Harness {
    func script(_ answers: [Answer]) async {
        for answer in answers {
            for result in answer.results { await caller.script(answer.branchID, answer.op, result) }
        }
    }
}

private let p = BranchStatus.prepared
private let s = BranchStatus.succeed
private let f = BranchStatus.failed
private let boom = BranchResult.failure(message: "reason:Insufficient balance")
private let err = BranchResult.error(message: "connection refused")

struct SagaCase: Sendable, CustomTestStringConvertible {
    var name: String
    var steps = 2
    var customData = ""
    var options = TransOptions()
    var answers: [Answer] = []
    /// Launched calls of the submit pass, in launch order.
    var calls: [String]
    var status: GlobalStatus
    var branches: [BranchStatus]
    var reason = ""
    /// Optional next cron pass (when due): its calls, final status and branches.
    var cronCalls: [String]?
    var cronStatus: GlobalStatus?
    var cronBranches: [BranchStatus]?
    var testDescription: String { name }
}

@Suite("Saga processing (spec 3.4, DTM saga tests)")
struct SagaTests {
    static let concurrent = #"{"concurrent":true}"#
    static let order10 = #"{"orders":{"1":[0]},"concurrent":true}"#

    static let cases: [SagaCase] = [
        SagaCase(name: "TestSagaNormal", calls: ["01/action", "02/action"], status: .succeed, branches: [p, s, p, s]),
        SagaCase(name: "TestSagaRollback: step 2 FAILURE", answers: [Answer("02", .action, boom)],
                 calls: ["01/action", "02/action", "02/compensate", "01/compensate"], status: .failed,
                 branches: [s, s, s, f],
                 reason: "url:http://busi/a2 return failed: reason:Insufficient balance FAILURE"),
        SagaCase(name: "step 1 FAILURE compensates step 1 only", answers: [Answer("01", .action, boom)],
                 calls: ["01/action", "01/compensate"], status: .failed, branches: [s, f, p, p],
                 reason: "url:http://busi/a1 return failed: reason:Insufficient balance FAILURE"),
        SagaCase(name: "4 steps, last fails: compensation in reverse", steps: 4, answers: [Answer("04", .action, boom)],
                 calls: ["01/action", "02/action", "03/action", "04/action",
                         "04/compensate", "03/compensate", "02/compensate", "01/compensate"],
                 status: .failed, branches: [s, s, s, s, s, s, s, f],
                 reason: "url:http://busi/a4 return failed: reason:Insufficient balance FAILURE"),
        SagaCase(name: "TestSagaOngoingSucceed", answers: [Answer("01", .action, .ongoing)],
                 calls: ["01/action"], status: .submitted, branches: [p, p, p, p],
                 cronCalls: ["01/action", "02/action"], cronStatus: .succeed, cronBranches: [p, s, p, s]),
        SagaCase(name: "action error retried by the cron", answers: [Answer("02", .action, err)],
                 calls: ["01/action", "02/action"], status: .submitted, branches: [p, s, p, p],
                 cronCalls: ["02/action"], cronStatus: .succeed, cronBranches: [p, s, p, s]),
        SagaCase(name: "TestSagaFailed: compensate error stays aborting",
                 answers: [Answer("02", .action, boom), Answer("01", .compensate, err)],
                 calls: ["01/action", "02/action", "02/compensate", "01/compensate"], status: .aborting,
                 branches: [p, s, s, f], reason: "url:http://busi/a2 return failed: reason:Insufficient balance FAILURE",
                 cronCalls: ["01/compensate"], cronStatus: .failed, cronBranches: [s, s, s, f]),
        SagaCase(name: "compensate FAILURE is retried, not final",
                 answers: [Answer("01", .action, boom), Answer("01", .compensate, .failure(message: "no"))],
                 calls: ["01/action", "01/compensate"], status: .aborting, branches: [p, f, p, p],
                 reason: "url:http://busi/a1 return failed: reason:Insufficient balance FAILURE",
                 cronCalls: ["01/compensate"], cronStatus: .failed, cronBranches: [s, f, p, p]),
        SagaCase(name: "TestSagaGlobalTransWithRetryLimitYes", options: TransOptions(retryLimit: 3),
                 answers: [Answer("02", .action, err, err, err)],
                 calls: ["01/action", "02/action", "02/action", "02/action", "02/action"], status: .succeed,
                 branches: [p, s, p, s]),
        SagaCase(name: "TestSagaGlobalTransWithRetryLimitNo", options: TransOptions(retryLimit: 1),
                 answers: [Answer("02", .action, err, err, err)],
                 calls: ["01/action", "02/action", "02/action", "02/compensate", "01/compensate"], status: .failed,
                 branches: [s, s, s, p], reason: "RetryCount is greater than RetryLimit, RetryLimit: 1"),
        SagaCase(name: "retry_limit counts ONGOING too", options: TransOptions(retryLimit: 1),
                 answers: [Answer("01", .action, .ongoing, .ongoing)],
                 calls: ["01/action", "01/action", "01/compensate"], status: .failed, branches: [s, p, p, p],
                 reason: "RetryCount is greater than RetryLimit, RetryLimit: 1"),
        SagaCase(name: "TestSagaConNormal", customData: concurrent, calls: ["01/action", "02/action"],
                 status: .succeed, branches: [p, s, p, s]),
        SagaCase(name: "TestSagaConRollbackOrder", customData: order10, answers: [Answer("01", .action, boom)],
                 calls: ["01/action", "01/compensate"], status: .failed, branches: [s, f, p, p],
                 reason: "url:http://busi/a1 return failed: reason:Insufficient balance FAILURE"),
        SagaCase(name: "TestSagaConRollbackOrder2", customData: order10, answers: [Answer("02", .action, boom)],
                 calls: ["01/action", "02/action", "02/compensate", "01/compensate"], status: .failed,
                 branches: [s, s, s, f],
                 reason: "url:http://busi/a2 return failed: reason:Insufficient balance FAILURE"),
        SagaCase(name: "TestSagaConRollbackNormal", customData: concurrent,
                 answers: [Answer("01", .action, boom), Answer("01", .compensate, .ongoing)],
                 calls: ["01/action", "02/action", "02/compensate", "01/compensate"], status: .aborting,
                 branches: [p, f, s, s], reason: "url:http://busi/a1 return failed: reason:Insufficient balance FAILURE",
                 cronCalls: ["01/compensate"], cronStatus: .failed, cronBranches: [s, f, s, s]),
        SagaCase(name: "TestSagaConCommittedOngoing", customData: concurrent, answers: [Answer("01", .action, .ongoing)],
                 calls: ["01/action", "02/action"], status: .submitted, branches: [p, p, p, s],
                 cronCalls: ["01/action"], cronStatus: .succeed, cronBranches: [p, s, p, s]),
        // Step 3 became runnable once step 2 succeeded: never started after the failure, but
        // presumed possibly run (as DTM) and compensated before step 2.
        SagaCase(name: "concurrent: no new action after a failure", steps: 3,
                 customData: #"{"orders":{"2":[1]},"concurrent":true}"#, answers: [Answer("01", .action, boom)],
                 calls: ["01/action", "02/action", "03/compensate", "01/compensate", "02/compensate"],
                 status: .failed, branches: [s, f, s, s, s, p],
                 reason: "url:http://busi/a1 return failed: reason:Insufficient balance FAILURE"),
        SagaCase(name: "concurrent orders chain: 0 → 1 → 2", steps: 3,
                 customData: #"{"orders":{"1":[0],"2":[1]},"concurrent":true}"#,
                 calls: ["01/action", "02/action", "03/action"], status: .succeed, branches: [p, s, p, s, p, s]),
        SagaCase(name: "no steps succeeds at once", steps: 0, calls: [], status: .succeed, branches: []),
    ]

    @Test(arguments: cases)
    func submitPass(_ c: SagaCase) async throws {
        let h = Harness()
        await h.start()
        await h.script(c.answers)
        let gid = "saga-" + c.name.replacingOccurrences(of: " ", with: "_")
        try await h.coordinator.submit(sagaRequest(gid, steps: c.steps, customData: c.customData, options: c.options))
        let reports = await h.process()
        #expect(launched(reports) == c.calls)
        #expect(await h.global(gid).status == c.status)
        #expect(await h.statuses(gid) == c.branches)
        #expect(await h.global(gid).rollbackReason == c.reason)
        if let cronCalls = c.cronCalls {
            let again = await h.cronWhenDue(gid)
            #expect(launched(again) == cronCalls)
            #expect(await h.global(gid).status == c.cronStatus)
            #expect(await h.statuses(gid) == c.cronBranches)
        }
        #expect(await h.violations() == [])
        // Every launched call with a URL reached the transport, and nothing else did.
        #expect(await h.caller.seen.count == launched(reports).count + (c.cronCalls?.count ?? 0))
    }

    @Test("TestSagaEmptyUrl: an empty action URL succeeds without a call")
    func emptyURL() async throws {
        let h = Harness()
        await h.start()
        var request = sagaRequest("empty", steps: 2)
        request.steps[1] = ["action": "", "compensate": ""]
        try await h.coordinator.submit(request)
        await h.process()
        #expect(await h.log() == ["01/action"])
        #expect(await h.statuses("empty") == [p, s, p, s])
        #expect(await h.global("empty").status == .succeed)
    }

    @Test("TestSagaOptionsTimeout: ONGOING then timeout compensates the maybe-run step")
    func timeout() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("to", options: TransOptions(timeoutToFail: 1800)))
        await h.process()
        #expect(await h.global("to").status == .submitted)
        let reports = await h.cron(after: 3600)
        #expect(launched(reports) == ["01/compensate"])
        #expect(await h.global("to").status == .failed)
        #expect(await h.statuses("to") == [s, p, p, p])
        #expect(await h.global("to").rollbackReason == "Timeout after 1800 seconds")
        #expect(await h.violations() == [])
    }

    @Test("saga has no default timeout: a day later it still retries forward")
    func noDefaultTimeout() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("forever"))
        await h.process()
        let reports = await h.cron(after: 86_400)
        #expect(launched(reports) == ["01/action", "02/action"])
        #expect(await h.global("forever").status == .succeed)
    }

    @Test("TestSagaOptionsRetryError: error doubles retry_interval beyond a cron window")
    func retryErrorBackoff() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, err)
        try await h.coordinator.submit(sagaRequest("backoff", steps: 1, options: TransOptions(retryInterval: 150)))
        await h.process()
        let stored = await h.global("backoff")
        #expect(stored.nextCronInterval == 300)
        #expect(stored.nextCronTime == stored.createTime.addingTimeInterval(300))
        #expect(await h.cron(after: 180).isEmpty)
        #expect(launched(await h.cron(after: 120)) == ["01/action"])
        #expect(await h.global("backoff").status == .succeed)
        #expect(await h.statuses("backoff") == [p, s])
    }

    @Test("TestSagaOptionsRetryOngoing: ONGOING keeps retry_interval")
    func retryOngoing() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("keep", steps: 1, options: TransOptions(retryInterval: 150)))
        await h.process()
        #expect(await h.global("keep").nextCronInterval == 150)
        #expect(await h.nextCronOffset("keep") == 150)
        await h.cronWhenDue("keep")
        #expect(await h.global("keep").status == .succeed)
    }

    @Test("consecutive errors double the interval each pass; progress resets it")
    func backoffAcrossPasses() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, err, err, err)
        await h.caller.script("02", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("doubling"))
        await h.process()
        var intervals = [await h.global("doubling").nextCronInterval]
        for _ in 0..<2 {
            await h.cronWhenDue("doubling")
            intervals.append(await h.global("doubling").nextCronInterval)
        }
        #expect(intervals == [20, 40, 80])
        #expect(await h.nextCronOffset("doubling") == 80)
        // Step 1 succeeds (interval 80 > RetryInterval: reset to 10), step 2 is ONGOING (kept).
        await h.cronWhenDue("doubling")
        #expect(await h.global("doubling").nextCronInterval == 10)
        #expect(await h.nextCronOffset("doubling") == 10)
        #expect(await h.statuses("doubling") == [p, s, p, p])
    }

    @Test("a pass starts nothing new after RequestTimeout + 2 s; the cron continues")
    func passTimeLimit() async throws {
        let h = Harness()
        await h.start()
        let clock = h.clock
        await h.caller.onCall { _, _ in clock.advance(2) }
        try await h.coordinator.submit(sagaRequest("slow", steps: 4))
        #expect(launched(await h.process()) == ["01/action", "02/action", "03/action"])
        #expect(await h.global("slow").status == .submitted)
        // Progress after more than 1.5 s resets the schedule: next look one interval after the last success.
        #expect(await h.nextCronOffset("slow") == 10)
        #expect(launched(await h.cronWhenDue("slow")) == ["04/action"])
        #expect(await h.global("slow").status == .succeed)
    }

    @Test("cron lease: a claimed transaction is not due again for RetryInterval")
    func leaseOnClaim() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing, .ongoing)
        try await h.coordinator.submit(sagaRequest("lease"))
        await h.process()
        await h.cronWhenDue("lease")
        let stored = await h.global("lease")
        #expect(stored.owner == "test-owner")
        #expect(await h.nextCronOffset("lease") == 10)
        #expect(await h.cron(after: 9).isEmpty)
    }
}
