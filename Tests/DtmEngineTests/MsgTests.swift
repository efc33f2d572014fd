import Foundation
import Testing
@testable import DtmEngine

private let p = BranchStatus.prepared
private let s = BranchStatus.succeed

@Suite("Msg processing (spec 3.5, DTM msg tests)")
struct MsgTests {
    private func subscribe(_ h: Harness, _ topic: String, _ urls: [String]) async throws {
        let value = TopicSubscriber.json(urls.map { TopicSubscriber(url: $0) })
        try await h.store.createKV(cat: "topics", key: topic, value: value, now: h.clock.now())
    }

    @Test("TestMsgNormal: a topic expands to its subscribers, called in order")
    func topicNormal() async throws {
        let h = Harness()
        await h.start()
        try await subscribe(h, "http_trans", ["http://busi/TransOut", "http://busi/TransIn"])
        var request = msgRequest("topic", steps: 1)
        request.steps = [["action": "topic://http_trans"]]
        try await h.coordinator.submit(request)
        let rows = await h.store.findBranches(gid: "topic")
        #expect(rows.map(\.branchID) == ["01-01", "01-02"])
        #expect(rows.map(\.url) == ["http://busi/TransOut", "http://busi/TransIn"])
        #expect(rows.allSatisfy { $0.binData == Array("m1".utf8) && $0.op == .action })
        #expect(await h.global("topic").status == .submitted)
        #expect(launched(await h.process()) == ["01-01/action", "01-02/action"])
        #expect(await h.statuses("topic") == [s, s])
        #expect(await h.global("topic").status == .succeed)
    }

    @Test("a topic with one subscriber keeps the plain step id")
    func topicSingle() async throws {
        let h = Harness()
        try await subscribe(h, "one", ["http://busi/only"])
        var request = msgRequest("single", steps: 2)
        request.steps[0] = ["action": "topic://one"]
        try await h.coordinator.submit(request)
        #expect(await h.store.findBranches(gid: "single").map(\.branchID) == ["01", "02"])
    }

    @Test("TestMsgTopicNotFoundFailed: no subscriber → error naming the step, nothing stored")
    func topicNotFound() async throws {
        let h = Harness()
        var request = msgRequest("nosub", steps: 1)
        request.steps = [["action": "topic://non_existent"]]
        await expectError(.invalidArgument("steps[0].action: topic not found: 'non_existent'")) {
            try await h.coordinator.submit(request)
        }
        #expect(await h.store.findGlobal(gid: "nosub") == nil)
    }

