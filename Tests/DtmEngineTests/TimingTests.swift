import Foundation
import Testing
@testable import DtmEngine

private let t0 = Date(timeIntervalSince1970: 1_700_000_000)

private func global(_ type: TransType = .saga, retryInterval: Int64 = 0, timeoutToFail: Int64 = 0,
                    interval: Int64 = 10) -> GlobalTransaction {
    GlobalTransaction(gid: "g", transType: type, status: .submitted, createTime: t0,
                      options: TransOptions(timeoutToFail: timeoutToFail, retryInterval: retryInterval),
                      nextCronInterval: interval)
}

@Suite("Cron interval arithmetic and timeouts (spec 5.2, 5.3)")
struct TimingTests {
    @Test("reset interval: retry_interval, else a short timeout_to_fail, else RetryInterval",
          arguments: [
              (Int64(0), Int64(0), Int64(10)), (5, 0, 5), (150, 0, 150), (0, 5, 5), (0, 9, 9),
              (0, 10, 10), (0, 20, 10), (3, 5, 3),
          ])
    func resetInterval(retryInterval: Int64, timeoutToFail: Int64, expected: Int64) {
        let g = global(retryInterval: retryInterval, timeoutToFail: timeoutToFail)
        #expect(g.resetInterval(EngineConfig()) == expected)
    }

    @Test("effective timeout: saga has none by default, other modes TimeoutToFail",
          arguments: [
              (TransType.saga, Int64(0), Int64(0)), (.saga, 1800, 1800), (.tcc, 0, 35), (.xa, 0, 35),
              (.msg, 0, 35), (.msg, 120, 120), (.workflow, 0, 35),
          ])
    func effectiveTimeout(type: TransType, timeoutToFail: Int64, expected: Int64) {
        #expect(global(type, timeoutToFail: timeoutToFail).effectiveTimeout(EngineConfig()) == expected)
    }

    @Test("timed out once age >= timeout", arguments: [
        (TransType.tcc, Int64(0), 34.9, false), (.tcc, 0, 35, true), (.saga, 0, 1_000_000, false),
        (.saga, 1800, 1799, false), (.saga, 1800, 1800, true), (.msg, 120, 60, false), (.msg, 120, 180, true),
    ])
    func timedOut(type: TransType, timeoutToFail: Int64, age: Double, expected: Bool) {
        let g = global(type, timeoutToFail: timeoutToFail)
        #expect(g.isTimedOut(at: t0.addingTimeInterval(age), EngineConfig()) == expected)
        #expect(g.timeoutReason(EngineConfig()).wholeMatch(of: /Timeout after \d+ seconds/) != nil)
    }

    struct ScheduleCase: Sendable, CustomTestStringConvertible {
        var name: String
        var retryInterval: Int64 = 0
        var start: Int64 = 10
        /// (effect, seconds after the pass start)
        var effects: [(CronEffect, Double)]
        /// Expected (interval, next cron time offset from pass start), nil when untouched.
        var expected: (Int64, Double)?
        var testDescription: String { name }
    }

