import Foundation
import DtmTestSupport
import Testing
@testable import DtmEngine

private let p = BranchStatus.prepared
private let s = BranchStatus.succeed

extension Harness {
    /// Stores a transaction in a given state directly (no branches).
    func seed(_ gid: String, _ type: TransType, _ status: GlobalStatus) async throws {
        let global = GlobalTransaction(gid: gid, transType: type, status: status, createTime: clock.now(),
                                       nextCronInterval: 10, nextCronTime: clock.now().addingTimeInterval(10))
        _ = try await store.saveNew(global, branches: [])
    }
}

struct IdempotencyCase: Sendable, CustomTestStringConvertible {
    enum Call: String, Sendable { case prepare, submit, abort }
    var call: Call
    var stored: (TransType, GlobalStatus)?
    var requestType: TransType
    var error: DtmError?
    /// Status after the call and one background round.
    var after: GlobalStatus?
    var testDescription: String {
        "\(call) \(requestType) over \(stored.map { "\($0.0) \($0.1)" } ?? "nothing")"
    }
}

@Suite("Coordinator operations: idempotency (spec 6.4), wait_result (5.6), validation")
struct CoordinatorTests {
    static let idempotencyCases: [IdempotencyCase] = {
        var cases: [IdempotencyCase] = [
            .init(call: .prepare, stored: nil, requestType: .msg, after: .prepared),
            .init(call: .prepare, stored: (.msg, .prepared), requestType: .msg, after: .prepared),
            .init(call: .submit, stored: nil, requestType: .saga, after: .succeed),
            .init(call: .submit, stored: (.msg, .prepared), requestType: .msg, after: .succeed),
            .init(call: .submit, stored: (.tcc, .prepared), requestType: .tcc, after: .succeed),
            .init(call: .submit, stored: (.saga, .submitted), requestType: .saga, after: .succeed),
            .init(call: .abort, stored: (.msg, .prepared), requestType: .msg, after: .failed),
            .init(call: .abort, stored: (.tcc, .prepared), requestType: .tcc, after: .failed),
            .init(call: .abort, stored: (.tcc, .aborting), requestType: .tcc, after: .failed),
            .init(call: .abort, stored: (.xa, .prepared), requestType: .xa, after: .failed),
            .init(call: .abort, stored: nil, requestType: .tcc, error: .notFound("no TransGlobal with gid: idem found")),
        ]
        for status in [GlobalStatus.submitted, .aborting, .succeed, .failed] {
            cases.append(.init(call: .prepare, stored: (.msg, status), requestType: .msg,
                               error: .failure("current status '\(status.rawValue)', cannot prepare. FAILURE"),
                               after: status))
        }
        for status in [GlobalStatus.aborting, .succeed, .failed] {
            cases.append(.init(call: .submit, stored: (.saga, status), requestType: .saga,
                               error: .failure("current status '\(status.rawValue)', cannot sumbmit. FAILURE"),
                               after: status))
        }
        let refusedAborts: [(TransType, GlobalStatus, TransType)] = [
            (.saga, .submitted, .saga), (.tcc, .submitted, .tcc), (.tcc, .succeed, .tcc), (.xa, .failed, .xa),
            (.msg, .submitted, .msg), (.tcc, .prepared, .saga),
        ]
        for (type, status, requestType) in refusedAborts {
            cases.append(.init(call: .abort, stored: (type, status), requestType: requestType,
                               error: .failure("trans type: '\(type.rawValue)' current status '\(status.rawValue)', "
                                               + "cannot abort. FAILURE"),
                               after: status))
        }
        return cases
    }()

    @Test(arguments: idempotencyCases)
    func idempotency(_ c: IdempotencyCase) async throws {
        let h = Harness()
        await h.start()
        if let (type, status) = c.stored { try await h.seed("idem", type, status) }
        let request = c.requestType == .saga ? sagaRequest("idem")
            : c.requestType == .msg ? msgRequest("idem") : TransRequest(gid: "idem", transType: c.requestType.rawValue)
        let error = await caught {
            switch c.call {
            case .prepare: try await h.coordinator.prepare(request)
            case .submit: try await h.coordinator.submit(request)
            case .abort: try await h.coordinator.abort(request)
            }
        }
        #expect(error == c.error)
        await h.process()
        #expect(await h.store.findGlobal(gid: "idem")?.status == c.after)
        #expect(await h.violations() == [])
    }

