import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `/api/metrics` of the real `dtm` binary, read by prometheus-client's text parser after a
/// known mix of transactions: the counters equal what happened.
@Suite struct MetricsInteropTests {
    struct Sample: Decodable {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    struct Mix: Decodable {
        let busi: [String: Int]
        let statuses: [String: String]
        let samples: [Sample]

        /// Sum of the samples named `name` whose labels include `labels`.
        func value(_ name: String, _ labels: [String: String] = [:]) -> Double {
            samples.filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }
                .reduce(0) { $0 + $1.value }
        }

        func has(_ name: String) -> Bool { samples.contains { $0.name == name } }
    }

    @Test func metricsCountAKnownMixOfTransactions() async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let python = try Peers.require(Peers.python, "python")
        let dir = try makeTempDir("dtm-metrics")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dtm = try await DtmProcess.start(binary: binary, store: dir.appendingPathComponent("dtm.sqlite").path,
                                             logURL: dir.appendingPathComponent("dtm.log"), requestTimeout: 10,
                                             arguments: ["--log-format", "json"])
        defer { dtm.killIfRunning() }
        let (succeeding, failing) = (4, 3)
        let prefix = "metrics-\(UUID().uuidString.prefix(8))"
        let run = try await Peers.run(python, ["metrics_mix.py", dtm.httpBase, prefix, "\(succeeding)", "\(failing)"],
                                      timeout: .seconds(180))
        try #require(run.status == 0, "metrics_mix.py failed: \(run.stderr)")
        let mix = try JSONDecoder().decode(Mix.self, from: Data(run.stdout.utf8))

        // What happened, as the busi and /query saw it.
        let final = mix.statuses.values.reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        #expect(final == ["succeed": succeeding + 1, "failed": failing], "\(mix.statuses)")
        let busiCalls = mix.busi.values.reduce(0, +)
        #expect(mix.busi["action:fail"] == failing)
        #expect(mix.busi["msg:ok"] == 1)

        // Transactions by mode and status.
        #expect(mix.value("dtm_transactions_created_total", ["model": "saga", "status": "submitted"])
                == Double(succeeding + failing))
        #expect(mix.value("dtm_transactions_created_total", ["model": "msg", "status": "submitted"]) == 1)
        #expect(mix.value("dtm_transactions_finished_total", ["model": "saga", "status": "succeed"]) == Double(succeeding))
        #expect(mix.value("dtm_transactions_finished_total", ["model": "saga", "status": "failed"]) == Double(failing))
        #expect(mix.value("dtm_transactions_finished_total", ["model": "msg", "status": "succeed"]) == 1)
        #expect(mix.value("dtm_transactions_finished_total") == Double(succeeding + failing + 1))
        #expect(mix.value("dtm_transaction_status_changes_total", ["model": "saga", "from": "submitted", "to": "aborting"])
                == Double(failing))

        // Branch calls: every call the busi received, by protocol and result, and DTM's per-branch counter.
        #expect(mix.value("dtm_branch_calls_total", ["protocol": "http"]) == Double(busiCalls))
        #expect(mix.value("dtm_branch_calls_total", ["protocol": "grpc"]) == 0)
        #expect(mix.value("dtm_branch_calls_total", ["result": "failure"]) == Double(failing))
        #expect(mix.value("dtm_branch_calls_total", ["result": "success"]) == Double(busiCalls - failing))
        #expect(mix.value("dtm_branch_process_total") == Double(busiCalls))
        #expect(mix.value("dtm_branch_process_total", ["model": "saga", "branchtype": "action", "status": "fail"])
                == Double(failing))
        #expect(mix.value("dtm_branch_process_total", ["model": "saga", "branchtype": "compensate", "status": "ok"])
                == Double(mix.busi["compensate:ok"] ?? -1))
        #expect(mix.value("dtm_branch_call_duration_seconds_count", ["protocol": "http"]) == Double(busiCalls))

        // Requests (DTM's names) and the Submit latency histogram.
        let submits = Double(succeeding + failing + 1)
        #expect(mix.value("dtm_server_process_total", ["type": "http", "api": "submit", "status": "ok"]) == submits)
        #expect(mix.value("dtm_server_response_duration_count", ["type": "http", "api": "submit"]) == submits)
        #expect(mix.value("dtm_submit_duration_seconds_count", ["type": "http"]) == submits)
        #expect(mix.value("dtm_server_process_total", ["api": "query", "status": "ok"]) >= Double(mix.statuses.count))

        // Passes, store, queues.
        #expect(mix.value("dtm_transaction_process_total") >= submits)
        #expect(mix.value("dtm_transaction_process_total", ["model": "saga"]) >= Double(succeeding + failing))
        #expect(mix.value("dtm_store_commit_batch_size_count") >= 1)
        #expect(mix.value("dtm_store_commit_batch_size_sum") >= mix.value("dtm_store_commit_batch_size_count"))
        #expect(mix.value("dtm_store_operation_duration_seconds_count", ["op": "saveNew", "status": "ok"]) == submits)
        #expect(mix.value("dtm_store_operation_duration_seconds_count", ["op": "changeStatus"]) >= submits)
        for gauge in ["dtm_cron_ready_queue", "dtm_cron_blocked_passes", "dtm_passes_in_flight",
                      "dtm_pending_transactions", "dtm_due_transactions", "dtm_store_write_queue"] {
            #expect(mix.has(gauge), "\(gauge) missing")
        }
        #expect(mix.value("dtm_due_transactions") == 0)
        #expect(mix.value("dtm_server_info") == 1)

        // --log-format json: every line of the log is one JSON object; state changes and the
        // failed branch calls are there with their fields.
        try await dtm.stop(SIGTERM)
        let lines = dtm.log.split(separator: "\n").filter { !$0.hasPrefix("failpoint") }
        var changes = 0, failedCalls = 0
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                                      "not a JSON object: \(line)")
            #expect(object["ts"] is String && object["level"] is String && object["message"] is String)
            guard let gid = object["gid"] as? String, gid.hasPrefix(prefix) else { continue }
            if object["message"] as? String == "transaction state changed" { changes += 1 }
            if object["message"] as? String == "branch call failed" {
                failedCalls += 1
                #expect(object["result"] as? String == "failure")
                #expect(object["op"] as? String == "action")
                #expect((object["url"] as? String)?.hasSuffix("/action/fail") == true)
                #expect(object["branch"] as? String == "02")
                #expect(object["attempt"] is String && object["next_retry"] is String)
            }
        }
        // created + finished for each; and submitted -> aborting for each failing saga.
        #expect(changes == 2 * Int(submits) + failing)
        #expect(failedCalls == failing)
    }
}
