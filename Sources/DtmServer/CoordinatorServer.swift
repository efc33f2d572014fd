import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
import DtmStore
import Foundation
import Logging

/// Settings of a coordinator process; defaults are DTM's.
public struct CoordinatorConfig: Sendable {
    public var host: String
    /// DTM's default gRPC port; 0 picks a free port (tests).
    public var grpcPort: Int
    /// DTM's default HTTP JSON API port; 0 picks a free port (tests).
    public var httpPort: Int
    /// gRPC server limits: message size, streams and header list per connection, connections,
    /// calls in flight, idle timeout.
    public var grpc: GRPCServerConfig
    /// HTTP JSON API limits: requests in flight, idle timeout.
    public var http: HTTPServerLimits
    /// Outbound branch calls: connect timeout and idle eviction of pooled connections.
    public var branchClients: BranchClientConfig
    public var engine: EngineConfig
    /// Identifies this process in the `owner` column of the transactions it leases.
    public var owner: String
    /// Transactions driven at once by the background loop.
    public var maxConcurrentPasses: Int
    /// Transactions held in memory at once (requests being served plus passes waiting to
    /// run); beyond it new work is refused with RESOURCE_EXHAUSTED / 503.
    public var maxPendingTransactions: Int
    /// Retention of finished transactions and the retry alert webhook; off by default.
    public var operations = OperationsConfig()

    /// `httpPort` nil means DTM's 36789, or a free port when `grpcPort` is 0: an in-process
    /// coordinator on a free gRPC port must not take the machine's HTTP port.
    public init(host: String = "0.0.0.0", grpcPort: Int = 36790, httpPort: Int? = nil,
                grpc: GRPCServerConfig = GRPCServerConfig(), http: HTTPServerLimits = HTTPServerLimits(),
                branchClients: BranchClientConfig = BranchClientConfig(),
                engine: EngineConfig = EngineConfig(), owner: String = UUID().uuidString,
                maxConcurrentPasses: Int = 64, maxPendingTransactions: Int = 10_000) {
        self.host = host
        self.grpcPort = grpcPort
        self.httpPort = httpPort ?? (grpcPort == 0 ? 0 : 36789)
        self.grpc = grpc
        self.http = http
        self.branchClients = branchClients
        self.engine = engine
        self.owner = owner
        self.maxConcurrentPasses = maxConcurrentPasses
        self.maxPendingTransactions = maxPendingTransactions
    }
}

/// Outbound branch connections (gRPC and HTTP). Each call's own deadline is its transaction's
/// request timeout; these bound what is shared between calls.
public struct BranchClientConfig: Sendable {
    /// Longest wait for a TCP connection to a branch (a call's deadline may cut it shorter).
    public var connectTimeout: Duration
    /// A pooled branch connection with no call for this long is closed.
    public var idleTimeout: Duration
    /// Largest gRPC branch response accepted.
    public var maxReceiveMessageSize: Int

    public init(connectTimeout: Duration = .seconds(3), idleTimeout: Duration = .seconds(120),
                maxReceiveMessageSize: Int = 4 << 20) {
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxReceiveMessageSize = maxReceiveMessageSize
    }
}

/// A running coordinator: store, engine, background loop, branch clients, the gRPC server
/// and the HTTP JSON API — everything `dtm` starts, startable in process by tests.
public final class CoordinatorServer: Sendable {
    public let config: CoordinatorConfig
    public let store: any TransactionStore
    public let engine: Coordinator
    public let cron: CronLoop
    private let grpcServer: GRPCServer
    private let httpServer: HTTPAPIServer
    private let grpcClient: GRPCClient
    private let httpClient: HTTPClient
    private let cronTask: Task<Void, Never>
    private let logger: Logger
    /// This coordinator's metrics (`GET /api/metrics`); its own registry, not a global one.
    public let metrics: CoordinatorMetrics
    private let background: BackgroundOperations

    /// The bound gRPC port (differs from `config.grpcPort` when that is 0).
    public var grpcPort: Int { grpcServer.port }
    /// The bound HTTP port (differs from `config.httpPort` when that is 0).
    public var httpPort: Int { httpServer.port }

    private init(config: CoordinatorConfig, store: any TransactionStore, engine: Coordinator, cron: CronLoop,
                 grpcServer: GRPCServer, httpServer: HTTPAPIServer, grpcClient: GRPCClient, httpClient: HTTPClient,
                 cronTask: Task<Void, Never>, logger: Logger, metrics: CoordinatorMetrics,
                 background: BackgroundOperations) {
        self.config = config
        self.store = store
        self.engine = engine
        self.cron = cron
        self.grpcServer = grpcServer
        self.httpServer = httpServer
        self.grpcClient = grpcClient
        self.httpClient = httpClient
        self.cronTask = cronTask
        self.logger = logger
        self.metrics = metrics
        self.background = background
    }