    @Test("schedule effects applied in arrival order", arguments: [
        ScheduleCase(name: "error doubles", effects: [(.backoff, 0)], expected: (20, 20)),
        ScheduleCase(name: "two errors double once per pass", effects: [(.backoff, 0), (.backoff, 1)],
                     expected: (20, 21)),
        ScheduleCase(name: "seventy errors double once", effects: Array(repeating: (.backoff, 0), count: 70),
                     expected: (20, 20)),
        ScheduleCase(name: "grows below the cap", start: 640, effects: [(.backoff, 0)], expected: (1280, 1280)),
        ScheduleCase(name: "capped at MaxRetryInterval", start: 3000, effects: [(.backoff, 0)], expected: (3600, 3600)),
        ScheduleCase(name: "saturates instead of trapping", start: .max / 2 + 1, effects: [(.backoff, 0)],
                     expected: (3600, 3600)),
        ScheduleCase(name: "ongoing keeps", start: 40, effects: [(.keep, 0)], expected: (40, 40)),
        ScheduleCase(name: "fresh success leaves it", effects: [(.resetIfStale, 1)], expected: nil),
        ScheduleCase(name: "success after 1.5 s resets", effects: [(.resetIfStale, 1.5)], expected: (10, 11.5)),
        ScheduleCase(name: "success after backoff resets", effects: [(.backoff, 0), (.resetIfStale, 0)],
                     expected: (10, 10)),
        ScheduleCase(name: "grown interval resets at once", start: 80, effects: [(.resetIfStale, 0)],
                     expected: (10, 10)),
        ScheduleCase(name: "own retry_interval is not grown", retryInterval: 150, start: 150,
                     effects: [(.resetIfStale, 0)], expected: nil),
        ScheduleCase(name: "back-check ongoing resets", start: 80, effects: [(.reset, 0)], expected: (10, 10)),
        ScheduleCase(name: "success then ongoing", start: 40, effects: [(.resetIfStale, 0), (.keep, 0)],
                     expected: (10, 10)),
    ])
    func schedule(_ c: ScheduleCase) {
        let g = global(retryInterval: c.retryInterval, interval: c.start)
        var schedule = CronSchedule(interval: c.start, passStart: t0)
        for (effect, at) in c.effects {
            schedule.apply(effect, for: g, config: EngineConfig(), now: t0.addingTimeInterval(at))
        }
        if let (interval, offset) = c.expected {
            #expect(schedule.interval == interval)
            #expect(schedule.nextTime == t0.addingTimeInterval(offset))
        } else {
            #expect(schedule.nextTime == nil)
            #expect(schedule.interval == c.start)
        }
    }

    @Test func postponeKeepsInterval() {
        var schedule = CronSchedule(interval: 20, passStart: t0)
        schedule.postpone(until: t0.addingTimeInterval(10), now: t0)
        #expect(schedule.interval == 20)
        #expect(schedule.nextTime == t0.addingTimeInterval(10))
    }

    @Test func configDefaultsAndChecks() {
        let config = EngineConfig()
        #expect(config.retryInterval == 10 && config.timeoutToFail == 35)
        #expect(config.requestTimeout == 3 && config.transCronInterval == 3)
        #expect(config.validationError() == nil)
        #expect(EngineConfig(retryInterval: 5).validationError() == "RetryInterval should not be less than 10")
        #expect(EngineConfig(timeoutToFail: 5).validationError() == "TimeoutToFail should not be less than RetryInterval")
    }
}

