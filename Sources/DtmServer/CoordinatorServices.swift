import AsyncHTTPClient
import DtmEngine
import DtmNet
import Logging
import ServiceLifecycle
import UnixSignals

/// How `CoordinatorServer.start` runs the coordinator's services (one `ServiceGroup`).
public struct CoordinatorLifecycle: Sendable {
    /// Signals that begin a graceful stop: SIGTERM and SIGINT for the `dtm` executable; none
    /// for a coordinator in process (tests call `shutdown`).
    public var signals: [UnixSignal]
    /// Services of the caller (the store), started with the coordinator's and stopped after them.
    public var services: [any Service]
    /// Longest graceful stop started by a signal; what is still running then is cancelled.
    /// `shutdown(gracePeriod:)` brings its own bound.
    public var shutdownTimeout: Duration?

    public init(signals: [UnixSignal] = [], services: [any Service] = [], shutdownTimeout: Duration? = nil) {
        self.signals = signals
        self.services = services
        self.shutdownTimeout = shutdownTimeout
    }
}

/// The retry loop: runs until graceful shutdown, then starts and claims nothing more and ends
/// once its running passes have ended. Cancellation (the group's bound) cancels those passes:
/// their transactions stay leased in the store and are taken up again when the lease ends, by
/// this coordinator's next start or by another.
struct RetryLoopService: Service {
    let cron: CronLoop

    func run() async {
        let cron = self.cron
        await withGracefulShutdownHandler {
            // On an event loop, like the passes and the handlers that hand it work: a request
            // that starts a pass then enqueues the loop's next job instead of waking a pool thread.
            await withTaskExecutorPreference(EventLoopTaskExecutor.next()) { await cron.run() }
        } onGracefulShutdown: {
            Task { await cron.drain() }
        }
    }
}

/// The gRPC listener (bound before the group runs, so that `start` can report its port):
/// on graceful shutdown it stops accepting, sends GOAWAY and lets calls in flight finish;
/// cancellation (the group's bound) closes what is left.
struct GRPCListenerService: Service {
    let server: GRPCServer

    func run() async {
        try? await gracefulShutdown()
        await server.shutdown(gracePeriod: .seconds(3600))
    }
}

/// The outbound branch clients: closed after the retry loop, whose passes call branches.
struct BranchClientsService: Service {
    let grpcClient: GRPCClient
    let httpClient: HTTPClient

    func run() async {
        try? await gracefulShutdown()
        await grpcClient.shutdown()
        try? await httpClient.shutdown()
    }
}

/// Watches the servers' TLS files (polling and SIGHUP) while the coordinator runs; nothing
/// without TLS.
struct TLSWatchService: Service {
    let tls: ServerTLS?

    /// Runs until graceful shutdown even without TLS: a service of the group that returns early
    /// would end the whole group.
    func run() async {
        tls?.startWatching()
        try? await gracefulShutdown()
        tls?.stopWatching()
    }
}

/// The retention sweeps and the alert poster (when configured): they run beside the retry
/// loop and stop after it (its passes enqueue alerts) and before the branch clients (alerts are
/// posted through the HTTP client).
struct BackgroundOperationsService: Service {
    let background: BackgroundOperations

    func run() async {
        try? await gracefulShutdown()
        await background.shutdown()
    }
}

/// The coordinator stopped before it served (the HTTP port could not be bound, say).
struct CoordinatorStopped: Error, CustomStringConvertible {
    var description: String { "the coordinator stopped before its HTTP server listened" }
}
