import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import Foundation
import Hummingbird
import Logging
import NIOCore

// MARK: - Settings

/// Retention of finished transactions and the retry alert webhook (DTM's FinishedDataExpire,
/// AlertRetryLimit and AlertWebHook). The defaults change nothing: rows are kept, no alert.
public struct OperationsConfig: Sendable {
    /// Finished transactions (succeed / failed) last updated longer ago than this many seconds
    /// are deleted with their branches; 0 keeps them (DTM's SQL stores never delete).
    public var finishedDataExpire: Int64
    /// Rows deleted per store transaction, so deleting never holds the store for long.
    public var retentionBatch: Int
    /// Seconds between retention sweeps (each sweep deletes batches until none is left).
    public var retentionInterval: Double
    /// An alert is posted once a branch error leaves retry_count = floor(log2(interval / reset))
    /// at or above this (DTM: AlertRetryLimit, 3).
    public var alertRetryLimit: Int64
    /// Where alerts are POSTed as DTM's JSON `{"gid","status","branch","error","retry_count"}`;
    /// empty sends none (DTM: AlertWebHook).
    public var alertWebHook: String
    /// Alerts waiting to be posted; more are dropped (counted and logged), never waited for.
    public var alertQueueLimit: Int
    /// Longest one alert POST may take.
    public var alertTimeout: Duration

    public init(finishedDataExpire: Int64 = 0, retentionBatch: Int = 100, retentionInterval: Double = 60,
                alertRetryLimit: Int64 = 3, alertWebHook: String = "", alertQueueLimit: Int = 1000,
                alertTimeout: Duration = .seconds(3)) {
        self.finishedDataExpire = finishedDataExpire
        self.retentionBatch = retentionBatch
        self.retentionInterval = retentionInterval
        self.alertRetryLimit = alertRetryLimit
        self.alertWebHook = alertWebHook
        self.alertQueueLimit = alertQueueLimit
        self.alertTimeout = alertTimeout
    }
}

// MARK: - HTTP

/// What the HTTP API needs to count requests and serve `/api/metrics`.
public struct HTTPObservability: Sendable {
    let metrics: CoordinatorMetrics
    let metricsRoute: APIRoute

    /// `page` renders the metrics (after refreshing the gauges it samples).
    init(metrics: CoordinatorMetrics, page: @escaping @Sendable () async -> [UInt8]) {
        self.metrics = metrics
        metricsRoute = APIRoute(.get, "/api/metrics", contentType: "text/plain; version=0.0.4; charset=utf-8",
                                page: page)
    }
}

/// DTM's `dtm_server_process_total` / `dtm_server_response_duration` for the HTTP API: `api` is
/// the route's last path segment, lower-cased as DTM does; paths no route serves count as
/// `unknown`, so a scanner cannot grow the label set. Each route's metrics are made here, once.
struct RequestMetrics: RouterMiddleware {
    typealias Context = BasicRequestContext
    /// Every route with its API's metrics, in the order routes are matched.
    let routes: [(route: APIRoute, metrics: APIMetrics)]
    let unknown: APIMetrics

    init(metrics: CoordinatorMetrics, routes: [APIRoute]) {
        self.routes = routes.map { ($0, metrics.api(.http, apiName($0.path))) }
        unknown = metrics.api(.http, "unknown")
    }

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let path = request.uri.path
        let api = routes.first { $0.route.matches(path) }?.metrics ?? unknown
        do {
            let response = try await next(request, context)
            api.request(ok: response.status.code < 400, duration: .now - start)
            return response
        } catch {
            api.request(ok: false, duration: .now - start)
            throw error
        }
    }
}

/// DTM's `extractFromPath`: the last path segment, lower-cased.
func apiName(_ path: String) -> String {
    (path.split(separator: "/").last.map(String.init) ?? path).lowercased()
}

// MARK: - gRPC

