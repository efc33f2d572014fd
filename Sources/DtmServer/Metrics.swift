import CoreMetrics
import DtmEngine
import DtmSync
import Foundation
import Prometheus

/// The metrics of one coordinator, served as Prometheus text at `GET /api/metrics`.
///
/// Each `CoordinatorServer` owns one registry (no process-wide `MetricsSystem.bootstrap`), so
/// coordinators started side by side in one process (tests) count only their own work. Names
/// and labels follow DTM's (`dtm_server_process_total`, `dtm_transaction_process_total`,
/// `dtm_branch_process_total`, ...) so existing dashboards work; the rest are swift-dtm's own.
public final class CoordinatorMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let counters: HandleCache<CoreMetrics.Counter>
    private let timers: HandleCache<CoreMetrics.Timer>
    private let commitBatchSize: Recorder

    /// Seconds buckets of branch calls and store writes: sub-millisecond commits to slow branches.
    static let latencyBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]
    /// Requests that shared one SQLite commit.
    static let batchBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets
        // DTM's own histograms keep the Prometheus client's default buckets (5 ms ... 10 s).
        let prometheusDefault: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25),
                                             .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                             .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
                                             .seconds(10)]
        factory.durationHistogramBuckets = ["dtm_server_response_duration": prometheusDefault]
        factory.defaultValueHistogramBuckets = Self.batchBuckets
        self.factory = factory
        let made = factory
        counters = HandleCache { CoreMetrics.Counter(label: $0, dimensions: $1, factory: made) }
        timers = HandleCache { CoreMetrics.Timer(label: $0, dimensions: $1, factory: made) }
        commitBatchSize = Recorder(label: "dtm_store_commit_batch_size", dimensions: [], aggregate: true,
                                   factory: factory)
        Meter(label: "dtm_server_info", dimensions: [("gin_version", "none"), ("grpc_version", "nghttp2"),
                                                     ("swift_dtm_version", swiftDtmVersion)],
              factory: factory).set(1)
    }

    // MARK: Requests (DTM: dtm_server_process_total, dtm_server_response_duration)

    /// One gRPC or HTTP API request: `type` grpc|http, `api` the lower-cased last path segment.
    func request(type: String, api: String, ok: Bool, duration: Duration) {
        count(MetricKey("dtm_server_process_total", ("type", type), ("api", api), ("status", ok ? "ok" : "fail")))
        time(MetricKey("dtm_server_response_duration", ("type", type), ("api", api)), duration)
        if api == "submit" { time(MetricKey("dtm_submit_duration_seconds", ("type", type)), duration) }
    }

    // MARK: Transactions

    /// A pass ended (DTM: one `dtm_transaction_process_total` per processing, ok unless a branch
    /// answered other than success or a write failed).
    func pass(_ report: PassReport, now: Date) {
        let model = report.global.transType.rawValue
        let ok = report.storeError == nil && report.answers.allSatisfy { $0.result.isSuccess }
        count(MetricKey("dtm_transaction_process_total", ("model", model), ("status", ok ? "ok" : "fail")))
        let age = max(0, now.timeIntervalSince(report.global.createTime))
        time(MetricKey("dtm_transaction_handled_duration", ("model", model)), .milliseconds(Int64(age * 1000)))
        count(MetricKey("dtm_passes_total", ("model", model), ("outcome", Self.outcome(report))))
        for answer in report.answers {
            count(MetricKey("dtm_branch_process_total", ("model", model), ("branchid", answer.call.branchID),
                            ("branchtype", answer.call.op.rawValue),
                            ("status", answer.result.isSuccess ? "ok" : "fail")))
        }
    }

    static func outcome(_ report: PassReport) -> String {
        if report.lostRace { return "lost_race" }
        if report.storeError != nil { return "store_error" }
        if report.deadlineExceeded { return "deadline" }
        return report.global.status.isFinished ? "finished" : "unfinished"
    }

    /// A transaction was stored for the first time, in `status` (prepared or submitted).
    func created(model: TransType, status: GlobalStatus) {
        count(MetricKey("dtm_transactions_created_total", ("model", model.rawValue), ("status", status.rawValue)))
    }

    /// A transaction's status changed (every change, final ones included).
    func statusChanged(model: TransType, from: String, to: GlobalStatus) {
        count(MetricKey("dtm_transaction_status_changes_total", ("model", model.rawValue), ("from", from),
                        ("to", to.rawValue)))
        if to.isFinished {
            count(MetricKey("dtm_transactions_finished_total", ("model", model.rawValue), ("status", to.rawValue)))
        }
    }

    // MARK: Branch calls

    /// One branch call made by the coordinator.
    func branchCall(protocol proto: String, result: BranchResult, duration: Duration) {
        count(MetricKey("dtm_branch_calls_total", ("protocol", proto), ("result", Self.name(result))))
        time(MetricKey("dtm_branch_call_duration_seconds", ("protocol", proto)), duration)
    }

    static func name(_ result: BranchResult) -> String {
        switch result {
        case .success: "success"
        case .failure: "failure"
        case .ongoing: "ongoing"
        case .error: "error"
        }
    }

    // MARK: Store

    /// One store operation as its caller saw it: queueing, group commit and fsync included.
    func storeCall(_ operation: String, ok: Bool, duration: Duration) {
        time(MetricKey("dtm_store_operation_duration_seconds", ("op", operation), ("status", ok ? "ok" : "fail")),
             duration)
    }

    /// One SQLite group commit: how many write requests shared it and how long it took.
    func commit(writes: Int, duration: Duration) {
        commitBatchSize.record(writes)
        time(MetricKey("dtm_store_commit_duration_seconds"), duration)
    }

    // MARK: Retention and alerts

    func retentionDeleted(_ rows: Int) {
        Counter(label: "dtm_retention_deleted_total", dimensions: [], factory: factory).increment(by: rows)
    }

    func alert(ok: Bool) {
        count(MetricKey("dtm_alerts_total", ("result", ok ? "sent" : "failed")))
    }

    func alertDropped() {
        count(MetricKey("dtm_alerts_total", ("result", "dropped")))
    }

    // MARK: Gauges, set when scraped

    /// The state of queues at scrape time; `due` nil when the store could not count.
    func gauges(cron: CronDepths, pendingTransactions: Int?, due: Int?, storeQueue: Int?) {
        gauge("dtm_cron_ready_queue", cron.ready)
        gauge("dtm_cron_blocked_passes", cron.blocked)
        gauge("dtm_passes_in_flight", cron.running)
        if let pendingTransactions { gauge("dtm_pending_transactions", pendingTransactions) }
        if let due { gauge("dtm_due_transactions", due) }
        if let storeQueue { gauge("dtm_store_write_queue", storeQueue) }
    }

    /// The Prometheus text exposition of everything recorded so far.
    public func render() -> [UInt8] { registry.emitToBuffer() }

    // MARK: Helpers

    private func count(_ key: MetricKey) {
        counters.handle(key).increment()
    }

    private func time(_ key: MetricKey, _ duration: Duration) {
        timers.handle(key).recordNanoseconds(duration.saturatingNanoseconds)
    }

    private func gauge(_ name: String, _ value: Int) {
        Meter(label: name, dimensions: [], factory: factory).set(value)
    }
}

