import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
import DtmStore
import Foundation
import Logging
import ServiceLifecycle

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
    /// TLS on both servers (gRPC with ALPN h2, the JSON API over HTTP/1.1), optionally mutual;
    /// nil serves plaintext, as DTM does.
    public var tls: ServerTLSConfig? = nil
    /// Authentication, the branch allow-list and redaction (README "Security"); all off by default.
    public var security = SecurityConfig()
    /// Retention of finished transactions and the retry alert webhook; off by default.
    public var operations = OperationsConfig()

    /// `httpPort` nil means DTM's 36789, or a free port when `grpcPort` is 0: an in-process
    /// coordinator on a free gRPC port must not take the machine's HTTP port.
    public init(host: String = "0.0.0.0", grpcPort: Int = 36790, httpPort: Int? = nil,
                grpc: GRPCServerConfig = GRPCServerConfig(), http: HTTPServerLimits = HTTPServerLimits(),
                branchClients: BranchClientConfig = BranchClientConfig(),
                engine: EngineConfig = EngineConfig(), owner: String = UUID().uuidString,
                maxConcurrentPasses: Int = 512, maxPendingTransactions: Int = 10_000) {
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
    /// Trust (CA bundle; default the system store) and client certificate of `grpcs://` and
    /// `https://` branch calls.
    public var tls = ClientTLSConfig()

    public init(connectTimeout: Duration = .seconds(3), idleTimeout: Duration = .seconds(120),
                maxReceiveMessageSize: Int = 4 << 20) {
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxReceiveMessageSize = maxReceiveMessageSize
    }
}

/// A running coordinator: store, engine, background loop, branch clients, the gRPC server
/// and the HTTP JSON API — everything `dtm` starts, startable in process by tests. Its parts run
/// as services of one `ServiceGroup`, which stops them in reverse order: the HTTP and gRPC
/// listeners first (no new work; requests in flight finish), then the retry loop (passes under
/// way finish), then the branch clients, then the caller's services (the store).
public final class CoordinatorServer: Sendable {
    public let config: CoordinatorConfig
    public let store: any TransactionStore
    public let engine: Coordinator
    public let cron: CronLoop
    private let grpcServer: GRPCServer
    private let group: ServiceGroup
    private let running: Task<Result<Void, any Error>, Never>
    private let logger: Logger
    /// The servers' reloading TLS identity, when `config.tls` is set.
    public let tls: ServerTLS?
    /// This coordinator's metrics (`GET /api/metrics`); its own registry, not a global one.
    public let metrics: CoordinatorMetrics
    private let background: BackgroundOperations

    /// The bound gRPC port (differs from `config.grpcPort` when that is 0).
    public var grpcPort: Int { grpcServer.port }
    /// The bound HTTP port (differs from `config.httpPort` when that is 0).
    public let httpPort: Int

    private init(config: CoordinatorConfig, store: any TransactionStore, engine: Coordinator, cron: CronLoop,
                 grpcServer: GRPCServer, httpPort: Int, group: ServiceGroup,
                 running: Task<Result<Void, any Error>, Never>, tls: ServerTLS?, logger: Logger,
                 metrics: CoordinatorMetrics, background: BackgroundOperations) {
        self.config = config
        self.store = store
        self.engine = engine
        self.cron = cron
        self.grpcServer = grpcServer
        self.httpPort = httpPort
        self.group = group
        self.running = running
        self.tls = tls
        self.logger = logger
        self.metrics = metrics
        self.background = background
    }