/// The router with every unary handler counted and timed (`type` grpc); each path's metrics
/// are made here, once, not per call.
func instrumented(_ router: GRPCRouter, metrics: CoordinatorMetrics) -> GRPCRouter {
    var wrapped = GRPCRouter()
    for path in router.paths {
        guard let handler = router.handler(for: path) else { continue }
        let api = metrics.api(.grpc, apiName(path))
        switch handler {
        case .sync(let body):
            wrapped.register(path, .sync { request throws(RPCError) in
                let start = ContinuousClock.now
                do throws(RPCError) {
                    let response = try body(request)
                    api.request(ok: true, duration: .now - start)
                    return response
                } catch {
                    api.request(ok: false, duration: .now - start)
                    throw error
                }
            })
        case .async(let body):
            wrapped.register(path, .async { request throws(RPCError) in
                let start = ContinuousClock.now
                do throws(RPCError) {
                    let response = try await body(request)
                    api.request(ok: true, duration: .now - start)
                    return response
                } catch {
                    api.request(ok: false, duration: .now - start)
                    throw error
                }
            })
        case .streaming:
            wrapped.register(path, handler)
        }
    }
    return wrapped
}

// MARK: - Branch calls

/// Counts and times every branch call by protocol and result.
struct MeteredBranchCaller: BranchCaller {
    let base: any BranchCaller
    let metrics: CoordinatorMetrics

    var endsCallsWithinTimeout: Bool { base.endsCallsWithinTimeout }

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        let start = ContinuousClock.now
        let result = await base.call(call, of: global)
        metrics.branchCall(protocol: call.usesHTTP(global.transProtocol) ? .http : .grpc, result: result,
                           duration: .now - start)
        return result
    }
}

// MARK: - Pass logs

/// One line per failed branch answer of a pass (gid, branch, op, url, result, attempt, next
/// retry), plus the pass-level warnings. State changes are logged by `ObservedStore`.
func logPass(_ report: PassReport, _ logger: Logger) {
    let global = report.global
    // Metadata is built only for lines the logger's level lets through (swift-log evaluates the
    // `metadata:` argument lazily): a pass that logs nothing computes nothing.
    func base() -> Logger.Metadata {
        var base: Logger.Metadata = ["gid": Redaction.logValue(global.gid), "trans_type": "\(global.transType.rawValue)",
                                     "status": "\(global.status.rawValue)"]
        if let storeError = report.storeError { base["store_error"] = "\(storeError)" }
        return base
    }
    if report.deadlineExceeded {
        logger.warning("pass deadline reached; calls still running were abandoned and will be retried",
                       metadata: base())
    }
    for answer in report.answers where !answer.result.isSuccess {
        let level: Logger.Level = if case .ongoing = answer.result { .info } else { .warning }
        logger.log(level: level, "branch call failed", metadata: {
            var metadata = base()
            metadata["branch"] = "\(answer.call.branchID)"
            metadata["op"] = "\(answer.call.op.rawValue)"
            metadata["url"] = Redaction.logValue(answer.call.url)
            metadata["result"] = "\(CoordinatorMetrics.name(answer.result))"
            if !answer.result.message.isEmpty { metadata["error"] = Redaction.logValue(answer.result.message) }
            // DTM's retry count after this answer (1 after the first error, 2 after the second...).
            let note = report.branchErrors.first { $0.call == answer.call && $0.message == answer.result.message }
            metadata["attempt"] = "\(note.map { $0.retryCount } ?? 0)"
            metadata["next_retry"] = global.status.isFinished ? "none" : "\(JSONText.rfc3339(global.nextCronTime))"
            return metadata
        }())
    }
    if !global.status.isFinished {
        logger.debug("pass ended; transaction unfinished", metadata: base().merging([
            "next_retry": "\(JSONText.rfc3339(global.nextCronTime))"]) { $1 })
    }
}

// MARK: - Alerts

/// DTM's retry alert: a JSON POST to AlertWebHook for each branch error that leaves a
/// transaction's retry count at or past AlertRetryLimit. Posting happens on its own task from a
/// bounded queue, so a slow or dead webhook never delays a pass; failures are logged and counted.
final class AlertWebhook: Sendable {
    struct Alert: Sendable {
        var gid: String
        var status: String
        var branch: String
        var error: String
        var retryCount: Int64

        /// DTM's body: `{"branch","error","gid","retry_count","status"}`.
        var body: [UInt8] {
            Array(JSONText.sorted(["gid": .string(gid), "status": .string(status), "branch": .string(branch),
                                   "error": .string(error), "retry_count": .int(retryCount)]).text.utf8)
        }
    }