    /// Starts the coordinator on `store`. The background loop's first pass resumes every
    /// unfinished transaction already in the store (crash recovery). `branchCaller` replaces
    /// the gRPC/HTTP branch clients (tests that must not call out).
    public static func start(_ config: CoordinatorConfig = CoordinatorConfig(), store: any TransactionStore,
                             branchCaller: (any BranchCaller)? = nil,
                             logger: Logger = Logger(label: "dtm")) async throws -> CoordinatorServer {
        let clients = config.branchClients
        let grpcClient = GRPCClient(config: GRPCClientConfig(connectTimeout: clients.connectTimeout,
                                                             maxReceiveMessageSize: clients.maxReceiveMessageSize,
                                                             idleTimeout: clients.idleTimeout),
                                    logger: logger)
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton,
                                    configuration: HTTPBranchCaller.clientConfiguration(
                                        connectTimeout: clients.connectTimeout, idleTimeout: clients.idleTimeout))
        let metrics = CoordinatorMetrics()
        if let sqlite = store as? SQLiteStore {
            sqlite.observeCommits { writes, duration in metrics.commit(writes: writes, duration: duration) }
        }
        let caller = MeteredBranchCaller(
            base: branchCaller ?? DtmBranchCaller(grpcClient: grpcClient, httpClient: httpClient, logger: logger),
            metrics: metrics)
        let operations = config.operations
        let alerts = operations.alertWebHook.isEmpty ? nil
            : AlertWebhook(url: operations.alertWebHook, limit: operations.alertRetryLimit,
                           queueLimit: operations.alertQueueLimit, timeout: operations.alertTimeout,
                           client: httpClient, metrics: metrics, logger: logger)
        let driver = TransactionDriver(store: ObservedStore(base: store, metrics: metrics, logger: logger),
                                       caller: caller, clock: SystemClock(), config: config.engine,
                                       owner: config.owner)
        let clock = driver.clock
        let cron = CronLoop(driver: driver, maxConcurrent: config.maxConcurrentPasses, onEvent: { event in
            if case .passFinished(let report) = event {
                metrics.pass(report, now: clock.now())
                alerts?.enqueue(for: report)
            }
            log(event, logger)
        })
        let admission = AdmissionGate(limit: config.maxPendingTransactions)
        let engine = Coordinator(driver: driver, schedule: { await cron.enqueue($0) },
                                 runNow: { await cron.runNow($0) }, admission: admission)
        let cronTask = Task { await cron.run() }
        let retention = operations.finishedDataExpire <= 0 ? nil : Task {
            await runRetention(store: store, config: operations, clock: clock, metrics: metrics, logger: logger)
        }
        let background = BackgroundOperations(alerts: alerts, retention: retention)

        let topics = TopicRegistry(store: store, clock: driver.clock)
        let gids = GidGenerator()  // one for both protocols: newGid answers keep sorting by time
        var router = GRPCRouter()
        DtmGRPCService(engine: engine, topics: topics, gids: gids, logger: logger).register(on: &router)
        HealthService(health: { await store.health() }).register(on: &router)
        ReflectionService().register(on: &router)  // last: it lists what is registered before it
        router = instrumented(router, metrics: metrics)
        let observability = HTTPObservability(metrics: metrics) {
            let due = try? await store.countDue(now: clock.now())
            metrics.gauges(cron: await cron.depths(), pendingTransactions: admission.inUse, due: due,
                           storeQueue: (store as? SQLiteStore)?.queuedWrites)
            return metrics.render()
        }
        let admin = CoordinatorAdmin(store: store, config: config.engine, clock: driver.clock,
                                     wake: { await cron.wake() })
        let api = DtmHTTPAPI(engine: engine, admin: admin, topics: topics, gids: gids)
        func abandon() async {
            cronTask.cancel()
            await cronTask.value
            await background.shutdown()
            try? await httpClient.shutdown()
            await grpcClient.shutdown()
        }
        let grpcServer: GRPCServer
        do {
            grpcServer = try await GRPCServer.start(host: config.host, port: config.grpcPort, router: router,
                                                    config: config.grpc, logger: logger)
        } catch {
            await abandon()
            throw error
        }
        let httpServer: HTTPAPIServer
        do {
            httpServer = try await HTTPAPIServer.start(host: config.host, port: config.httpPort,
                                                       router: api.makeRouter(observability: observability), limits: config.http, logger: logger)
        } catch {
            await grpcServer.shutdown(gracePeriod: .zero)
            await abandon()
            throw error
        }
        return CoordinatorServer(config: config, store: store, engine: engine, cron: cron, grpcServer: grpcServer,
                                 httpServer: httpServer, grpcClient: grpcClient, httpClient: httpClient,
                                 cronTask: cronTask, logger: logger, metrics: metrics, background: background)
    }

    /// Graceful stop: no new calls, calls in flight finish (up to `gracePeriod`), then the
    /// background loop stops. Unfinished transactions stay in the store for the next start.
    public func shutdown(gracePeriod: Duration = .seconds(5)) async {
        logger.info("shutting down")
        async let grpcStopped: Void = grpcServer.shutdown(gracePeriod: gracePeriod)
        async let httpStopped: Void = httpServer.shutdown(gracePeriod: gracePeriod)
        _ = await (grpcStopped, httpStopped)
        logger.info("servers stopped; stopping the retry loop")
        cronTask.cancel()
        await cronTask.value
        await background.shutdown()
        await grpcClient.shutdown()
        try? await httpClient.shutdown()
    }
}

/// The alert poster and the retention loop, when configured.
struct BackgroundOperations: Sendable {
    let alerts: AlertWebhook?
    let retention: Task<Void, Never>?

    func shutdown() async {
        retention?.cancel()
        await retention?.value
        await alerts?.shutdown()
    }
}

private func log(_ event: CronEvent, _ logger: Logger) {
    switch event {
    case .passFinished(let report):
        logPass(report, logger)
    case .claimFailed(let error):
        logger.error("cannot lease due transactions", metadata: ["error": "\(error)"])
    }
}