    /// Starts the coordinator on `store` and returns once both ports listen. The background
    /// loop's first pass resumes every unfinished transaction already in the store (crash
    /// recovery). `branchCaller` replaces the gRPC/HTTP branch clients (tests that must not
    /// call out). `lifecycle` adds signals and the caller's services (the `dtm` executable).
    public static func start(_ config: CoordinatorConfig = CoordinatorConfig(), store: any TransactionStore,
                             branchCaller: (any BranchCaller)? = nil,
                             logger: Logger = Logger(label: "dtm"),
                             lifecycle: CoordinatorLifecycle = CoordinatorLifecycle()) async throws -> CoordinatorServer {
        let clients = config.branchClients
        var auth: Authenticator?
        if let authConfig = config.security.auth, authConfig.isEnabled {
            auth = try await Authenticator.make(authConfig, logger: logger)
        }
        var engineConfig = config.engine
        engineConfig.limits.branchAllowList = config.security.branchAllowList ?? engineConfig.limits.branchAllowList
        // TLS files are checked before anything starts: a bad file stops the start-up.
        let serverTLS = try config.tls.map { config throws(TLSSetupError) in try ServerTLS(config, logger: logger) }
        var httpClientConfiguration = HTTPBranchCaller.clientConfiguration(
            connectTimeout: clients.connectTimeout, idleTimeout: clients.idleTimeout)
        if clients.tls.isCustomized {
            _ = try clients.tls.makeContext()
            httpClientConfiguration.tlsConfiguration = try clients.tls.makeConfiguration()
        }
        let grpcClient = GRPCClient(config: GRPCClientConfig(connectTimeout: clients.connectTimeout,
                                                             maxReceiveMessageSize: clients.maxReceiveMessageSize,
                                                             idleTimeout: clients.idleTimeout, tls: clients.tls),
                                    logger: logger)
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpClientConfiguration)
        let metrics = CoordinatorMetrics()
        if let sqlite = store as? SQLiteStore {
            sqlite.observeCommits { writes, duration in metrics.commit(writes: writes, duration: duration) }
        }
        let caller = MeteredBranchCaller(
            base: FencedBranchCaller(
                inner: branchCaller ?? DtmBranchCaller(grpcClient: grpcClient, httpClient: httpClient, logger: logger),
                allowList: engineConfig.limits.branchAllowList),
            metrics: metrics)
        let operations = config.operations
        let alerts = operations.alertWebHook.isEmpty ? nil
            : AlertWebhook(url: operations.alertWebHook, limit: operations.alertRetryLimit,
                           queueLimit: operations.alertQueueLimit, timeout: operations.alertTimeout,
                           client: httpClient, metrics: metrics, logger: logger)
        let driver = TransactionDriver(store: ObservedStore(base: store, metrics: metrics, logger: logger),
                                       caller: caller, clock: SystemClock(), config: engineConfig,
                                       owner: config.owner)
        let clock = driver.clock
        let cron = CronLoop(driver: driver, maxConcurrent: config.maxConcurrentPasses, onEvent: { event in
            if case .passFinished(let report) = event {
                metrics.pass(report, now: clock.now())
                alerts?.enqueue(for: report)
            }
            log(event, logger)
        }, passExecutor: { EventLoopTaskExecutor.next() })
        let admission = AdmissionGate(limit: config.maxPendingTransactions)
        let engine = Coordinator(driver: driver, schedule: { cron.enqueue($0) },
                                 runNow: { await cron.runNow($0) }, admission: admission)
        let retention = operations.finishedDataExpire <= 0 ? nil : Task {
            await runRetention(store: store, config: operations, clock: clock, metrics: metrics, logger: logger)
        }
        let background = BackgroundOperations(alerts: alerts, retention: retention)