    @Test("submit of a prepared msg calls the stored branches, not the request's steps")
    func submitPreparedUsesStoredBranches() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("stored", steps: 2))
        try await h.coordinator.submit(msgRequest("stored", steps: 3))
        #expect(launched(await h.process()) == ["01/action", "02/action"])
        #expect(await h.statuses("stored") == [s, s])
    }

    @Test("TestSagaAbnormal: resubmit while submitted processes again; after success it is refused")
    func resubmit() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("again"))
        #expect(launched(await h.process()) == ["01/action"])
        try await h.coordinator.submit(sagaRequest("again"))
        #expect(launched(await h.process()) == ["01/action", "02/action"])
        #expect(await h.store.findBranches(gid: "again").count == 4)
        await expectError(.failure("current status 'succeed', cannot sumbmit. FAILURE")) {
            try await h.coordinator.submit(sagaRequest("again"))
        }
    }

    @Test("a request-path pass holds a lease: moving to submitted pushes next_cron_time")
    func submitLease() async throws {
        let h = Harness()
        try await h.coordinator.prepare(TransRequest(gid: "leased", transType: "tcc"))
        h.clock.advance(30)
        try await h.coordinator.submit(TransRequest(gid: "leased", transType: "tcc"))
        #expect(await h.nextCronOffset("leased") == 10)
    }

    // MARK: wait_result

    struct WaitCase: Sendable, CustomTestStringConvertible {
        var name: String
        var request: TransRequest
        var prepareTcc = false
        var answers: [Answer] = []
        var error: DtmError?
        var status: GlobalStatus
        var testDescription: String { name }
    }

    static let wait = TransOptions(waitResult: true)
    static let waitCases: [WaitCase] = [
        WaitCase(name: "TestSagaOptionsNormalWait", request: sagaRequest("w", options: wait), status: .succeed),
        WaitCase(name: "TestSagaOptionsRollbackWait", request: sagaRequest("w", options: wait),
                 answers: [Answer("02", .action, .failure(message: "reason:Insufficient balance"))],
                 error: .failure("url:http://busi/a2 return failed: reason:Insufficient balance FAILURE"),
                 status: .failed),
        WaitCase(name: "TestSagaOptionsCommittedOngoingWait", request: sagaRequest("w", options: wait),
                 answers: [Answer("01", .action, .ongoing)],
                 error: .failure("wait result not return success: FAILURE"), status: .submitted),
        WaitCase(name: "retry limit with wait",
                 request: sagaRequest("w", options: TransOptions(waitResult: true, retryLimit: 1)),
                 answers: [Answer("01", .action, .error(message: "x"), .error(message: "x"))],
                 error: .failure("RetryCount is greater than RetryLimit, RetryLimit: 1 FAILURE"), status: .failed),
        WaitCase(name: "tcc confirm ONGOING → ONGOING", request: TransRequest(gid: "w", transType: "tcc", options: wait),
                 prepareTcc: true, answers: [Answer("01", .confirm, .ongoing)], error: .ongoing("ONGOING"),
                 status: .submitted),
        WaitCase(name: "tcc confirm error → internal", request: TransRequest(gid: "w", transType: "tcc", options: wait),
                 prepareTcc: true, answers: [Answer("01", .confirm, .error(message: "boom"))],
                 error: .internal(DtmText.willRetry("boom")), status: .submitted),
        WaitCase(name: "tcc confirm FAILURE → failure", request: TransRequest(gid: "w", transType: "tcc", options: wait),
                 prepareTcc: true, answers: [Answer("01", .confirm, .failure(message: "no"))],
                 error: .failure(DtmText.willRetry("no FAILURE")), status: .submitted),
        WaitCase(name: "tcc confirms → success", request: TransRequest(gid: "w", transType: "tcc", options: wait),
                 prepareTcc: true, status: .succeed),
        WaitCase(name: "msg action ONGOING → not success", request: msgRequest("w", options: wait),
                 answers: [Answer("01", .action, .ongoing)],
                 error: .failure("wait result not return success: FAILURE"), status: .submitted),
        WaitCase(name: "msg action error → internal", request: msgRequest("w", options: wait),
                 answers: [Answer("02", .action, .error(message: "503"))],
                 error: .internal(DtmText.willRetry("503")), status: .submitted),
    ]

    @Test(arguments: waitCases)
    func waitResult(_ c: WaitCase) async throws {
        let h = Harness()
        await h.start()
        if c.prepareTcc { try await h.prepareTcc("w", branches: 1) }
        await h.script(c.answers)
        let error = await caught { try await h.coordinator.submit(c.request) }
        #expect(error == c.error)
        // Processed inside the request: final state is visible at once, nothing was queued.
        #expect(await h.global("w").status == c.status)
        #expect(await h.cron.runOnce().isEmpty)
    }

    @Test("abort with wait_result: cancels run inside the request; ONGOING is reported")
    func abortWait() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareTcc("aw", branches: 2)
        try await h.coordinator.abort(TransRequest(gid: "aw", transType: "tcc", options: Self.wait))
        #expect(await h.global("aw").status == .failed)
        try await h.prepareTcc("aw2", branches: 2)
        await h.caller.script("01", .cancel, .ongoing)
        await expectError(.ongoing("ONGOING")) {
            try await h.coordinator.abort(TransRequest(gid: "aw2", transType: "tcc", options: Self.wait))
        }
        #expect(await h.global("aw2").status == .aborting)
    }

    // MARK: forceStop, registerBranch, resetNextCronTime

    @Test("TestAPIForceStoppedNormal: a running saga becomes failed and nothing is compensated")
    func forceStop() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .ongoing)
        try await h.coordinator.submit(sagaRequest("fs"))
        await h.process()
        try await h.coordinator.forceStop(gid: "fs")
        let stored = await h.global("fs")
        #expect(stored.status == .failed)
        #expect(stored.rollbackTime != nil)
        #expect(await h.cron(after: 1000).isEmpty)
        #expect(await h.log() == ["01/action"])
    }

    @Test("TestAPIForceStoppedAbnormal: a finished transaction cannot be stopped; unknown gid")
    func forceStopRefused() async throws {
        let h = Harness()
        try await h.seed("done", .saga, .succeed)
        await expectError(.failure("global transaction force stop error. status: succeed. error: FAILURE")) {
            try await h.coordinator.forceStop(gid: "done")
        }
        await expectError(.notFound("no TransGlobal with gid: nope found")) {
            try await h.coordinator.forceStop(gid: "nope")
        }
    }

    @Test("registerBranch needs a prepared transaction")
    func registerNeedsPrepared() async throws {
        let h = Harness()
        try await h.seed("sub", .tcc, .submitted)
        let registration = { (gid: String) in
            BranchRegistration(gid: gid, transType: "tcc", branchID: "01", data: ["confirm": "http://busi/c", "cancel": "http://busi/x"])
        }
        await expectError(.failure("no trans with gid: sub status: prepared found FAILURE")) {
            try await h.coordinator.registerBranch(registration("sub"))
        }
        await expectError(.failure("no trans with gid: missing status: prepared found FAILURE")) {
            try await h.coordinator.registerBranch(registration("missing"))
        }
        #expect(await h.statuses("sub") == [])
        try await h.seed("prep", .tcc, .prepared)
        try await h.coordinator.registerBranch(registration("prep"))
        await expectError(.storage(.uniqueConflict("duplicate branch prep/01/cancel"))) {
            try await h.coordinator.registerBranch(registration("prep"))
        }
        #expect(await h.statuses("prep") == [p, p])
    }

    @Test("resetNextCronTime makes a transaction due now")
    func resetNextCronTime() async throws {
        let h = Harness()
        try await h.seed("r", .saga, .submitted)
        h.clock.advance(3)
        try await h.coordinator.resetNextCronTime(gid: "r")
        #expect(await h.global("r").nextCronTime == h.clock.now())
        await expectError(.notFound("no TransGlobal with gid: zz found")) {
            try await h.coordinator.resetNextCronTime(gid: "zz")
        }
    }

    @Test("new transactions start with the reset interval and a matching next_cron_time")
    func creationSchedule() async throws {
        let h = Harness()
        try await h.coordinator.prepare(TransRequest(gid: "c1", transType: "tcc"))
        try await h.coordinator.prepare(TransRequest(gid: "c2", transType: "tcc",
                                                     options: TransOptions(retryInterval: 30)))
        #expect(await h.global("c1").nextCronInterval == 10)
        #expect(await h.nextCronOffset("c1") == 10)
        #expect(await h.global("c2").nextCronInterval == 30)
        #expect(await h.nextCronOffset("c2") == 30)
        let saved = await h.global("c2")
        #expect(saved.transProtocol == .http)
        #expect(saved.options.retryInterval == 30)
    }

    @Test("legacy steps[i].data payloads are appended (TestSagaCompatibleNormal)")
    func legacyPayloads() async throws {
        let h = Harness()
        let request = TransRequest(gid: "legacy", transType: "saga", steps: [
            ["action": "http://busi/a1", "compensate": "http://busi/c1", "data": "{\"amount\":30}"],
            ["action": "http://busi/a2", "compensate": "http://busi/c2", "data": "{\"amount\":40}"],
        ])
        try await h.coordinator.prepare(request)
        let rows = await h.store.findBranches(gid: "legacy")
        #expect(rows.map(\.binData) == [30, 30, 40, 40].map { Array("{\"amount\":\($0)}".utf8) })
        #expect(rows.map(\.branchID) == ["01", "01", "02", "02"])
        #expect(rows.map(\.op) == [.compensate, .action, .compensate, .action])
    }
}

