import DtmEngine
@testable import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Testing

/// Answers branch calls by URL: `.../fail` FAILURE, `.../error` an error, `.../once` an error on
/// the first call only, anything else success. Counts calls per URL.
actor ScriptedCaller: BranchCaller {
    private(set) var calls: [String: Int] = [:]
    nonisolated func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        let count = await record(call.url)
        if call.url.hasSuffix("/fail") { return .failure(message: "FAILURE") }
        if call.url.hasSuffix("/error") { return .error(message: "HTTP 500: boom\n\"forged\"") }
        if call.url.hasSuffix("/once") && count == 1 { return .error(message: "HTTP 503: busy") }
        return .success
    }
    private func record(_ url: String) -> Int {
        calls[url, default: 0] += 1
        return calls[url] ?? 0
    }
    var total: Int { calls.values.reduce(0, +) }
}

/// Samples of a Prometheus text page: `name{labels}` → value (a small reader for tests; the
/// interop test reads the page with prometheus-client's parser).
func parseMetrics(_ text: String) -> [(name: String, labels: [String: String], value: Double)] {
    text.split(separator: "\n").compactMap { line in
        guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "),
              let value = Double(line[line.index(after: space)...]) else { return nil }
        let series = line[..<space]
        guard let brace = series.firstIndex(of: "{") else { return (String(series), [:], value) }
        var labels: [String: String] = [:]
        for pair in series[series.index(after: brace)..<series.index(before: series.endIndex)].split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
        }
        return (String(series[..<brace]), labels, value)
    }
}

func metric(_ samples: [(name: String, labels: [String: String], value: Double)], _ name: String,
            _ labels: [String: String] = [:]) -> Double {
    samples.filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }
        .reduce(0) { $0 + $1.value }
}

func startCoordinator(operations: OperationsConfig, store: any TransactionStore = InMemoryStore(),
                      caller: any BranchCaller) async throws -> CoordinatorServer {
    var config = CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: quickEngine)
    config.operations = operations
    return try await CoordinatorServer.start(config, store: store, branchCaller: caller, logger: testLogger)
}

func submitSaga(_ api: API, _ gid: String, _ urls: [(action: String, compensate: String)]) async throws {
    let answer = try await api.post("/api/dtmsvr/submit", json: [
        "gid": gid, "trans_type": "saga",
        "steps": urls.map { ["action": $0.action, "compensate": $0.compensate] },
        "payloads": urls.map { _ in "{}" },
    ])
    #expect(answer.status == 200, "\(answer)")
}

@Suite("Metrics, retention and alerts")
struct OperationsTests {
    @Test func metricsCountWhatHappenedPerCoordinator() async throws {
        let caller = ScriptedCaller()
        try await withStarted(await startCoordinator(operations: OperationsConfig(), caller: caller)) { coordinator in
            try await withStarted(await startCoordinator(operations: OperationsConfig(), caller: ScriptedCaller())) { other in
                let api = API(port: coordinator.httpPort)
                let ok = [(action: "http://busi/a", compensate: "http://busi/ca"),
                          (action: "http://busi/b", compensate: "http://busi/cb")]
                let failing = [(action: "http://busi/a", compensate: "http://busi/ca"),
                               (action: "http://busi/fail", compensate: "http://busi/cb")]
                let prefix = "metrics-\(UUID().uuidString.prefix(8))"
                for index in 0..<3 { try await submitSaga(api, "\(prefix)-ok-\(index)", ok) }
                for index in 0..<2 { try await submitSaga(api, "\(prefix)-fail-\(index)", failing) }
                for index in 0..<3 { try await api.waitFor("\(prefix)-ok-\(index)", status: "succeed") }
                for index in 0..<2 { try await api.waitFor("\(prefix)-fail-\(index)", status: "failed") }

                var samples = parseMetrics("")
                try await waitUntil("every finish counted") {
                    let page = try await api.get("/api/metrics")
                    #expect(page.status == 200)
                    #expect(page.contentType.hasPrefix("text/plain"))
                    samples = parseMetrics(page.text)
                    return metric(samples, "dtm_transactions_finished_total") >= 5
                }
                #expect(metric(samples, "dtm_transactions_finished_total", ["model": "saga", "status": "succeed"]) == 3)
                #expect(metric(samples, "dtm_transactions_finished_total", ["model": "saga", "status": "failed"]) == 2)
                #expect(metric(samples, "dtm_transactions_created_total", ["model": "saga", "status": "submitted"]) == 5)
                let calls = Double(await caller.total)
                #expect(metric(samples, "dtm_branch_calls_total") == calls)
                #expect(metric(samples, "dtm_branch_calls_total", ["protocol": "http", "result": "failure"]) == 2)
                #expect(metric(samples, "dtm_branch_process_total", ["branchtype": "action", "status": "fail"]) == 2)
                #expect(metric(samples, "dtm_server_process_total", ["type": "http", "api": "submit", "status": "ok"]) == 5)
                #expect(metric(samples, "dtm_submit_duration_seconds_count", ["type": "http"]) == 5)
                #expect(metric(samples, "dtm_due_transactions") == 0)
                // Every admission permit is given back once its pass has run.
                try await waitUntil("no transaction held in memory") {
                    let page = try await api.get("/api/metrics")
                    return metric(parseMetrics(page.text), "dtm_pending_transactions") == 0
                }

                // The other coordinator in this process has its own registry: none of this counted there.
                let otherSamples = parseMetrics(String(decoding: other.metrics.render(), as: UTF8.self))
                #expect(metric(otherSamples, "dtm_transactions_created_total") == 0)
                #expect(metric(otherSamples, "dtm_branch_calls_total") == 0)
            }
        }
    }

