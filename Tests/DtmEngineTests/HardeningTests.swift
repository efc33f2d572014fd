import Foundation
import DtmTestSupport
import Testing
@testable import DtmEngine

/// Issue "Never down, never stuck": no request, row or branch may stop the coordinator for others.
@Suite struct HardeningTests {
    // MARK: Arithmetic on request numbers

    /// Finding 2: a 70-step concurrent saga whose branches all fail doubled the interval once per
    /// failed result (2^70) and trapped on overflow, again after every restart.
    @Test func seventyFailingConcurrentBranchesBackOffOnce() async throws {
        let h = Harness()
        await h.start()
        for step in 1...70 {
            await h.caller.script(stepBranchID(step), .action, .error(message: "connection refused"))
        }
        try await h.coordinator.submit(sagaRequest("wide", steps: 70, customData: #"{"concurrent":true,"orders":{}}"#))
        await h.process()
        #expect(await h.global("wide").nextCronInterval == 20)
        // Pass after pass, the interval doubles once each and stops at MaxRetryInterval.
        for step in 1...70 {
            for _ in 0..<12 { await h.caller.script(stepBranchID(step), .action, .error(message: "refused")) }
        }
        var intervals: [Int64] = []
        for _ in 0..<10 {
            await h.cronWhenDue("wide")
            intervals.append(await h.global("wide").nextCronInterval)
        }
        #expect(intervals == [40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600])
    }

    // MARK: Bounds at the door

    static func beyondLimits() -> [(String, TransRequest)] {
        func changed(_ change: (inout TransRequest) -> Void) -> TransRequest {
            var request = sagaRequest("bounded")
            change(&request)
            return request
        }
        return [
            ("retry_limit", changed { $0.options.retryLimit = 10_000_000_000_000_000 }),
            ("request_timeout", changed { $0.options.requestTimeout = 1_000_000 }),
            ("steps", sagaRequest("bounded", steps: 1001)),
            ("custom_data", changed { $0.customData = #"{"x":""# + String(repeating: "a", count: 70_000) + #""}"# }),
            ("branch_headers", changed { $0.options.branchHeaders = ["X-Evil": "a\r\nInjected: 1"] }),
            ("branch_headers", changed { $0.options.branchHeaders = ["bad name": "v"] }),
            ("branch_headers", changed { $0.options.branchHeaders = ["trace-bin": "not base64!"] }),
            ("branch_headers", changed {
                $0.options.branchHeaders = Dictionary(uniqueKeysWithValues: (0..<65).map { ("h\($0)", "v") }) }),
            ("rollback_reason", changed { $0.rollbackReason = String(repeating: "r", count: 5000) }),
        ]
    }

    @Test("a request beyond a limit is refused with the field named, nothing stored", arguments: beyondLimits())
    func boundsAreRefused(_ field: String, _ request: TransRequest) async throws {
        let h = Harness()
        let error = await caught { try await h.coordinator.submit(request) }
        guard case .invalidArgument(let message)? = error else {
            Issue.record("expected invalidArgument, got \(String(describing: error))")
            return
        }
        #expect(message.hasPrefix(field + ":") || message.hasPrefix(field + "."), "\(message)")
        #expect(await h.store.findGlobal(gid: "bounded") == nil)
    }

    /// Finding 5: a `file://` step was stored and retried forever; a NUL in a gid cut it short.
    @Test("branch URLs and ids are checked at Submit and RegisterBranch", arguments: [
        ("steps[0].action", sagaStep("file:///etc/passwd"), "http"),
        ("steps[0].action", sagaStep("http+unix://%2Ftmp%2Fsock/x"), "http"),
        ("steps[0].action", sagaStep("gopher://host/x"), "http"),
        ("steps[0].action", sagaStep("http://"), "http"),
        ("steps[0].action", sagaStep("http://user:pw@host/x"), "http"),
        ("steps[0].action", sagaStep("localhost:5001/busi.Busi/TransIn"), "http"),
        ("steps[0].action", sagaStep("localhost/busi.Busi/TransIn"), "grpc"),
        ("steps[0].action", sagaStep("localhost:99999/busi.Busi/TransIn"), "grpc"),
        ("steps[0].action", sagaStep("localhost:5001/busi.Busi"), "grpc"),
        ("steps[0].compensate", [["action": "http://busi/a", "compensate": "http://bad host/c"]], "http"),
    ] as [(String, [[String: String]], String)])
    func badURLs(_ field: String, _ steps: [[String: String]], _ proto: String) async throws {
        let h = Harness()
        let request = TransRequest(gid: "urls", transType: "saga", steps: steps, payloads: [[]],
                                   transProtocol: proto)
        let error = await caught { try await h.coordinator.submit(request) }
        guard case .invalidArgument(let message)? = error else {
            Issue.record("expected invalidArgument, got \(String(describing: error))")
            return
        }
        #expect(message.hasPrefix(field + ":"), "\(message)")
        #expect(await h.store.findGlobal(gid: "urls") == nil)
    }

    @Test func printableIdsAreAccepted() async throws {
        let h = Harness()
        for gid in ["café-1", "订单-20261129-0001", "a:b/c+d=e", "x"] {
            try await h.coordinator.submit(sagaRequest(gid))
            #expect(await h.store.findGlobal(gid: gid) != nil)
        }
    }

    @Test func goodURLsAreAccepted() async throws {
        let h = Harness()
        let steps = [["action": "HTTPS://busi.example:8443/a?x=1", "compensate": ""],
                     ["action": "localhost:5001/busi.Busi/TransIn", "compensate": "[::1]:5001/busi.Busi/TransInRevert"]]
        try await h.coordinator.submit(TransRequest(gid: "good-urls", transType: "saga", steps: steps, payloads: [[], []],
                                                    transProtocol: "grpc"))
        #expect(await h.store.findGlobal(gid: "good-urls") != nil)
    }

    @Test("gids and branch ids: printable text without spaces, at most 128 bytes", arguments: [
        "a\0b", "a b", "tab\there", "zero\u{200B}width", "bell\u{7}", String(repeating: "g", count: 129), "\u{FFFD}",
        String(repeating: "é", count: 65),
    ])
    func badIdentifiers(_ id: String) async throws {
        let h = Harness()
        let error = await caught { try await h.coordinator.submit(sagaRequest(id)) }
        guard case .invalidArgument(let message)? = error else {
            Issue.record("expected invalidArgument, got \(String(describing: error))")
            return
        }
        #expect(message.hasPrefix("gid:"), "\(message)")
        try await h.coordinator.prepare(TransRequest(gid: "tcc-ids", transType: "tcc"))
        let branchError = await caught {
            try await h.coordinator.registerBranch(BranchRegistration(
                gid: "tcc-ids", transType: "tcc", branchID: id, data: ["confirm": "http://b/c", "cancel": "http://b/x"]))
        }
        guard case .invalidArgument(let branchMessage)? = branchError else {
            Issue.record("expected invalidArgument, got \(String(describing: branchError))")
            return
        }
        #expect(branchMessage.hasPrefix("branch_id:"), "\(branchMessage)")
        #expect(await h.store.findBranches(gid: "tcc-ids").isEmpty)
    }

    @Test func registeredURLsAreChecked() async throws {
        let h = Harness()
        try await h.coordinator.prepare(TransRequest(gid: "tcc-url", transType: "tcc"))
        let error = await caught {
            try await h.coordinator.registerBranch(BranchRegistration(
                gid: "tcc-url", transType: "tcc", branchID: "01", data: ["confirm": "file:///etc/passwd", "cancel": ""]))
        }
        guard case .invalidArgument(let message)? = error else {
            Issue.record("expected invalidArgument, got \(String(describing: error))")
            return
        }
        #expect(message.hasPrefix("data.confirm:"), "\(message)")
    }

    /// The cycle check of `orders` recursed once per link: a long chain exhausted the stack.
    @Test func longOrderChainsAreCheckedWithoutRecursion() throws {
        let count = 200_000
        var orders = [Int: [Int]]()
        for step in 1..<count { orders[step] = [step - 1] }
        try SagaCustomData(concurrent: true, orders: orders).check(stepCount: count)
        orders[0] = [count - 1]
        #expect(throws: CustomDataError("orders contain a cycle through step 0")) {
            try SagaCustomData(concurrent: true, orders: orders).check(stepCount: count)
        }
    }

    // MARK: Deadlines and fan-out

    /// Finding 3: a branch that never answers must not hold a pass (and its slot) forever.
    @Test func aPassEndsAtItsDeadline() async throws {
        let store = InMemoryStore()
        let caller = HangingCaller()
        let config = EngineConfig(requestTimeout: 1, maxPassDuration: 1)
        let driver = TransactionDriver(store: store, caller: caller, config: config, owner: "me")
        let coordinator = Coordinator(driver: driver, schedule: { _ in })
        try await coordinator.submit(TransRequest(gid: "hang", transType: "saga",
                                                  steps: [["action": "http://busi/hang", "compensate": ""]],
                                                  payloads: [[]]))
        let started = ContinuousClock.now
        let report = try #require(try await driver.process(gid: "hang"))
        #expect(report.deadlineExceeded)
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(await caller.cancelled == 1)
        #expect(report.global.status == .submitted)
    }

    /// Finding 3: stalled branches held every pass slot, so a saga whose branch answered ONGOING
    /// once was never retried. Each pass now ends at its deadline and frees its slot.
    @Test func stalledBranchesDoNotStarveOtherRetries() async throws {
        let store = InMemoryStore()
        let caller = StallingCaller()
        let config = EngineConfig(retryInterval: 1, timeoutToFail: 60, requestTimeout: 1, transCronInterval: 1,
                                  maxPassDuration: 1)
        let driver = TransactionDriver(store: store, caller: caller, config: config, owner: "me")
        let cron = CronLoop(driver: driver, maxConcurrent: 4)
        let coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
        let loop = Task { await cron.run() }
        defer { loop.cancel() }
        var options = TransOptions()
        options.requestTimeout = 1
        for index in 0..<8 {
            try await coordinator.submit(TransRequest(gid: "stalled-\(index)", transType: "saga",
                                                      steps: [["action": "http://busi/stall", "compensate": ""]],
                                                      payloads: [[]], options: options))
        }
        try await coordinator.submit(TransRequest(gid: "ongoing-once", transType: "saga",
                                                  steps: [["action": "http://busi/once", "compensate": ""]],
                                                  payloads: [[]], options: options))
        let deadline = ContinuousClock.now + .seconds(90)
        while await store.findGlobal(gid: "ongoing-once")?.status != .succeed && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(await store.findGlobal(gid: "ongoing-once")?.status == .succeed)
        #expect(await caller.onceCalls == 2)
        loop.cancel()
        await loop.value
    }

    @Test func fanOutIsBounded() async throws {
        var config = EngineConfig()
        config.maxCallsInFlight = 5
        let h = Harness(config: config)
        await h.start()
        let peak = PeakCounter()
        await h.caller.onCall { _, _ in
            await peak.enter()
            try? await Task.sleep(for: .milliseconds(5))
            await peak.leave()
        }
        try await h.coordinator.submit(sagaRequest("fan", steps: 30, customData: #"{"concurrent":true}"#))
        await h.process()
        #expect(await h.global("fan").status == .succeed)
        #expect(await peak.peak <= 5)
        #expect(await h.log().count == 30)
    }

    // MARK: Admission

    @Test func newWorkIsRefusedWhenFullAndAdmittedAgainOnceDrained() async throws {
        let store = InMemoryStore()
        let driver = TransactionDriver(store: store, caller: ScriptedCaller(), owner: "me")
        let held = Recorder<ScheduledPass>()
        let gate = AdmissionGate(limit: 2)
        let coordinator = Coordinator(driver: driver, schedule: { await held.append($0) }, admission: gate)
        try await coordinator.submit(sagaRequest("adm-1"))
        try await coordinator.prepare(msgRequest("adm-prepared"))  // returns its permit at once
        try await coordinator.submit(sagaRequest("adm-2"))
        let error = await caught { try await coordinator.submit(sagaRequest("adm-3")) }
        guard case .overloaded(let message)? = error else {
            Issue.record("expected overloaded, got \(String(describing: error))")
            return
        }
        #expect(message.contains("retry"))
        #expect(await store.findGlobal(gid: "adm-3") == nil)
        #expect(gate.inUse == 2)
        // The held passes run (and are dropped): their permits come back.
        for pass in await held.values { _ = await driver.process(pass.global, branches: pass.branches) }
        await held.clear()
        #expect(gate.inUse == 0)
        try await coordinator.submit(sagaRequest("adm-3"))
        #expect(await store.findGlobal(gid: "adm-3") != nil)
    }

    // MARK: Leases

    @Test func aPassStopsAtItsNextWriteOnceAnotherCoordinatorTookTheLease() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.submit(sagaRequest("taken", steps: 3))
        await h.caller.onCall { call, global in
            guard call.branchID == "01" else { return }
            // While the first call runs, the lease lapses and coordinator B claims the row.
            _ = await h.store.claimDue(now: h.clock.now().addingTimeInterval(3600),
                                       leaseUntil: h.clock.now().addingTimeInterval(7200), owner: "B", limit: 10)
        }
        let report = await h.process()
        #expect(report.first?.lostRace == true)
        #expect(await h.log() == ["01/action"], "A made calls after losing its lease")
        let stored = await h.global("taken")
        #expect(stored.owner == "B")
        #expect(await h.statuses("taken") == [.prepared, .prepared, .prepared, .prepared, .prepared, .prepared])
    }

    @Test func aPassDoesNotStartOnARowLeasedByAnother() async throws {
        let h = Harness()
        await h.start()
        let quiet = Coordinator(driver: h.driver, schedule: { _ in })
        try await quiet.submit(sagaRequest("theirs"))
        _ = await h.store.claimDue(now: h.clock.now().addingTimeInterval(3600),
                                   leaseUntil: h.clock.now().addingTimeInterval(7200), owner: "B", limit: 10)
        let report = await h.driver.process(await h.global("theirs"))
        #expect(report.lostRace)
        #expect(await h.log().isEmpty)
    }

    @Test func waitResultOnATransactionDrivenElsewhereAnswersOngoing() async throws {
        let h = Harness()
        await h.start()
        let quiet = Coordinator(driver: h.driver, schedule: { _ in })
        try await quiet.submit(sagaRequest("elsewhere"))
        _ = await h.store.claimDue(now: h.clock.now().addingTimeInterval(3600),
                                   leaseUntil: h.clock.now().addingTimeInterval(7200), owner: "B", limit: 10)
        var again = sagaRequest("elsewhere")
        again.options.waitResult = true
        await expectError(.ongoing("ONGOING")) { try await h.coordinator.submit(again) }
        #expect(await h.log().isEmpty)
    }

    @Test func leasesAreRenewedWellBeforeTheyLapse() {
        #expect(CronLoop.renewalPeriod(lease: 10) == 1)
        #expect(CronLoop.renewalMargin(lease: 10) == 5)
        #expect(CronLoop.renewalPeriod(lease: 1) == 0.25)
        #expect(CronLoop.renewalMargin(lease: 1) == 0.75)
        for lease in [1.0, 2, 3, 10, 60, 3600] {
            // A renewal tick always finds a lease with at least two periods left.
            #expect(CronLoop.renewalMargin(lease: lease) - CronLoop.renewalPeriod(lease: lease)
                    >= 2 * CronLoop.renewalPeriod(lease: lease))
        }
    }

    @Test func renewalKeepsOnlyOwnLeases() async throws {
        let h = Harness()
        await h.start()
        let quiet = Coordinator(driver: h.driver, schedule: { _ in })
        try await quiet.submit(sagaRequest("mine"))
        try await quiet.submit(sagaRequest("lost"))
        _ = await h.store.claimDue(now: h.clock.now().addingTimeInterval(10),
                                   leaseUntil: h.clock.now().addingTimeInterval(11), owner: "B", limit: 1)
        let lost = await h.global("lost").owner == "B" ? "lost" : "mine"
        let kept = lost == "lost" ? "mine" : "lost"
        let before = await h.global(lost).nextCronTime
        try await h.store.extendLeases(gids: ["mine", "lost"], owner: "test-owner",
                                       until: h.clock.now().addingTimeInterval(100), now: h.clock.now())
        #expect(await h.global(lost).nextCronTime == before)
        #expect(await h.global(kept).nextCronTime == h.clock.now().addingTimeInterval(100))
    }
}

private func sagaStep(_ action: String) -> [[String: String]] {
    [["action": action, "compensate": ""]]
}

/// A caller whose calls never answer until cancelled.
actor HangingCaller: BranchCaller {
    private(set) var cancelled = 0

    nonisolated func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        await noteCancelled()
        return .error(message: "cancelled")
    }

    private func noteCancelled() { cancelled += 1 }
}

/// `/stall` never answers until cancelled; `/once` answers ONGOING the first time, then SUCCESS.
actor StallingCaller: BranchCaller {
    private(set) var onceCalls = 0

    nonisolated func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        if call.url.hasSuffix("/once") { return await once() }
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        return .error(message: "cancelled")
    }

    private func once() -> BranchResult {
        onceCalls += 1
        return onceCalls == 1 ? .ongoing : .success
    }
}

/// The most concurrent holders seen.
actor PeakCounter {
    private var current = 0
    private(set) var peak = 0
    func enter() {
        current += 1
        peak = max(peak, current)
    }
    func leave() { current -= 1 }
}