    let url: String
    let limit: Int64
    private let queue: AsyncStream<Alert>.Continuation
    private let worker: Task<Void, Never>
    private let metrics: CoordinatorMetrics
    private let logger: Logger

    init(url: String, limit: Int64, queueLimit: Int, timeout: Duration, client: HTTPClient,
         metrics: CoordinatorMetrics, logger: Logger) {
        self.url = url
        self.limit = limit
        self.metrics = metrics
        self.logger = logger
        let (stream, continuation) = AsyncStream.makeStream(of: Alert.self,
                                                            bufferingPolicy: .bufferingOldest(max(1, queueLimit)))
        queue = continuation
        worker = Task {
            for await alert in stream {
                await Self.post(alert, to: url, client: client, timeout: timeout, metrics: metrics, logger: logger)
            }
        }
    }

    /// The alerts a finished pass calls for (DTM: one per erroring branch call past the limit).
    func alerts(for report: PassReport) -> [Alert] {
        report.branchErrors.filter { $0.retryCount >= limit }.map { note in
            Alert(gid: report.global.gid, status: report.global.status.rawValue, branch: note.call.url,
                  error: note.message, retryCount: note.retryCount)
        }
    }

    /// Queues the pass's alerts without waiting; a full queue drops them (logged, counted).
    func enqueue(for report: PassReport) {
        for alert in alerts(for: report) {
            if case .dropped = queue.yield(alert) {
                metrics.alertDropped()
                logger.error("alert webhook queue full; alert dropped", metadata: [
                    "gid": "\(alert.gid)", "retry_count": "\(alert.retryCount)"])
            }
        }
    }

    /// Stops posting: queued alerts not yet sent are dropped.
    func shutdown() async {
        queue.finish()
        worker.cancel()
        await worker.value
    }

    private static func post(_ alert: Alert, to url: String, client: HTTPClient, timeout: Duration,
                             metrics: CoordinatorMetrics, logger: Logger) async {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: alert.body))
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(timeout.saturatingNanoseconds))
            _ = try await response.body.collect(upTo: 64 << 10)
            guard (200..<300).contains(response.status.code) else {
                throw AlertFailed(status: Int(response.status.code))
            }
            metrics.alert(ok: true)
        } catch {
            metrics.alert(ok: false)
            logger.error("alerting webhook error", metadata: ["gid": Redaction.logValue(alert.gid), "url": Redaction.logValue(url),
                                                              "error": "\(error)"])
        }
    }
}

struct AlertFailed: Error, CustomStringConvertible {
    let status: Int
    var description: String { "the webhook answered HTTP \(status)" }
}

// MARK: - Retention

/// Deletes finished transactions older than `finishedDataExpire`, `retentionBatch` rows per
/// store transaction, every `retentionInterval` seconds, until cancelled.
func runRetention(store: any TransactionStore, config: OperationsConfig, clock: any DtmClock,
                  metrics: CoordinatorMetrics, logger: Logger) async {
    while !Task.isCancelled {
        _ = await sweepFinished(store: store, config: config, clock: clock, metrics: metrics, logger: logger)
        try? await Task.sleep(for: .milliseconds(Int64(config.retentionInterval * 1000)))
    }
}

/// One sweep: batches until a batch comes back short. Returns how many rows it deleted.
@discardableResult
func sweepFinished(store: any TransactionStore, config: OperationsConfig, clock: any DtmClock,
                   metrics: CoordinatorMetrics, logger: Logger) async -> Int {
    guard config.finishedDataExpire > 0 else { return 0 }
    let batch = max(1, config.retentionBatch)
    var total = 0
    while !Task.isCancelled {
        let cutoff = clock.now().addingTimeInterval(-Double(config.finishedDataExpire))
        do {
            let deleted = try await store.deleteFinished(before: cutoff, limit: batch)
            total += deleted
            metrics.retentionDeleted(deleted)
            if deleted < batch { break }
        } catch {
            logger.error("retention: cannot delete finished transactions", metadata: ["error": "\(error)"])
            break
        }
    }
    if total > 0 {
        logger.info("retention: deleted finished transactions", metadata: [
            "deleted": "\(total)", "older_than_seconds": "\(config.finishedDataExpire)"])
    }
    return total
}