@Suite("Request validation: messages name the field, nothing is stored")
struct ValidationTests {
    struct Bad: Sendable, CustomTestStringConvertible {
        var request: TransRequest
        var message: String
        var testDescription: String { message }
    }

    static let bad: [Bad] = {
        var cases = [Bad]()
        func add(_ message: String, _ edit: (inout TransRequest) -> Void) {
            var request = sagaRequest("bad")
            edit(&request)
            cases.append(Bad(request: request, message: message))
        }
        add("gid: must not be empty") { $0.gid = "" }
        add("gid: 129 bytes, at most 128 allowed") { $0.gid = String(repeating: "g", count: 129) }
        add("trans_type: must not be empty (one of saga, tcc, msg, xa, workflow)") { $0.transType = "" }
        add("trans_type: unknown 'sagas' (one of saga, tcc, msg, xa, workflow)") { $0.transType = "sagas" }
        add("protocol: unknown 'tcp' (http, grpc or json-rpc)") { $0.transProtocol = "tcp" }
        add("payloads: 1 payloads for 2 steps (need one per step)") { $0.payloads.removeLast() }
        add("payloads: 3 payloads for 2 steps (need one per step)") { $0.payloads.append([]) }
        add("custom_data: not valid JSON") { $0.customData = "{" }
        add("custom_data: must be a JSON object") { $0.customData = "[1]" }
        add("custom_data: concurrent must be a boolean") { $0.customData = #"{"concurrent":1}"# }
        add("custom_data: orders must be an object of step index to an array of step indexes") {
            $0.customData = #"{"orders":[1]}"#
        }
        add("custom_data: orders key 'x' is not a step index") { $0.customData = #"{"orders":{"x":[0]}}"# }
        add("custom_data: orders[1] must be an array of step indexes") { $0.customData = #"{"orders":{"1":[true]}}"# }
        add("custom_data: orders refer to step 5 but there are 2 steps") { $0.customData = #"{"orders":{"1":[5]}}"# }
        add("custom_data: orders contain a cycle through step 0") { $0.customData = #"{"orders":{"0":[1],"1":[0]}}"# }
        add("custom_data: orders contain a cycle through step 1") { $0.customData = #"{"orders":{"1":[1]}}"# }
        add("timeout_to_fail: must not be negative (got -1)") { $0.options.timeoutToFail = -1 }
        add("retry_interval: must not be negative (got -5)") { $0.options.retryInterval = -5 }
        add("request_timeout: must not be negative (got -2)") { $0.options.requestTimeout = -2 }
        add("retry_limit: must not be negative (got -3)") { $0.options.retryLimit = -3 }
        var msg = msgRequest("bad")
        msg.customData = #"{"delay":-1}"#
        cases.append(Bad(request: msg, message: "custom_data: delay must be a whole number of seconds from 0 to 315360000"))
        msg.customData = #"{"delay":"10"}"#
        cases.append(Bad(request: msg, message: "custom_data: delay must be a whole number of seconds from 0 to 315360000"))
        for (custom, message) in [("", "name (the workflow name) is required"),
                                  (#"{"name":"w","data":"%%"}"#, "data must be base64"),
                                  (#"{"name":"w","data":5}"#, "data must be a base64 string")] {
            cases.append(Bad(request: TransRequest(gid: "bad", transType: "workflow", customData: custom),
                             message: "custom_data: \(message)"))
        }
        return cases
    }()

    @Test(arguments: bad)
    func refused(_ c: Bad) async {
        let h = Harness()
        // A workflow submit only reports the final status (checked elsewhere).
        if c.request.transType != "workflow" {
            await expectError(.invalidArgument(c.message)) { try await h.coordinator.submit(c.request) }
        } else {
            await expectError(.invalidArgument(c.message)) { _ = try await h.coordinator.prepareWorkflow(c.request) }
        }
        await expectError(.invalidArgument(c.message)) { try await h.coordinator.prepare(c.request) }
        #expect(await h.store.findGlobal(gid: c.request.gid) == nil)
        #expect(await h.cron.runOnce().isEmpty)
    }

    @Test("accepted custom data and options", arguments: [
        #"{"orders":{"1":[0]},"concurrent":true}"#, #"{"Orders":{},"Concurrent":false}"#, "null", "{}", "",
    ])
    func accepted(_ custom: String) async throws {
        let h = Harness()
        try await h.coordinator.prepare(sagaRequest("ok", customData: custom))
        #expect(await h.store.findGlobal(gid: "ok") != nil)
    }

    struct BadRegistration: Sendable, CustomTestStringConvertible {
        var registration: BranchRegistration
        var message: String
        var testDescription: String { message }
    }

    @Test(arguments: [
        BadRegistration(registration: .init(gid: "", transType: "tcc", branchID: "01"), message: "gid: must not be empty"),
        BadRegistration(registration: .init(gid: "g", transType: "tcc", branchID: ""),
                        message: "branch_id: must not be empty"),
        BadRegistration(registration: .init(gid: "g", transType: "saga", branchID: "01"),
                        message: "unknow trans type: saga"),
        BadRegistration(registration: .init(gid: "g", transType: "workflow", branchID: "01", data: ["status": "succeed"]),
                        message: "data.op: must not be empty for a workflow branch"),
        BadRegistration(registration: .init(gid: "g", transType: "workflow", branchID: "01",
                                            data: ["op": "action", "status": "done"]),
                        message: "data.status: must be 'succeed', 'failed' or 'prepared', got 'done'"),
    ])
    func refusedRegistration(_ c: BadRegistration) async throws {
        let h = Harness()
        try await h.seed("g", .tcc, .prepared)
        await expectError(.invalidArgument(c.message)) { try await h.coordinator.registerBranch(c.registration) }
        #expect(await h.statuses("g") == [])
    }

    @Test("gRPC Steps text", arguments: [
        ("", nil), ("null", nil), ("[]", nil),
        (#"[{"action":"a","compensate":"c"}]"#, nil),
        ("{", "steps: not a JSON array of objects"), (#"{"action":"a"}"#, "steps: not a JSON array of objects"),
        ("[1]", "steps[0]: not a JSON object"), (#"[{"action":1}]"#, "steps[0].action: not a string"),
    ] as [(String, String?)])
    func steps(_ text: String, _ message: String?) {
        do {
            let steps = try TransRequest.parseSteps(text)
            #expect(message == nil)
            #expect(steps.count == (text.contains("action") ? 1 : 0))
        } catch {
            #expect(error == .invalidArgument(message ?? ""))
        }
    }
}
