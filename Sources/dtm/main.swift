import ArgumentParser
import Dispatch
import DtmEngine
import DtmServer
import DtmStore
import Logging

#if canImport(Glibc)
import Glibc
#endif

@main
struct Dtm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtm",
        abstract: "swift-dtm: a distributed transaction coordinator that speaks DTM's protocols.")

    @Option(help: "Address to listen on.")
    var host = "0.0.0.0"

    @Option(help: "gRPC port (DTM's default is 36790; 0 picks a free port).")
    var grpcPort = 36790

    @Option(help: "HTTP JSON API port (DTM's default is 36789; 0 picks a free port).")
    var httpPort = 36789

    @Option(help: "SQLite database file of the durable store; created if missing. A restart on the same file resumes unfinished transactions.")
    var store = "dtm.sqlite"

    @Option(help: "Base retry interval in seconds (DTM: RetryInterval; values under 10 are meant for tests).")
    var retryInterval: Int64 = 10

    @Option(help: "Default timeout of tcc, xa, msg and workflow transactions in seconds (DTM: TimeoutToFail).")
    var timeoutToFail: Int64 = 35

    @Option(help: "Timeout of each branch call in seconds (DTM: RequestTimeout).")
    var requestTimeout: Int64 = 3

    @Option(help: "Seconds the retry loop sleeps when nothing is due (DTM: TransCronInterval).")
    var cronInterval: Int64 = 3

    @Option(help: "Transactions the retry loop drives at once.")
    var maxConcurrentPasses = 64

    @Option(help: "Longest retry interval back-off may reach, in seconds (DTM doubles without bound).")
    var maxRetryInterval: Int64 = 3600

    @Option(help: "Transactions held in memory at once (requests in progress plus passes waiting to run); beyond it new work is refused with RESOURCE_EXHAUSTED / HTTP 503.")
    var maxPendingTransactions = 10_000

    @Option(help: "Seconds one pass over a transaction may run (at least its request timeout + 2); then its running branch calls are abandoned and retried later.")
    var maxPassDuration: Int64 = 60

    @Option(help: "Steps a saga or msg may have.")
    var maxSteps = 1000

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard (0...65535).contains(grpcPort) else { throw ValidationError("--grpc-port must be 0...65535") }
        guard maxConcurrentPasses >= 1 else { throw ValidationError("--max-concurrent-passes must be at least 1") }
        guard maxPendingTransactions >= 1 else { throw ValidationError("--max-pending-transactions must be at least 1") }
        guard maxRetryInterval >= retryInterval else {
            throw ValidationError("--max-retry-interval must be at least --retry-interval (\(retryInterval))")
        }
        guard maxPassDuration >= 1 else { throw ValidationError("--max-pass-duration must be at least 1") }
        guard maxSteps >= 1 else { throw ValidationError("--max-steps must be at least 1") }
        guard (0...65535).contains(httpPort) else { throw ValidationError("--http-port must be 0...65535") }
        guard retryInterval >= 1, timeoutToFail >= retryInterval, requestTimeout >= 1, cronInterval >= 1 else {
            throw ValidationError("need --retry-interval >= 1, --timeout-to-fail >= --retry-interval, --request-timeout >= 1, --cron-interval >= 1")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "dtm")
        var limits = RequestLimits()
        limits.maxSteps = maxSteps
        let engine = EngineConfig(retryInterval: retryInterval, timeoutToFail: timeoutToFail,
                                  requestTimeout: requestTimeout, transCronInterval: cronInterval,
                                  maxRetryInterval: maxRetryInterval, limits: limits, maxPassDuration: maxPassDuration)
        if let problem = engine.validationError() {
            logger.warning("configuration outside DTM's limits: \(problem)")
        }
        let sqlite = try SQLiteStore(path: store, logger: logger)
        let coordinator = try await CoordinatorServer.start(
            CoordinatorConfig(host: host, grpcPort: grpcPort, httpPort: httpPort, engine: engine,
                              maxConcurrentPasses: maxConcurrentPasses,
                              maxPendingTransactions: maxPendingTransactions),
            store: sqlite, logger: logger)
        logger.info("swift-dtm coordinator started", metadata: [
            "grpc": "\(host):\(coordinator.grpcPort)", "http": "\(host):\(coordinator.httpPort)",
            "store": "\(sqlite.path)"])
        let signal = await Self.waitForTerminationSignal()
        logger.info("received \(signal), stopping")
        await coordinator.shutdown()
        sqlite.close()
    }

    /// Suspends until SIGINT or SIGTERM arrives; returns its name.
    static func waitForTerminationSignal() async -> String {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        var sources: [DispatchSourceSignal] = []
        for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(name) }
            source.resume()
            sources.append(source)
        }
        var iterator = stream.makeAsyncIterator()
        let name = await iterator.next() ?? "end of signal stream"
        sources.forEach { $0.cancel() }
        return name
    }
}
