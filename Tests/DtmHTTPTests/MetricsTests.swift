@testable import DtmEngine
import DtmGRPC
@testable import DtmServer
import DtmTestSupport
import Foundation
import Testing

/// `CoordinatorMetrics` read through its Prometheus page: which series each event makes, with
/// which labels and values, and that a series appears only once something happened to it.
@Suite("CoordinatorMetrics series")
struct CoordinatorMetricsTests {
    static let start = Date(timeIntervalSince1970: 1_700_000_000)

    func samples(_ metrics: CoordinatorMetrics) -> [(name: String, labels: [String: String], value: Double)] {
        parseMetrics(page(metrics))
    }

    func page(_ metrics: CoordinatorMetrics) -> String {
        String(decoding: metrics.render(), as: UTF8.self)
    }

    /// The series (`name{labels}`, value lines) of families whose name starts with `prefix`.
    func series(_ metrics: CoordinatorMetrics, _ prefix: String) -> [String] {
        page(metrics).split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && $0.hasPrefix(prefix) }
    }

    static func report(_ type: TransType, _ status: GlobalStatus, answers: [(String, BranchOp, BranchResult)] = [],
                       storeError: StoreError? = nil, deadline: Bool = false) -> PassReport {
        var report = PassReport(global: GlobalTransaction(gid: "g", transType: type, status: status, createTime: start),
                                branches: [])
        report.answers = answers.map { id, op, result in
            BranchAnswer(call: BranchCall(branchID: id, op: op, url: "http://busi/\(id)", requestTimeout: 3),
                         result: result)
        }
        report.storeError = storeError
        report.deadlineExceeded = deadline
        return report
    }

    /// Only the info gauge and the commit batch histogram (made with the registry) are there.
    @Test func aFreshRegistryShowsNoEventSeries() {
        let metrics = CoordinatorMetrics()
        let names = Set(samples(metrics).map(\.name))
        #expect(names == ["dtm_server_info", "dtm_store_commit_batch_size_bucket", "dtm_store_commit_batch_size_sum",
                          "dtm_store_commit_batch_size_count"])
    }

    @Test func theSameEventTwiceCountsOnOneSeries() {
        let metrics = CoordinatorMetrics()
        metrics.created(model: .saga, status: .submitted)
        metrics.created(model: .saga, status: .submitted)
        #expect(series(metrics, "dtm_transactions_created_total")
            == [#"dtm_transactions_created_total{model="saga",status="submitted"} 2"#])
        let submit = metrics.api(.http, "submit")
        submit.request(ok: true, duration: .milliseconds(2))
        submit.request(ok: true, duration: .milliseconds(3))
        // Another route ending in the same segment counts on the same series.
        metrics.api(.http, "submit").request(ok: true, duration: .milliseconds(3))
        #expect(series(metrics, "dtm_server_process_total")
            == [#"dtm_server_process_total{type="http",api="submit",status="ok"} 3"#])
        #expect(series(metrics, "dtm_server_response_duration_count")
            == [#"dtm_server_response_duration_count{type="http",api="submit"} 3"#])
        #expect(series(metrics, "dtm_submit_duration_seconds_count")
            == [#"dtm_submit_duration_seconds_count{type="http"} 3"#])
        metrics.storeCall(.saveNew, ok: true, duration: .microseconds(300))
        metrics.storeCall(.saveNew, ok: true, duration: .microseconds(300))
        #expect(series(metrics, "dtm_store_operation_duration_seconds_count")
            == [#"dtm_store_operation_duration_seconds_count{op="saveNew",status="ok"} 2"#])
    }

    @Test func differentLabelValuesMakeDifferentSeries() {
        let metrics = CoordinatorMetrics()
        metrics.created(model: .saga, status: .submitted)
        metrics.created(model: .tcc, status: .submitted)
        metrics.created(model: .saga, status: .prepared)
        #expect(Set(series(metrics, "dtm_transactions_created_total")) == [
            #"dtm_transactions_created_total{model="saga",status="submitted"} 1"#,
            #"dtm_transactions_created_total{model="tcc",status="submitted"} 1"#,
            #"dtm_transactions_created_total{model="saga",status="prepared"} 1"#,
        ])
        metrics.pass(Self.report(.saga, .succeed, answers: [("01", .action, .success), ("02", .action, .success),
                                                            ("01", .compensate, .success)]),
                     now: Self.start)
        metrics.pass(Self.report(.saga, .succeed, answers: [("01", .action, .success)]), now: Self.start)
        #expect(Set(series(metrics, "dtm_branch_process_total")) == [
            #"dtm_branch_process_total{model="saga",branchid="01",branchtype="action",status="ok"} 2"#,
            #"dtm_branch_process_total{model="saga",branchid="02",branchtype="action",status="ok"} 1"#,
            #"dtm_branch_process_total{model="saga",branchid="01",branchtype="compensate",status="ok"} 1"#,
        ])
    }

    @Test func aSeriesAppearsOnlyAfterItsFirstEvent() {
        let metrics = CoordinatorMetrics()
        // Routes make their metrics when registered: no series yet.
        let register = metrics.api(.grpc, "registerbranch")
        let submit = metrics.api(.grpc, "submit")
        #expect(series(metrics, "dtm_server_process_total").isEmpty)
        #expect(series(metrics, "dtm_server_response_duration").isEmpty)
        #expect(series(metrics, "dtm_submit_duration_seconds").isEmpty)
        register.request(ok: true, duration: .milliseconds(1))
        #expect(series(metrics, "dtm_server_process_total")
            == [#"dtm_server_process_total{type="grpc",api="registerbranch",status="ok"} 1"#])
        #expect(series(metrics, "dtm_submit_duration_seconds").isEmpty)
        submit.request(ok: false, duration: .milliseconds(1))
        #expect(series(metrics, "dtm_submit_duration_seconds_count")
            == [#"dtm_submit_duration_seconds_count{type="grpc"} 1"#])
        metrics.statusChanged(model: .saga, from: .status(.submitted), to: .aborting)
        #expect(series(metrics, "dtm_transactions_finished_total").isEmpty)
        #expect(series(metrics, "dtm_transaction_status_changes_total")
            == [#"dtm_transaction_status_changes_total{model="saga",from="submitted",to="aborting"} 1"#])
        register.request(ok: false, duration: .milliseconds(1))
        #expect(Set(series(metrics, "dtm_server_process_total")) == [
            #"dtm_server_process_total{type="grpc",api="registerbranch",status="ok"} 1"#,
            #"dtm_server_process_total{type="grpc",api="registerbranch",status="fail"} 1"#,
            #"dtm_server_process_total{type="grpc",api="submit",status="fail"} 1"#,
        ])
    }

    /// `instrumented` resolves each gRPC path's metrics once; every call still counts with the
    /// path's lower-cased last segment, and submit is also timed on its own.
    @Test func instrumentedGRPCHandlersCountPerPath() async throws {
        let metrics = CoordinatorMetrics()
        var router = GRPCRouter()
        router.register("/dtmgimp.Dtm/Submit", .sync { _ throws(RPCError) in GRPCResponse(message: []) })
        router.register("/dtmgimp.Dtm/Abort", .async { _ throws(RPCError) in
            throw RPCError(.aborted, "FAILURE")
        })
        let wrapped = instrumented(router, metrics: metrics)
        #expect(series(metrics, "dtm_server_process_total").isEmpty)
        guard case .sync(let submit) = wrapped.handler(for: "/dtmgimp.Dtm/Submit"),
              case .async(let abort) = wrapped.handler(for: "/dtmgimp.Dtm/Abort") else {
            Issue.record("the wrapped handlers changed kind")
            return
        }
        for _ in 0..<2 { _ = try submit(GRPCRequest(path: "/dtmgimp.Dtm/Submit", message: [])) }
        await #expect(throws: RPCError.self) { try await abort(GRPCRequest(path: "/dtmgimp.Dtm/Abort", message: [])) }
        #expect(Set(series(metrics, "dtm_server_process_total")) == [
            #"dtm_server_process_total{type="grpc",api="submit",status="ok"} 2"#,
            #"dtm_server_process_total{type="grpc",api="abort",status="fail"} 1"#,
        ])
        #expect(Set(series(metrics, "dtm_server_response_duration_count")) == [
            #"dtm_server_response_duration_count{type="grpc",api="submit"} 2"#,
            #"dtm_server_response_duration_count{type="grpc",api="abort"} 1"#,
        ])
        #expect(series(metrics, "dtm_submit_duration_seconds_count")
            == [#"dtm_submit_duration_seconds_count{type="grpc"} 2"#])
    }

    /// The HTTP middleware's per-route metrics: a route counts under its lower-cased last
    /// segment, a path no route serves under `unknown`.
    @Test func httpRequestsCountPerRouteAndUnknownPaths() async throws {
        let start = try await startCoordinator(operations: OperationsConfig(), caller: ScriptedCaller())
        try await withStarted(start) { coordinator in
            let api = API(port: coordinator.httpPort)
            for _ in 0..<2 {
                let answer = try await api.get("/api/dtmsvr/newGid")
                #expect(answer.status == 200)
            }
            let unrouted = try await api.get("/api/no/such/route")
            #expect(unrouted.status == 404)
            let counted = series(coordinator.metrics, "dtm_server_process_total")
            #expect(counted.contains(#"dtm_server_process_total{type="http",api="newgid",status="ok"} 2"#),
                    "\(counted)")
            #expect(counted.contains(#"dtm_server_process_total{type="http",api="unknown",status="fail"} 1"#),
                    "\(counted)")
        }
    }

    /// Every event kind once or more, then every line of the page but the histogram buckets
    /// (checked apart below): the names, label names, label values and values the coordinator
    /// has always written.
    @Test func everyEventKindWritesItsSeries() {
        let metrics = CoordinatorMetrics()
        metrics.api(.grpc, "submit").request(ok: true, duration: .milliseconds(4))
        metrics.api(.grpc, "registerbranch").request(ok: false, duration: .milliseconds(1))
        metrics.api(.http, "submit").request(ok: true, duration: .milliseconds(2))
        metrics.api(.http, "submit").request(ok: false, duration: .milliseconds(6))
        metrics.api(.http, "unknown").request(ok: false, duration: .microseconds(100))
        metrics.pass(Self.report(.saga, .succeed, answers: [("01", .action, .success), ("02", .action, .success)]),
                     now: Self.start.addingTimeInterval(1.5))
        metrics.pass(Self.report(.saga, .aborting, answers: [("02", .action, .failure(message: "FAILURE"))]),
                     now: Self.start.addingTimeInterval(0.25))
        metrics.pass(Self.report(.tcc, .submitted, answers: [("01", .confirm, .ongoing)]), now: Self.start)
        metrics.pass(Self.report(.msg, .submitted, answers: [("00", .msg, .error(message: "HTTP 500"))],
                                 deadline: true), now: Self.start)
        metrics.pass(Self.report(.xa, .submitted, storeError: .notFound("moved")), now: Self.start)
        metrics.pass(Self.report(.workflow, .submitted, answers: [("00", BranchOp("wf-name"), .success)],
                                 storeError: .database("disk I/O")), now: Self.start)
        metrics.created(model: .saga, status: .submitted)
        metrics.created(model: .msg, status: .prepared)
        metrics.statusChanged(model: .saga, from: .absent, to: .submitted)
        metrics.statusChanged(model: .saga, from: .status(.submitted), to: .succeed)
        metrics.statusChanged(model: .tcc, from: .unreadable, to: .failed)
        metrics.statusChanged(model: .msg, from: .status(.prepared), to: .submitted)
        metrics.branchCall(protocol: .http, result: .success, duration: .milliseconds(3))
        metrics.branchCall(protocol: .http, result: .failure(message: "FAILURE"), duration: .milliseconds(3))
        metrics.branchCall(protocol: .grpc, result: .ongoing, duration: .milliseconds(1))
        metrics.branchCall(protocol: .grpc, result: .error(message: "boom"), duration: .seconds(2))
        metrics.storeCall(.saveNew, ok: true, duration: .microseconds(300))
        metrics.storeCall(.changeStatus, ok: true, duration: .milliseconds(1))
        metrics.storeCall(.changeStatus, ok: false, duration: .milliseconds(7))
        metrics.storeCall(.deleteFinished, ok: true, duration: .milliseconds(20))
        metrics.commit(writes: 3, duration: .microseconds(800))
        metrics.alert(ok: true)
        metrics.alert(ok: false)
        metrics.alertDropped()

        let lines = page(metrics).split(separator: "\n").map(String.init)
        let shown = Set(lines.filter { !$0.contains("_bucket{") })
        #expect(shown == Self.expected, """
            missing: \(Self.expected.subtracting(shown).sorted())
            extra: \(shown.subtracting(Self.expected).sorted())
            """)
        // Branch calls and store writes use the latency buckets (250 µs ... 30 s), DTM's response
        // duration the Prometheus client's defaults (5 ms ... 10 s).
        func buckets(_ prefix: String) -> [String] {
            lines.filter { $0.hasPrefix(prefix) }.compactMap { line in
                line.split(separator: "le=\"").last?.split(separator: "\"").first.map(String.init)
            }
        }
        #expect(buckets(#"dtm_branch_call_duration_seconds_bucket{protocol="http","#)
            == ["0.00025", "0.0005", "0.001", "0.002", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
                "2.5", "5.0", "10.0", "30.0", "+Inf"])
        #expect(buckets(#"dtm_server_response_duration_bucket{type="grpc",api="submit","#)
            == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"])
        #expect(lines.contains(#"dtm_store_commit_batch_size_bucket{le="4.0"} 1"#))
    }

    /// Written by the coordinator before its handles were resolved once (hashed per event).
    static let expected: Set<String> = [
        #"# TYPE dtm_alerts_total counter"#,
        #"# TYPE dtm_branch_call_duration_seconds histogram"#,
        #"# TYPE dtm_branch_calls_total counter"#,
        #"# TYPE dtm_branch_process_total counter"#,
        #"# TYPE dtm_passes_total counter"#,
        #"# TYPE dtm_server_info gauge"#,
        #"# TYPE dtm_server_process_total counter"#,
        #"# TYPE dtm_server_response_duration histogram"#,
        #"# TYPE dtm_store_commit_batch_size histogram"#,
        #"# TYPE dtm_store_commit_duration_seconds histogram"#,
        #"# TYPE dtm_store_operation_duration_seconds histogram"#,
        #"# TYPE dtm_submit_duration_seconds histogram"#,
        #"# TYPE dtm_transaction_handled_duration histogram"#,
        #"# TYPE dtm_transaction_process_total counter"#,
        #"# TYPE dtm_transaction_status_changes_total counter"#,
        #"# TYPE dtm_transactions_created_total counter"#,
        #"# TYPE dtm_transactions_finished_total counter"#,
        #"dtm_alerts_total{result="dropped"} 1"#,
        #"dtm_alerts_total{result="failed"} 1"#,
        #"dtm_alerts_total{result="sent"} 1"#,
        #"dtm_branch_call_duration_seconds_count{protocol="grpc"} 2"#,
        #"dtm_branch_call_duration_seconds_count{protocol="http"} 2"#,
        #"dtm_branch_call_duration_seconds_sum{protocol="grpc"} 2.001"#,
        #"dtm_branch_call_duration_seconds_sum{protocol="http"} 0.006"#,
        #"dtm_branch_calls_total{protocol="grpc",result="error"} 1"#,
        #"dtm_branch_calls_total{protocol="grpc",result="ongoing"} 1"#,
        #"dtm_branch_calls_total{protocol="http",result="failure"} 1"#,
        #"dtm_branch_calls_total{protocol="http",result="success"} 1"#,
        #"dtm_branch_process_total{model="msg",branchid="00",branchtype="msg",status="fail"} 1"#,
        #"dtm_branch_process_total{model="saga",branchid="01",branchtype="action",status="ok"} 1"#,
        #"dtm_branch_process_total{model="saga",branchid="02",branchtype="action",status="fail"} 1"#,
        #"dtm_branch_process_total{model="saga",branchid="02",branchtype="action",status="ok"} 1"#,
        #"dtm_branch_process_total{model="tcc",branchid="01",branchtype="confirm",status="fail"} 1"#,
        #"dtm_branch_process_total{model="workflow",branchid="00",branchtype="wf-name",status="ok"} 1"#,
        #"dtm_passes_total{model="msg",outcome="deadline"} 1"#,
        #"dtm_passes_total{model="saga",outcome="finished"} 1"#,
        #"dtm_passes_total{model="saga",outcome="unfinished"} 1"#,
        #"dtm_passes_total{model="tcc",outcome="unfinished"} 1"#,
        #"dtm_passes_total{model="workflow",outcome="store_error"} 1"#,
        #"dtm_passes_total{model="xa",outcome="lost_race"} 1"#,
        "dtm_server_info{gin_version=\"none\",grpc_version=\"nghttp2\",swift_dtm_version=\"\(swiftDtmVersion)\"} 1.0",
        #"dtm_server_process_total{type="grpc",api="registerbranch",status="fail"} 1"#,
        #"dtm_server_process_total{type="grpc",api="submit",status="ok"} 1"#,
        #"dtm_server_process_total{type="http",api="submit",status="fail"} 1"#,
        #"dtm_server_process_total{type="http",api="submit",status="ok"} 1"#,
        #"dtm_server_process_total{type="http",api="unknown",status="fail"} 1"#,
        #"dtm_server_response_duration_count{type="grpc",api="registerbranch"} 1"#,
        #"dtm_server_response_duration_count{type="grpc",api="submit"} 1"#,
        #"dtm_server_response_duration_count{type="http",api="submit"} 2"#,
        #"dtm_server_response_duration_count{type="http",api="unknown"} 1"#,
        #"dtm_server_response_duration_sum{type="grpc",api="registerbranch"} 0.001"#,
        #"dtm_server_response_duration_sum{type="grpc",api="submit"} 0.004"#,
        #"dtm_server_response_duration_sum{type="http",api="submit"} 0.008"#,
        #"dtm_server_response_duration_sum{type="http",api="unknown"} 0.0001"#,
        #"dtm_store_commit_batch_size_count 1"#,
        #"dtm_store_commit_batch_size_sum 3.0"#,
        #"dtm_store_commit_duration_seconds_count 1"#,
        #"dtm_store_commit_duration_seconds_sum 0.0008"#,
        #"dtm_store_operation_duration_seconds_count{op="changeStatus",status="fail"} 1"#,
        #"dtm_store_operation_duration_seconds_count{op="changeStatus",status="ok"} 1"#,
        #"dtm_store_operation_duration_seconds_count{op="deleteFinished",status="ok"} 1"#,
        #"dtm_store_operation_duration_seconds_count{op="saveNew",status="ok"} 1"#,
        #"dtm_store_operation_duration_seconds_sum{op="changeStatus",status="fail"} 0.007"#,
        #"dtm_store_operation_duration_seconds_sum{op="changeStatus",status="ok"} 0.001"#,
        #"dtm_store_operation_duration_seconds_sum{op="deleteFinished",status="ok"} 0.02"#,
        #"dtm_store_operation_duration_seconds_sum{op="saveNew",status="ok"} 0.0003"#,
        #"dtm_submit_duration_seconds_count{type="grpc"} 1"#,
        #"dtm_submit_duration_seconds_count{type="http"} 2"#,
        #"dtm_submit_duration_seconds_sum{type="grpc"} 0.004"#,
        #"dtm_submit_duration_seconds_sum{type="http"} 0.008"#,
        #"dtm_transaction_handled_duration_count{model="msg"} 1"#,
        #"dtm_transaction_handled_duration_count{model="saga"} 2"#,
        #"dtm_transaction_handled_duration_count{model="tcc"} 1"#,
        #"dtm_transaction_handled_duration_count{model="workflow"} 1"#,
        #"dtm_transaction_handled_duration_count{model="xa"} 1"#,
        #"dtm_transaction_handled_duration_sum{model="msg"} 0.0"#,
        #"dtm_transaction_handled_duration_sum{model="saga"} 1.75"#,
        #"dtm_transaction_handled_duration_sum{model="tcc"} 0.0"#,
        #"dtm_transaction_handled_duration_sum{model="workflow"} 0.0"#,
        #"dtm_transaction_handled_duration_sum{model="xa"} 0.0"#,
        #"dtm_transaction_process_total{model="msg",status="fail"} 1"#,
        #"dtm_transaction_process_total{model="saga",status="fail"} 1"#,
        #"dtm_transaction_process_total{model="saga",status="ok"} 1"#,
        #"dtm_transaction_process_total{model="tcc",status="fail"} 1"#,
        #"dtm_transaction_process_total{model="workflow",status="fail"} 1"#,
        #"dtm_transaction_process_total{model="xa",status="fail"} 1"#,
        #"dtm_transaction_status_changes_total{model="msg",from="prepared",to="submitted"} 1"#,
        #"dtm_transaction_status_changes_total{model="saga",from="none",to="submitted"} 1"#,
        #"dtm_transaction_status_changes_total{model="saga",from="submitted",to="succeed"} 1"#,
        #"dtm_transaction_status_changes_total{model="tcc",from="unreadable",to="failed"} 1"#,
        #"dtm_transactions_created_total{model="msg",status="prepared"} 1"#,
        #"dtm_transactions_created_total{model="saga",status="submitted"} 1"#,
        #"dtm_transactions_finished_total{model="saga",status="succeed"} 1"#,
        #"dtm_transactions_finished_total{model="tcc",status="failed"} 1"#,
    ]
}