/// A metric name with up to four label pairs, held inline so that looking its handle up
/// allocates nothing. Names are literals (no reference counting when a key is copied); each
/// metric name is always used with the same label names.
struct MetricKey: Hashable, Sendable {
    let name: StaticString
    private var names: (StaticString, StaticString, StaticString, StaticString) = ("", "", "", "")
    private var values: (String, String, String, String) = ("", "", "", "")
    private var count = 0

    init(_ name: StaticString) { self.name = name }
    init(_ name: StaticString, _ a: (StaticString, String)) {
        self.name = name
        (names.0, values.0, count) = (a.0, a.1, 1)
    }
    init(_ name: StaticString, _ a: (StaticString, String), _ b: (StaticString, String)) {
        self.init(name, a)
        (names.1, values.1, count) = (b.0, b.1, 2)
    }
    init(_ name: StaticString, _ a: (StaticString, String), _ b: (StaticString, String), _ c: (StaticString, String)) {
        self.init(name, a, b)
        (names.2, values.2, count) = (c.0, c.1, 3)
    }
    init(_ name: StaticString, _ a: (StaticString, String), _ b: (StaticString, String), _ c: (StaticString, String),
         _ d: (StaticString, String)) {
        self.init(name, a, b, c)
        (names.3, values.3, count) = (d.0, d.1, 4)
    }

    /// The pairs in order, as swift-metrics takes them.
    var dimensions: [(String, String)] {
        let all = [(names.0, values.0), (names.1, values.1), (names.2, values.2), (names.3, values.3)]
        return all.prefix(count).map { ($0.0.description, $0.1) }
    }

    /// The same literal is the same text; two copies of one literal at different addresses
    /// would only make two handles of the one registry metric.
    static func == (lhs: MetricKey, rhs: MetricKey) -> Bool {
        lhs.name.utf8Start == rhs.name.utf8Start && lhs.count == rhs.count && lhs.values == rhs.values
    }

    func hash(into hasher: inout Hasher) {
        // The name fixes the label names.
        hasher.combine(UInt(bitPattern: name.utf8Start))
        hasher.combine(values.0)
        hasher.combine(values.1)
        hasher.combine(values.2)
        hasher.combine(values.3)
    }
}

/// One handle per metric name and label set, made on first use: making a handle costs a
/// registry lookup under its lock, label validation and allocations; using one is an atomic add.
final class HandleCache<Handle: Sendable>: Sendable {
    private let handles = Locked<[MetricKey: Handle]>([:])
    private let make: @Sendable (String, [(String, String)]) -> Handle

    init(make: @escaping @Sendable (String, [(String, String)]) -> Handle) {
        self.make = make
    }

    func handle(_ key: MetricKey) -> Handle {
        if let handle = handles.withLock({ $0[key] }) { return handle }
        // Made outside our lock; the registry hands a second maker the same metric.
        let made = make(key.name.description, key.dimensions)
        return handles.withLock { handles in
            if let handle = handles[key] { return handle }
            handles[key] = made
            return made
        }
    }
}
