import ArgumentParser
import Dispatch
import DtmEngine
import DtmGRPC
import DtmLogging
import DtmPostgres
import DtmServer
import DtmStore
import Foundation
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

    @Option(help: ArgumentHelp(
        "The durable store: an SQLite database file (created if missing), or a PostgreSQL URL postgres://user:password@host:port/database shared by any number of coordinators. A restart on the same store resumes unfinished transactions.",
        valueName: "file-or-url"))
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

    @Option(help: "Largest gRPC request message in bytes; larger ones get RESOURCE_EXHAUSTED.")
    var maxMessageSize = 4 << 20

    @Option(help: "Largest decoded request header list in bytes (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE); a larger one gets RESOURCE_EXHAUSTED.")
    var maxHeaderListSize = 16 << 10

    @Option(help: "Concurrent gRPC streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).")
    var maxConcurrentStreams = 100

    @Option(help: "Open gRPC connections; one more is answered GOAWAY(ENHANCE_YOUR_CALM) and closed.")
    var maxGrpcConnections = 1024

    @Option(help: "gRPC calls handled at once over all connections; one more gets RESOURCE_EXHAUSTED with grpc-retry-pushback-ms.")
    var maxConcurrentCalls = 4096

    @Option(help: "HTTP API requests handled at once; one more gets 503 with Retry-After.")
    var maxConcurrentHttpRequests = 4096

    @Option(help: "Seconds a gRPC or HTTP connection may stay without a request before it is closed (gRPC with GOAWAY); 0 never closes.")
    var idleTimeout: Int64 = 300

    @Option(help: "Seconds a gRPC request may take to arrive completely after its headers; a slower one gets RESOURCE_EXHAUSTED and its buffer is freed.")
    var requestReceiveTimeout: Int64 = 30

    @Option(help: "Seconds to wait for a TCP connection to a branch (each call is also bounded by its request timeout).")
    var branchConnectTimeout: Int64 = 3

    @Option(help: "Seconds a pooled connection to a branch may stay unused before it is closed.")
    var branchIdleTimeout: Int64 = 120

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Log line format: text, or json (one JSON object per line: ts, level, label, message, metadata).")
    var logFormat: String = "text"

    @Option(help: "Delete finished (succeed/failed) transactions this many seconds after their last change, in small batches; 0 keeps them (DTM: FinishedDataExpire).")
    var finishedDataExpire: Int64 = 0

    @Option(help: "Alert once a branch error leaves a transaction's retry count (log2 of interval / retry interval) at or above this (DTM: AlertRetryLimit).")
    var alertRetryLimit: Int64 = 3

    @Option(help: "URL that alerts are POSTed to as JSON {gid, status, branch, error, retry_count}; empty sends none (DTM: AlertWebHook).")
    var alertWebHook: String = ""

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
        guard maxMessageSize >= 1024, maxHeaderListSize >= 1024, maxConcurrentStreams >= 1, maxGrpcConnections >= 1,
              maxConcurrentCalls >= 1, maxConcurrentHttpRequests >= 1 else {
            throw ValidationError("need --max-message-size and --max-header-list-size >= 1024, and --max-concurrent-streams, --max-grpc-connections, --max-concurrent-calls, --max-concurrent-http-requests >= 1")
        }
        guard maxHeaderListSize <= Int(UInt32.max), maxConcurrentStreams <= Int(UInt32.max) else {
            throw ValidationError("--max-header-list-size and --max-concurrent-streams must fit in 32 bits")
        }
        let day: Int64 = 86_400
        guard (0...day).contains(idleTimeout), (1...day).contains(branchConnectTimeout),
              (1...day).contains(branchIdleTimeout), (1...day).contains(requestReceiveTimeout) else {
            throw ValidationError("need --idle-timeout 0...86400; --request-receive-timeout, --branch-connect-timeout and --branch-idle-timeout 1...86400")
        }
        guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format must be text or json") }
        guard finishedDataExpire >= 0, alertRetryLimit >= 0 else {
            throw ValidationError("--finished-data-expire and --alert-retry-limit must be at least 0")
        }
        guard alertWebHook.isEmpty || alertWebHook.hasPrefix("http://") || alertWebHook.hasPrefix("https://") else {
            throw ValidationError("--alert-web-hook must be an http:// or https:// URL")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let format = LogFormat(rawValue: logFormat) ?? .text
        LoggingSystem.bootstrap { label in DtmLogHandler(label: label, format: format, level: level) }
        let logger = Logger(label: "dtm")
        var limits = RequestLimits()
        limits.maxSteps = maxSteps
        let engine = EngineConfig(retryInterval: retryInterval, timeoutToFail: timeoutToFail,
                                  requestTimeout: requestTimeout, transCronInterval: cronInterval,
                                  maxRetryInterval: maxRetryInterval, limits: limits, maxPassDuration: maxPassDuration)
        if let problem = engine.validationError() {
            logger.warning("configuration outside DTM's limits: \(problem)")
        }
        let opened = try await Self.openStore(store, logger: logger)
        // This process in the `owner` column of the transactions it leases (shown by /query).
        let owner = "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(UUID().uuidString.prefix(8).lowercased())"
        let idle: Duration? = idleTimeout == 0 ? nil : .seconds(idleTimeout)
        let grpc = GRPCServerConfig(
            maxReceiveMessageSize: maxMessageSize,
            http2: HTTP2Settings(maxConcurrentStreams: UInt32(maxConcurrentStreams),
                                 maxHeaderListSize: UInt32(maxHeaderListSize)),
            maxConnections: maxGrpcConnections, maxConcurrentCalls: maxConcurrentCalls, idleTimeout: idle,
            requestReceiveTimeout: .seconds(requestReceiveTimeout))
        var config = CoordinatorConfig(host: host, grpcPort: grpcPort, httpPort: httpPort, grpc: grpc,
                              http: HTTPServerLimits(maxConcurrentRequests: maxConcurrentHttpRequests, idleTimeout: idle),
                              branchClients: BranchClientConfig(connectTimeout: .seconds(branchConnectTimeout),
                                                                idleTimeout: .seconds(branchIdleTimeout),
                                                                maxReceiveMessageSize: maxMessageSize),
                              engine: engine, owner: owner, maxConcurrentPasses: maxConcurrentPasses,
                              maxPendingTransactions: maxPendingTransactions)
        config.operations = OperationsConfig(finishedDataExpire: finishedDataExpire, alertRetryLimit: alertRetryLimit,
                                             alertWebHook: alertWebHook)
        let coordinator = try await CoordinatorServer.start(config, store: opened.store, logger: logger)
        logger.info("swift-dtm coordinator started", metadata: [
            "grpc": "\(host):\(coordinator.grpcPort)", "http": "\(host):\(coordinator.httpPort)",
            "store": "\(opened.description)", "owner": "\(owner)"])
        let signal = await Self.waitForTerminationSignal()
        logger.info("received \(signal), stopping")
        let clock = ContinuousClock()
        let stopped = await clock.measure { await coordinator.shutdown() }
        let closed = await clock.measure { await opened.close() }
        logger.info("stopped", metadata: ["servers_and_retry_loop": "\(stopped)", "store": "\(closed)"])
    }

    /// The store `--store` names, and how to close it.
    struct OpenedStore {
        let store: any TransactionStore
        let description: String
        let close: () async -> Void
    }

    /// An SQLite file, or a PostgreSQL URL. PostgreSQL that is unreachable at start does not stop
    /// the coordinator: it serves (health 503, requests refused) while the store retries with
    /// back-off, and works as soon as the database answers.
    static func openStore(_ store: String, logger: Logger) async throws -> OpenedStore {
        guard PostgresConfiguration.isPostgresURL(store) else {
            let sqlite = try SQLiteStore(path: store, logger: logger)
            return OpenedStore(store: sqlite, description: sqlite.path) { sqlite.close() }
        }
        let postgres = try PostgresStore(url: store, logger: logger)
        if await !postgres.waitUntilReady(timeout: .seconds(5)) {
            logger.error("PostgreSQL is not reachable yet; serving with health 503 until it is", metadata: [
                "store": "\(postgres.configuration.redactedURL)"])
        }
        return OpenedStore(store: postgres, description: postgres.configuration.redactedURL) {
            await postgres.close()
        }
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