    @Test("TestMsgTimeoutSuccess: back-check ONGOING, then SUCCESS with a branch ONGOING, then done")
    func timeoutSuccess() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("mts"))
        #expect(await h.global("mts").status == .prepared)
        await h.caller.script("00", .msg, .ongoing)
        #expect(launched(await h.cron(after: 180)) == ["00/msg"])
        #expect(await h.global("mts").status == .prepared)
        #expect(await h.global("mts").nextCronInterval == 10)
        await h.caller.script("02", .action, .ongoing)
        #expect(launched(await h.cron(after: 180)) == ["00/msg", "01/action", "02/action"])
        #expect(await h.global("mts").status == .submitted)
        #expect(launched(await h.cronWhenDue("mts")) == ["02/action"])
        #expect(await h.statuses("mts") == [s, s])
        #expect(await h.global("mts").status == .succeed)
        #expect(await h.violations() == [])
    }

    @Test("TestMsgTimeoutFailed: back-check FAILURE fails the msg, branches untouched")
    func timeoutFailed() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("mtf"))
        await h.caller.script("00", .msg, .ongoing, .failure(message: "rollback"))
        await h.cron(after: 360)
        #expect(await h.global("mtf").status == .prepared)
        #expect(launched(await h.cron(after: 180)) == ["00/msg"])
        #expect(await h.statuses("mtf") == [p, p])
        let stored = await h.global("mtf")
        #expect(stored.status == .failed)
        #expect(stored.rollbackTime != nil)
    }

    @Test("back-check call shape: branch 00, op msg, query_prepared URL, no body")
    func backCheckShape() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("shape"))
        await h.cron(after: 35)
        let call = try #require(await h.caller.seen.first)
        #expect(call == SeenCall(gid: "shape", kind: .backCheck, branchID: "00", op: "msg",
                                 url: "http://busi/query", payload: []))
    }

    @Test("back-check error backs off")
    func backCheckError() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("bce"))
        await h.caller.script("00", .msg, .error(message: "down"))
        await h.cron(after: 40)
        #expect(await h.global("bce").nextCronInterval == 20)
        #expect(await h.nextCronOffset("bce") == 20)
    }

    @Test("TestMsgOptionsTimeout: not back-checked before the default 35 s")
    func defaultTimeout() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("mdt"))
        #expect(launched(await h.cron(after: 10)) == [])
        #expect(await h.global("mdt").status == .prepared)
        #expect(await h.nextCronOffset("mdt") == 10)
        #expect(launched(await h.cron(after: 50)) == ["00/msg", "01/action", "02/action"])
        #expect(await h.global("mdt").status == .succeed)
    }

    @Test("TestMsgOptionsTimeoutCustom: timeout_to_fail 120")
    func customTimeout() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("mct", options: TransOptions(timeoutToFail: 120)))
        await h.cron(after: 60)
        #expect(await h.global("mct").status == .prepared)
        #expect(await h.caller.seen.isEmpty)
        await h.cron(after: 120)
        #expect(await h.global("mct").status == .succeed)
    }

    @Test("action FAILURE is retried like an error, with backoff")
    func actionFailureRetried() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .failure(message: "no"))
        try await h.coordinator.submit(msgRequest("maf"))
        #expect(launched(await h.process()) == ["01/action"])
        #expect(await h.global("maf").status == .submitted)
        #expect(await h.global("maf").nextCronInterval == 20)
        #expect(launched(await h.cronWhenDue("maf")) == ["01/action", "02/action"])
        #expect(await h.global("maf").status == .succeed)
    }

    @Test("TestMsgWebhook: the third consecutive error reaches AlertRetryLimit")
    func alertRetryCount() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .error(message: "e1"), .error(message: "e2"),
                              .failure(message: "e3"))
        try await h.coordinator.submit(msgRequest("alert", steps: 1))
        var notes = [BranchErrorNote]()
        notes += await h.process().flatMap(\.branchErrors)
        notes += await h.cronWhenDue("alert").flatMap(\.branchErrors)
        notes += await h.cronWhenDue("alert").flatMap(\.branchErrors)
        #expect(notes.map(\.retryCount) == [1, 2, 3])
        #expect(notes.map(\.message) == ["e1", "e2", "e3 FAILURE"])
        #expect(notes.allSatisfy { $0.call.url == "http://busi/m1" })
        await h.cronWhenDue("alert")
        #expect(await h.global("alert").status == .succeed)
    }

    @Test("TestMsgConcurrent: the concurrent option launches every action at once")
    func concurrent() async throws {
        let h = Harness()
        await h.start()
        await h.caller.script("01", .action, .error(message: "x"))
        try await h.coordinator.submit(msgRequest("mc", steps: 3, options: TransOptions(concurrent: true)))
        let reports = await h.process()
        #expect(reports.count == 1)
        #expect(launched(reports) == ["01/action", "02/action", "03/action"])
        #expect(await h.statuses("mc") == [p, s, s])
        #expect(await h.global("mc").status == .submitted)
        #expect(launched(await h.cronWhenDue("mc")) == ["01/action"])
        #expect(await h.global("mc").status == .succeed)
    }

    @Test("TestMsgDelayNormal: branches untouched until create + delay")
    func delay() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.submit(msgRequest("delay", customData: #"{"delay":10}"#))
        #expect(launched(await h.process()) == [])
        #expect(await h.statuses("delay") == [p, p])
        #expect(await h.global("delay").status == .submitted)
        #expect(await h.global("delay").nextCronInterval == 10)
        #expect(await h.nextCronOffset("delay") == 10)
        #expect(await h.cron(after: 8).isEmpty)
        #expect(launched(await h.cron(after: 4)) == ["01/action", "02/action"])
        #expect(await h.statuses("delay") == [s, s])
        #expect(await h.global("delay").status == .succeed)
    }

    /// DTM's SDK sets the delay only on Submit (DoAndSubmit + SetDelay): DTM's first pass uses
    /// the Submit's custom data and postpones delivery; the delay was ignored here (issue 8).
    @Test("a delay given at Submit after Prepare postpones the first delivery")
    func delayAtSubmitAfterPrepare() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("late-delay"))
        h.clock.advance(5)
        try await h.coordinator.submit(msgRequest("late-delay", customData: #"{"delay":10}"#))
        #expect(launched(await h.process()) == [])
        #expect(await h.global("late-delay").status == .submitted)
        #expect(await h.global("late-delay").customData == "")
        #expect(await h.nextCronOffset("late-delay") == 10)
        #expect(await h.cron(after: 9).isEmpty)
        #expect(launched(await h.cron(after: 1)) == ["01/action", "02/action"])
        #expect(await h.global("late-delay").status == .succeed)
    }

    @Test("abort of a prepared msg fails it without calls (DoAndSubmit busi failure)")
    func abortPrepared() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("mab"))
        try await h.coordinator.abort(TransRequest(gid: "mab", transType: "msg"))
        #expect(await h.global("mab").status == .failed)
        await h.cron(after: 100)
        #expect(await h.caller.seen.isEmpty)
    }

    @Test("TestMsgAbnormal: prepare twice OK, submit OK, prepare after finish refused")
    func abnormal() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(msgRequest("mabn"))
        try await h.coordinator.prepare(msgRequest("mabn"))
        try await h.coordinator.submit(msgRequest("mabn"))
        await h.process()
        #expect(await h.global("mabn").status == .succeed)
        await expectError(.failure("current status 'succeed', cannot prepare. FAILURE")) {
            try await h.coordinator.prepare(msgRequest("mabn"))
        }
    }
}
