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
    private let commitBatchSize: Recorder

    // Handles of what is counted per request, pass, branch call or store write, made on first use
    // and then found by slot (`HandleTable`): no label text is hashed or compared per event.
    // Request handles live in each API's `APIMetrics`, made when its route is registered.
    /// `dtm_transaction_process_total` by model and status.
    private let transactionProcess = HandleTable<CoreMetrics.Counter>(TransType.self, CallStatus.self)
    /// `dtm_transaction_handled_duration` by model.
    private let handledDuration = HandleTable<CoreMetrics.Timer>(TransType.self)
    /// `dtm_passes_total` by model and outcome.
    private let passes = HandleTable<CoreMetrics.Counter>(TransType.self, PassOutcome.self)
    /// `dtm_branch_process_total`: branch ids and ops are whatever transactions name, so hashed.
    private let branchProcess = HandleCache<BranchProcessKey, CoreMetrics.Counter>()
    /// `dtm_transactions_created_total` by model and status.
    private let created = HandleTable<CoreMetrics.Counter>(TransType.self, GlobalStatus.self)
    /// `dtm_transaction_status_changes_total` by model, origin and new status.
    private let statusChanges = HandleTable<CoreMetrics.Counter>(TransType.self, StatusOrigin.self, GlobalStatus.self)
    /// `dtm_transactions_finished_total` by model and final status.
    private let finished = HandleTable<CoreMetrics.Counter>(TransType.self, GlobalStatus.self)
    /// `dtm_branch_calls_total` by protocol and result.
    private let branchCalls = HandleTable<CoreMetrics.Counter>(Transport.self, BranchResult.self)
    /// `dtm_branch_call_duration_seconds` by protocol.
    private let branchCallDuration = HandleTable<CoreMetrics.Timer>(Transport.self)
    /// `dtm_store_operation_duration_seconds` by operation and status.
    private let storeCalls = HandleTable<CoreMetrics.Timer>(StoreOperation.self, CallStatus.self)
    /// `dtm_store_commit_duration_seconds`, which has no labels.
    private let commitDuration = HandleTable<CoreMetrics.Timer>(slots: 1)
    /// `dtm_alerts_total` by result.
    private let alerts = HandleTable<CoreMetrics.Counter>(AlertResult.self)

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
        commitBatchSize = Recorder(label: "dtm_store_commit_batch_size", dimensions: [], aggregate: true,
                                   factory: factory)
        Meter(label: "dtm_server_info", dimensions: [("gin_version", "none"), ("grpc_version", "nghttp2"),
                                                     ("swift_dtm_version", swiftDtmVersion)],
              factory: factory).set(1)
    }

    // MARK: Requests (DTM: dtm_server_process_total, dtm_server_response_duration)

    /// The request metrics of one gRPC or HTTP API (`api` the lower-cased last path segment),
    /// to be made once per route and kept: its series still appear with the first request.
    func api(_ type: Transport, _ api: String) -> APIMetrics {
        APIMetrics(type: type, api: api, factory: factory)
    }

    // MARK: Transactions

    /// A pass ended (DTM: one `dtm_transaction_process_total` per processing, ok unless a branch
    /// answered other than success or a write failed).
    func pass(_ report: PassReport, now: Date) {
        let model = report.global.transType
        let status = CallStatus(ok: report.storeError == nil && report.answers.allSatisfy { $0.result.isSuccess })
        transactionProcess.handle(model, status) {
            factory.counter("dtm_transaction_process_total", ("model", model.rawValue), ("status", status.rawValue))
        }.increment()
        let age = max(0, now.timeIntervalSince(report.global.createTime))
        handledDuration.handle(model) {
            factory.timer("dtm_transaction_handled_duration", ("model", model.rawValue))
        }.record(.milliseconds(Int64(age * 1000)))
        let outcome = PassOutcome(report)
        passes.handle(model, outcome) {
            factory.counter("dtm_passes_total", ("model", model.rawValue), ("outcome", outcome.rawValue))
        }.increment()
        for answer in report.answers {
            let key = BranchProcessKey(model: model, branchID: answer.call.branchID, op: answer.call.op,
                                       ok: answer.result.isSuccess)
            branchProcess.handle(key) {
                factory.counter("dtm_branch_process_total", ("model", model.rawValue), ("branchid", key.branchID),
                                ("branchtype", key.op.rawValue), ("status", key.ok ? "ok" : "fail"))
            }.increment()
        }
    }

    /// A transaction was stored for the first time, in `status` (prepared or submitted).
    func created(model: TransType, status: GlobalStatus) {
        created.handle(model, status) {
            factory.counter("dtm_transactions_created_total", ("model", model.rawValue), ("status", status.rawValue))
        }.increment()
    }

    /// A transaction's status changed (every change, final ones included).
    func statusChanged(model: TransType, from: StatusOrigin, to: GlobalStatus) {
        statusChanges.handle(model, from, to) {
            factory.counter("dtm_transaction_status_changes_total", ("model", model.rawValue), ("from", from.label),
                            ("to", to.rawValue))
        }.increment()
        if to.isFinished {
            finished.handle(model, to) {
                factory.counter("dtm_transactions_finished_total", ("model", model.rawValue), ("status", to.rawValue))
            }.increment()
        }
    }

    // MARK: Branch calls

    /// One branch call made by the coordinator.
    func branchCall(protocol proto: Transport, result: BranchResult, duration: Duration) {
        branchCalls.handle(proto, result) {
            factory.counter("dtm_branch_calls_total", ("protocol", proto.rawValue), ("result", Self.name(result)))
        }.increment()
        branchCallDuration.handle(proto) {
            factory.timer("dtm_branch_call_duration_seconds", ("protocol", proto.rawValue))
        }.record(duration)
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
    func storeCall(_ operation: StoreOperation, ok: Bool, duration: Duration) {
        let status = CallStatus(ok: ok)
        storeCalls.handle(operation, status) {
            factory.timer("dtm_store_operation_duration_seconds", ("op", operation.rawValue),
                          ("status", status.rawValue))
        }.record(duration)
    }

    /// One SQLite group commit: how many write requests shared it and how long it took.
    func commit(writes: Int, duration: Duration) {
        commitBatchSize.record(writes)
        commitDuration.handle(0) { factory.timer("dtm_store_commit_duration_seconds") }.record(duration)
    }

    // MARK: Retention and alerts

    func retentionDeleted(_ rows: Int) {
        Counter(label: "dtm_retention_deleted_total", dimensions: [], factory: factory).increment(by: rows)
    }

    func alert(ok: Bool) {
        count(ok ? .sent : .failed)
    }

    func alertDropped() {
        count(.dropped)
    }

    private func count(_ result: AlertResult) {
        alerts.handle(result) { factory.counter("dtm_alerts_total", ("result", result.rawValue)) }.increment()
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

    private func gauge(_ name: String, _ value: Int) {
        Meter(label: name, dimensions: [], factory: factory).set(value)
    }
}

/// DTM's `dtm_server_process_total` and `dtm_server_response_duration` of one API, and for
/// `submit` `dtm_submit_duration_seconds`. Made when a route is registered, so a request finds
/// its handles in slots instead of hashing its type and api; two of these for one API (two
/// routes ending in the same segment) share the registry's series.
final class APIMetrics: Sendable {
    let type: Transport
    let api: String
    private let factory: PrometheusMetricsFactory
    private let isSubmit: Bool
    /// `dtm_server_process_total` by status.
    private let processed = HandleTable<CoreMetrics.Counter>(CallStatus.self)
    /// `dtm_server_response_duration`, then `dtm_submit_duration_seconds`.
    private let durations = HandleTable<CoreMetrics.Timer>(slots: 2)

    fileprivate init(type: Transport, api: String, factory: PrometheusMetricsFactory) {
        self.type = type
        self.api = api
        self.factory = factory
        isSubmit = api == "submit"
    }

    /// One request answered (`ok`) or not, `duration` after it arrived.
    func request(ok: Bool, duration: Duration) {
        let status = CallStatus(ok: ok)
        processed.handle(status) {
            factory.counter("dtm_server_process_total", ("type", type.rawValue), ("api", api),
                            ("status", status.rawValue))
        }.increment()
        durations.handle(0) {
            factory.timer("dtm_server_response_duration", ("type", type.rawValue), ("api", api))
        }.record(duration)
        if isSubmit {
            durations.handle(1) {
                factory.timer("dtm_submit_duration_seconds", ("type", type.rawValue))
            }.record(duration)
        }
    }
}

// MARK: - Label values

/// A label whose values are a closed set, each value with its own slot in a `HandleTable`.
protocol SlotLabel {
    /// How many values the label has.
    static var slotCount: Int { get }
    /// This value's slot, in `0..<slotCount`.
    var slot: Int { get }
}

/// `status` of requests and store operations.
enum CallStatus: String, CaseIterable, SlotLabel {
    case ok, fail

    init(ok: Bool) { self = ok ? .ok : .fail }

    static let slotCount = allCases.count
    var slot: Int { self == .ok ? 0 : 1 }
}

/// `type` of requests and `protocol` of branch calls.
enum Transport: String, CaseIterable, SlotLabel {
    case http, grpc

    static let slotCount = allCases.count
    var slot: Int { self == .http ? 0 : 1 }
}

/// `outcome` of `dtm_passes_total`.
enum PassOutcome: String, CaseIterable, SlotLabel {
    case finished, unfinished, lostRace = "lost_race", storeError = "store_error", deadline

    init(_ report: PassReport) {
        self = if report.lostRace { .lostRace }
            else if report.storeError != nil { .storeError }
            else if report.deadlineExceeded { .deadline }
            else if report.global.status.isFinished { .finished }
            else { .unfinished }
    }

    static let slotCount = allCases.count
    var slot: Int {
        switch self {
        case .finished: 0
        case .unfinished: 1
        case .lostRace: 2
        case .storeError: 3
        case .deadline: 4
        }
    }
}

/// `op` of `dtm_store_operation_duration_seconds`: the `TransactionStore` writes `ObservedStore` times.
enum StoreOperation: String, CaseIterable, SlotLabel {
    case saveNew, changeStatus, forceFail, appendBranches, updateBranches, touchCron, claimDue, extendLeases
    case deleteFinished

    static let slotCount = allCases.count
    var slot: Int {
        switch self {
        case .saveNew: 0
        case .changeStatus: 1
        case .forceFail: 2
        case .appendBranches: 3
        case .updateBranches: 4
        case .touchCron: 5
        case .claimDue: 6
        case .extendLeases: 7
        case .deleteFinished: 8
        }
    }
}

/// `from` of `dtm_transaction_status_changes_total`: the status a change left.
enum StatusOrigin: SlotLabel {
    case status(GlobalStatus)
    /// The transaction did not exist (`none`): it was just created.
    case absent
    /// The status was not read (`unreadable`): an operator forced the transaction to fail.
    case unreadable

    var label: String {
        switch self {
        case .status(let status): status.rawValue
        case .absent: "none"
        case .unreadable: "unreadable"
        }
    }

    static let slotCount = GlobalStatus.slotCount + 2
    var slot: Int {
        switch self {
        case .status(let status): status.slot
        case .absent: GlobalStatus.slotCount
        case .unreadable: GlobalStatus.slotCount + 1
        }
    }
}

/// `result` of `dtm_alerts_total`.
enum AlertResult: String, CaseIterable, SlotLabel {
    case sent, failed, dropped

    static let slotCount = allCases.count
    var slot: Int {
        switch self {
        case .sent: 0
        case .failed: 1
        case .dropped: 2
        }
    }
}

extension TransType: SlotLabel {
    static let slotCount = allCases.count
    var slot: Int {
        switch self {
        case .saga: 0
        case .tcc: 1
        case .msg: 2
        case .xa: 3
        case .workflow: 4
        }
    }
}

extension GlobalStatus: SlotLabel {
    static let slotCount = allCases.count
    var slot: Int {
        switch self {
        case .prepared: 0
        case .submitted: 1
        case .aborting: 2
        case .succeed: 3
        case .failed: 4
        }
    }
}

/// `result` of `dtm_branch_calls_total`, named by `CoordinatorMetrics.name(_:)`.
extension BranchResult: SlotLabel {
    static let slotCount = 4
    var slot: Int {
        switch self {
        case .success: 0
        case .failure: 1
        case .ongoing: 2
        case .error: 3
        }
    }
}

/// `dtm_branch_process_total`'s labels but the metric name: its branch id and op come from the
/// transactions, so its handles are found by hash. The model and status hash as one small
/// integer, leaving two short strings to hash per answer.
struct BranchProcessKey: Hashable, Sendable {
    let model: TransType
    let branchID: String
    let op: BranchOp
    let ok: Bool

    func hash(into hasher: inout Hasher) {
        hasher.combine(model.slot &* 2 &+ (ok ? 1 : 0))
        hasher.combine(branchID)
        hasher.combine(op.rawValue)
    }
}

// MARK: - Handles

/// One handle per label combination of a metric, in a fixed slot made on first use: making a
/// handle registers its series (so a series appears only once something happened to it) and
/// costs a registry lookup under its lock, label validation and allocations; finding one again
/// is an array read under an uncontended lock, with no label text hashed or compared.
final class HandleTable<Handle: Sendable>: Sendable {
    private let handles: Locked<[Handle?]>

    init(slots: Int) {
        handles = Locked([Handle?](repeating: nil, count: slots))
    }

    convenience init<A: SlotLabel>(_: A.Type) {
        self.init(slots: A.slotCount)
    }

    convenience init<A: SlotLabel, B: SlotLabel>(_: A.Type, _: B.Type) {
        self.init(slots: A.slotCount * B.slotCount)
    }

    convenience init<A: SlotLabel, B: SlotLabel, C: SlotLabel>(_: A.Type, _: B.Type, _: C.Type) {
        self.init(slots: A.slotCount * B.slotCount * C.slotCount)
    }

    /// The handle in `slot`, made by `make` the first time. `make` runs outside the lock; should
    /// two threads make one at once, the registry hands both the same metric.
    func handle(_ slot: Int, make: () -> Handle) -> Handle {
        if let handle = handles.withLock({ $0[slot] }) { return handle }
        let made = make()
        return handles.withLock { handles in
            if let handle = handles[slot] { return handle }
            handles[slot] = made
            return made
        }
    }

    /// The label types must be those the table was made with, in the same order.
    func handle<A: SlotLabel>(_ a: A, make: () -> Handle) -> Handle {
        handle(a.slot, make: make)
    }

    func handle<A: SlotLabel, B: SlotLabel>(_ a: A, _ b: B, make: () -> Handle) -> Handle {
        handle(a.slot * B.slotCount + b.slot, make: make)
    }

    func handle<A: SlotLabel, B: SlotLabel, C: SlotLabel>(_ a: A, _ b: B, _ c: C, make: () -> Handle) -> Handle {
        handle((a.slot * B.slotCount + b.slot) * C.slotCount + c.slot, make: make)
    }
}

/// One handle per key, made on first use, for labels whose values are not a closed set.
final class HandleCache<Key: Hashable & Sendable, Handle: Sendable>: Sendable {
    private let handles = Locked<[Key: Handle]>([:])

    /// The handle of `key`, made by `make` the first time (outside the lock, as in `HandleTable`).
    func handle(_ key: Key, make: () -> Handle) -> Handle {
        if let handle = handles.withLock({ $0[key] }) { return handle }
        let made = make()
        return handles.withLock { handles in
            if let handle = handles[key] { return handle }
            handles[key] = made
            return made
        }
    }
}

extension PrometheusMetricsFactory {
    /// The counter of `name` with these label pairs, registering its series if new.
    fileprivate func counter(_ name: String, _ dimensions: (String, String)...) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: name, dimensions: dimensions, factory: self)
    }

    /// The timer (a duration histogram) of `name` with these label pairs, registering its series if new.
    fileprivate func timer(_ name: String, _ dimensions: (String, String)...) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: name, dimensions: dimensions, factory: self)
    }
}

extension CoreMetrics.Timer {
    fileprivate func record(_ duration: Duration) {
        recordNanoseconds(duration.saturatingNanoseconds)
    }
}