        let topics = TopicRegistry(store: store, clock: driver.clock)
        let gids = GidGenerator()  // one for both protocols: newGid answers keep sorting by time
        var router = GRPCRouter()
        DtmGRPCService(engine: engine, topics: topics, gids: gids, logger: logger, auth: auth).register(on: &router)
        // Open with authentication on: health is for load balancers, reflection describes the
        // public dtmgimp schema only (README "Security").
        HealthService(health: { await store.health() }).register(on: &router)
        ReflectionService().register(on: &router)  // last: it lists what is registered before it
        router = instrumented(router, metrics: metrics)
        let observability = HTTPObservability(metrics: metrics) {
            let due = try? await store.countDue(now: clock.now())
            metrics.gauges(cron: await cron.depths(), pendingTransactions: admission.inUse, due: due,
                           storeQueue: (store as? SQLiteStore)?.queuedWrites)
            return metrics.render()
        }
        let admin = CoordinatorAdmin(store: store, config: engineConfig, clock: driver.clock,
                                     wake: { await cron.wake() })
        let api = DtmHTTPAPI(engine: engine, admin: admin, topics: topics, gids: gids, auth: auth,
                             redactQuery: config.security.redactQuery)
        let grpcServer: GRPCServer
        // The coordinator's handlers never block a thread: they run on their connection's event
        // loop, and passes on the loops too (passExecutor above), so that a Submit, its store
        // write's answer and its branch calls' answers continue without waking another thread.
        var grpcConfig = config.grpc
        grpcConfig.handlersOnEventLoop = true
        do {
            grpcServer = try await GRPCServer.start(host: config.host, port: config.grpcPort, router: router,
                                                    config: grpcConfig, tls: serverTLS, logger: logger)
        } catch {
            await background.shutdown()
            try? await httpClient.shutdown()
            await grpcClient.shutdown()
            throw error
        }
        let (ready, readiness) = AsyncStream.makeStream(of: Result<Int, any Error>.self)
        let http: any Service
        do {
            http = try HTTPAPIServer.application(host: config.host, port: config.httpPort,
                                                 router: api.makeRouter(observability: observability),
                                                 limits: config.http, tls: serverTLS, logger: logger,
                                                 onServerRunning: { readiness.yield(.success($0)) })
        } catch {
            await grpcServer.shutdown(gracePeriod: .zero)
            await background.shutdown()
            try? await httpClient.shutdown()
            await grpcClient.shutdown()
            throw error
        }
        // Started together; stopped one by one from the last to the first.
        let services: [any Service] = lifecycle.services + [
            BranchClientsService(grpcClient: grpcClient, httpClient: httpClient),
            TLSWatchService(tls: serverTLS),
            BackgroundOperationsService(background: background),
            RetryLoopService(cron: cron),
            GRPCListenerService(server: grpcServer),
            http,
        ]
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: lifecycle.signals,
                                                      logger: logger)
        configuration.maximumGracefulShutdownDuration = lifecycle.shutdownTimeout
        let group = ServiceGroup(configuration: configuration)
        let running = Task { () -> Result<Void, any Error> in
            let result: Result<Void, any Error>
            do {
                try await group.run()
                result = .success(())
            } catch {
                result = .failure(error)
            }
            // Read only when the group ends before the HTTP server listened.
            readiness.yield(.failure(result.failure ?? CoordinatorStopped()))
            readiness.finish()
            return result
        }
        var iterator = ready.makeAsyncIterator()
        switch await iterator.next() ?? .failure(CoordinatorStopped()) {
        case .success(let port):
            if auth == nil && !isLoopback(config.host) {
                logger.warning("""
                    no authentication: anyone who can reach this coordinator can submit, abort and read every \
                    transaction; set --auth-tokens (or a JWT key) or listen on 127.0.0.1
                    """, metadata: ["host": "\(config.host)"])
            }
            return CoordinatorServer(config: config, store: store, engine: engine, cron: cron, grpcServer: grpcServer,
                                     httpPort: port, group: group, running: running, tls: serverTLS, logger: logger,
                                     metrics: metrics, background: background)
        case .failure:
            throw await running.value.failure ?? CoordinatorStopped()
        }
    }

    /// Waits until the coordinator has stopped (after a signal of its lifecycle, or `shutdown`);
    /// throws what made a service fail.
    public func waitUntilStopped() async throws {
        try await running.value.get()
    }

    /// Graceful stop: no new calls, calls in flight and passes under way finish (up to
    /// `gracePeriod`, then whatever still runs is cancelled), then the background loop stops.
    /// Unfinished transactions stay in the store for the next start.
    public func shutdown(gracePeriod: Duration = .seconds(5)) async {
        logger.info("shutting down")
        await group.triggerGracefulShutdown()
        let running = self.running
        let bound = Task {
            try await Task.sleep(for: gracePeriod)
            running.cancel()
        }
        _ = await running.value
        bound.cancel()
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
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

/// Whether `host` only accepts connections from this machine.
func isLoopback(_ host: String) -> Bool {
    if host.lowercased() == "localhost" { return true }
    guard let address = IPAddress(host) else { return false }
    return address.isIPv4 ? address.bytes[0] == 127 : address.bytes == Array(repeating: 0, count: 15) + [1]
}