    @Test func retentionSweepDeletesOnlyOldFinishedRows() async throws {
        let store = InMemoryStore()
        let now = Date()
        func save(_ gid: String, _ status: GlobalStatus, updated: Date) async throws {
            var global = GlobalTransaction(gid: gid, transType: .saga, status: status, createTime: updated)
            global.updateTime = updated
            _ = try await store.saveNew(global, branches: [
                BranchRecord(gid: gid, url: "http://busi/a", binData: [], branchID: "01", op: .action, createTime: updated),
            ])
        }
        let old = now.addingTimeInterval(-7200)
        for index in 0..<5 { try await save("old-ok-\(index)", .succeed, updated: old) }
        try await save("old-failed", .failed, updated: old)
        try await save("new-ok", .succeed, updated: now)
        for status in [GlobalStatus.prepared, .submitted, .aborting] {
            try await save("old-\(status.rawValue)", status, updated: old)
        }
        struct Fixed: DtmClock { let date: Date; func now() -> Date { date } }
        let deleted = await sweepFinished(store: store, config: OperationsConfig(finishedDataExpire: 3600, retentionBatch: 2),
                                          clock: Fixed(date: now), metrics: CoordinatorMetrics(), logger: testLogger)
        #expect(deleted == 6)
        for gid in (0..<5).map({ "old-ok-\($0)" }) + ["old-failed"] {
            #expect(try await store.findGlobal(gid: gid) == nil)
            #expect(try await store.findBranches(gid: gid).isEmpty)
        }
        for gid in ["new-ok", "old-prepared", "old-submitted", "old-aborting"] {
            #expect(try await store.findGlobal(gid: gid) != nil, "\(gid) must stay")
            #expect(try await store.findBranches(gid: gid).count == 1)
        }
        // Off (0) deletes nothing.
        #expect(await sweepFinished(store: store, config: OperationsConfig(), clock: Fixed(date: now.addingTimeInterval(1e6)),
                                    metrics: CoordinatorMetrics(), logger: testLogger) == 0)
    }

    @Test func retentionLoopOfARunningCoordinatorDeletesFinishedTransactions() async throws {
        try await withStarted(await SQLiteStoreForTests.open()) { sqlite in
            let operations = OperationsConfig(finishedDataExpire: 1, retentionBatch: 1, retentionInterval: 0.2)
            try await withStarted(await startCoordinator(operations: operations, store: sqlite.store,
                                                         caller: ScriptedCaller())) { coordinator in
                let api = API(port: coordinator.httpPort)
                let gid = "retention-\(UUID().uuidString.prefix(8))"
                try await submitSaga(api, gid, [(action: "http://busi/a", compensate: "http://busi/ca")])
                let prepared = "retention-prepared-\(UUID().uuidString.prefix(8))"
                let answer = try await api.post("/api/dtmsvr/prepare", json: [
                    "gid": prepared, "trans_type": "msg", "steps": [["action": "http://busi/a"]], "payloads": ["{}"],
                    "query_prepared": "http://busi/query"])
                #expect(answer.status == 200, "\(answer)")
                try await waitUntil("the finished saga to be deleted") {
                    try await sqlite.store.findGlobal(gid: gid) == nil
                }
                #expect(try await sqlite.store.findBranches(gid: gid).isEmpty)
                #expect(try await sqlite.store.findGlobal(gid: prepared)?.status == .prepared)
                // Counted once the delete's commit returns, which may be after the row is gone.
                try await waitUntil("dtm_retention_deleted_total counts the deletion") {
                    let samples = parseMetrics(String(decoding: coordinator.metrics.render(), as: UTF8.self))
                    return metric(samples, "dtm_retention_deleted_total") >= 1
                }
            }
        }
    }

    @Test func alertWebhookFiresExactlyForTransactionsPastTheRetryLimit() async throws {
        try await withStarted(await TestBusi({ _ in (200, "{}") })) { hook in
            let operations = OperationsConfig(alertRetryLimit: 2, alertWebHook: hook.url("/dtm-hook"))
            let caller = ScriptedCaller()
            try await withStarted(await startCoordinator(operations: operations, caller: caller)) { coordinator in
                let api = API(port: coordinator.httpPort)
                let id = UUID().uuidString.prefix(8)
                let stuck = "alert-stuck-\(id)", healthy = "alert-ok-\(id)", flaky = "alert-once-\(id)"
                try await submitSaga(api, stuck, [(action: "http://busi/\(id)/error", compensate: "http://busi/c")])
                try await submitSaga(api, healthy, [(action: "http://busi/a", compensate: "http://busi/c")])
                try await submitSaga(api, flaky, [(action: "http://busi/\(id)/once", compensate: "http://busi/c")])
                try await api.waitFor(healthy, status: "succeed")
                try await api.waitFor(flaky, status: "succeed", timeout: .seconds(60))
                try await waitUntil("an alert for \(stuck)", timeout: .seconds(60)) {
                    await !hook.requests("/dtm-hook").isEmpty
                }
                let alerts = try await hook.requests("/dtm-hook").map {
                    try #require(try JSONSerialization.jsonObject(with: Data($0.body)) as? [String: Any])
                }
                #expect(Set(alerts.compactMap { $0["gid"] as? String }) == [stuck])
                for alert in alerts {
                    #expect(alert["status"] as? String == "submitted")
                    #expect(alert["branch"] as? String == "http://busi/\(id)/error")
                    #expect(alert["error"] as? String == "HTTP 500: boom\n\"forged\"")
                    #expect((alert["retry_count"] as? Int).map { $0 >= 2 } == true, "\(alert)")
                    #expect(Set(alert.keys) == ["gid", "status", "branch", "error", "retry_count"])
                }
                // Counted once the webhook's answer is back, which may be after it logged the request.
                try await waitUntil("dtm_alerts_total{result=sent} counts the alert") {
                    let samples = parseMetrics(String(decoding: coordinator.metrics.render(), as: UTF8.self))
                    return metric(samples, "dtm_alerts_total", ["result": "sent"]) >= 1
                }
            }
        }
    }

    @Test func aDeadWebhookIsLoggedAndNeverStopsRetries() async throws {
        let deadPort = try freeTCPPort()
        let operations = OperationsConfig(alertRetryLimit: 0, alertWebHook: "http://127.0.0.1:\(deadPort)/hook")
        let caller = ScriptedCaller()
        try await withStarted(await startCoordinator(operations: operations, caller: caller)) { coordinator in
            let api = API(port: coordinator.httpPort)
            let gid = "alert-dead-\(UUID().uuidString.prefix(8))"
            try await submitSaga(api, gid, [(action: "http://busi/\(gid)/once", compensate: "http://busi/c")])
            try await api.waitFor(gid, status: "succeed", timeout: .seconds(60))
            try await waitUntil("the failed alert to be counted") {
                let samples = parseMetrics(String(decoding: coordinator.metrics.render(), as: UTF8.self))
                return metric(samples, "dtm_alerts_total", ["result": "failed"]) >= 1
            }
        }
    }
}