@Suite("Call result → branch status and cron effect (spec 4.2)")
struct EffectTableTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var type: TransType
        var kind: BranchCall.Kind = .branch
        var op: BranchOp
        var result: BranchResult
        var status: BranchStatus?
        var cron: CronEffect?
        var testDescription: String { "\(type) \(op) \(result)" }
    }

    static let rows: [Row] = {
        var rows = [Row]()
        let retried: [(TransType, BranchOp)] = [
            (.saga, .compensate), (.msg, .action), (.tcc, .confirm), (.tcc, .cancel), (.xa, .commit), (.xa, .rollback),
        ]
        for (type, op) in retried + [(.saga, .action)] {
            rows.append(Row(type: type, op: op, result: .success, status: .succeed, cron: .resetIfStale))
            rows.append(Row(type: type, op: op, result: .ongoing, status: nil, cron: .keep))
            rows.append(Row(type: type, op: op, result: .error(message: "x"), status: nil, cron: .backoff))
        }
        for (type, op) in retried {
            rows.append(Row(type: type, op: op, result: .failure(message: "no"), status: nil, cron: .backoff))
        }
        rows.append(Row(type: .saga, op: .action, result: .failure(message: "no"), status: .failed, cron: .resetIfStale))
        rows += [
            Row(type: .msg, kind: .backCheck, op: .msg, result: .success, status: nil, cron: nil),
            Row(type: .msg, kind: .backCheck, op: .msg, result: .failure(message: "no"), status: nil, cron: nil),
            Row(type: .msg, kind: .backCheck, op: .msg, result: .ongoing, status: nil, cron: .reset),
            Row(type: .msg, kind: .backCheck, op: .msg, result: .error(message: "x"), status: nil, cron: .backoff),
            Row(type: .workflow, kind: .workflowResume, op: BranchOp("wf"), result: .error(message: "x")),
            Row(type: .workflow, kind: .workflowResume, op: BranchOp("wf"), result: .success),
        ]
        return rows
    }()

    @Test(arguments: rows)
    func effect(_ row: Row) {
        let call = BranchCall(kind: row.kind, branchID: "01", op: row.op, url: "http://u", requestTimeout: 3)
        let effect = CallEffect.of(row.result, call: call, transType: row.type)
        #expect(effect.branchStatus == row.status)
        #expect(effect.cron == row.cron)
        #expect((effect.rollbackReason != nil) == (row.status == .failed))
    }

    @Test func sagaFailureReasonKeepsBusiText() {
        let call = BranchCall(branchID: "02", op: .action, url: "http://busi/TransIn", requestTimeout: 3)
        let effect = CallEffect.of(.failure(message: "{\"error\":\"reason:Insufficient balance\"}"), call: call,
                                   transType: .saga)
        #expect(effect.rollbackReason
            == "url:http://busi/TransIn return failed: {\"error\":\"reason:Insufficient balance\"} FAILURE")
        let again = CallEffect.of(.failure(message: "already FAILURE"), call: call, transType: .saga)
        #expect(again.rollbackReason == "url:http://busi/TransIn return failed: already FAILURE")
    }

    @Test func httpMethodAndTransport() {
        let empty = BranchCall(branchID: "01", op: .commit, url: "localhost:1/a.B/C", requestTimeout: 3)
        #expect(empty.httpMethod(for: .xa) == "POST")
        #expect(empty.httpMethod(for: .tcc) == "GET")
        #expect(BranchCall(branchID: "01", op: .action, url: "u", payload: [1], requestTimeout: 3)
            .httpMethod(for: .saga) == "POST")
        #expect(!empty.usesHTTP(.grpc))
        #expect(empty.usesHTTP(.http))
        #expect(BranchCall(branchID: "01", op: .action, url: "https://h/x", requestTimeout: 3).usesHTTP(.grpc))
    }
}

@Suite struct TransOptionsCodingTests {
    @Test func decodesDTMsOptionsWithZeroValuesLeftOut() throws {
        let options = try JSONDecoder().decode(TransOptions.self, from: Data(#"{"concurrent":false,"retry_interval":15}"#.utf8))
        #expect(options == TransOptions(retryInterval: 15))
        #expect(try JSONDecoder().decode(TransOptions.self, from: Data("{}".utf8)) == TransOptions())
    }
}

@Suite struct TransOptionsJSONTextTests {
    @Test func writesDTMsShapeAndReadsItBack() throws {
        #expect(TransOptions().jsonText == #"{"concurrent":false}"#)
        let full = TransOptions(waitResult: true, timeoutToFail: 60, retryInterval: 15,
                                branchHeaders: ["x-b": "q\"uote\n", "a": "1"], requestTimeout: 8, retryLimit: 3,
                                concurrent: true)
        #expect(full.jsonText == #"{"wait_result":true,"timeout_to_fail":60,"request_timeout":8,"retry_interval":15,"branch_headers":{"a":"1","x-b":"q\"uote\n"},"concurrent":true,"retry_limit":3}"#)
        #expect(TransOptions(jsonText: full.jsonText) == full)
        #expect(try JSONDecoder().decode(TransOptions.self, from: Data(full.jsonText.utf8)) == full)
        #expect(TransOptions(jsonText: #"{"retry_interval":"10"}"#) == nil)
        #expect(TransOptions(jsonText: "[]") == nil)
        #expect(TransOptions(jsonText: #"{"unknown":1,"timeout_to_fail":null}"#) == TransOptions())
    }
}
