import DtmConfig
import DtmLogging
import DtmNet
import DtmServer
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `dtm [check-config] [--config FILE] [--<setting> VALUE]...`: the settings come from
/// flags > environment > file > defaults (DtmConfig); the coordinator's services and the store
/// run in one ServiceGroup that stops gracefully on SIGTERM or SIGINT.
@main
enum Dtm {
    static func main() async {
        let loaded: LoadedConfig
        do {
            loaded = try ConfigLoader.load(arguments: Array(CommandLine.arguments.dropFirst()),
                                           environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("dtm: configuration error: \(error)\n".utf8))
            exit(2)
        }
        switch loaded.command {
        case .help:
            print(ConfigLoader.helpText(), terminator: "")
        case .checkConfig:
            print(ConfigLoader.effectiveText(loaded.settings), terminator: "")
            FileHandle.standardError.write(Data("dtm: configuration is valid\n".utf8))
        case .run:
            do {
                try await serve(loaded.settings)
            } catch {
                FileHandle.standardError.write(Data("dtm: \(error)\n".utf8))
                exit(1)
            }
        }
    }

    static func serve(_ settings: DtmSettings) async throws {
        let level = settings[\.logLevel]
        let format = settings[\.logFormat]
        LoggingSystem.bootstrap { label in DtmLogHandler(label: label, format: format, level: level) }
        let logger = Logger(label: "dtm")
        // Before anything (the PostgreSQL client included) starts the shared event loops.
        let loops = EventLoopThreads.configure(settings[\.eventLoops])
        logger.debug("event loop threads: \(loops)")
        raiseOpenFileLimit(logger: logger)
        // This process in the `owner` column of the transactions it leases (shown by /query).
        let owner = "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(UUID().uuidString.prefix(8).lowercased())"
        var config = settings.coordinatorConfig(owner: owner)
        config.security.branchAllowList = try settings.branchAllowList()
        if let problem = config.engine.validationError() {
            logger.warning("configuration outside DTM's limits: \(problem)")
        }
        let store = try await OpenedStore.open(settings[\.store], logger: logger)
        let signals: [UnixSignal] = [.sigterm, .sigint]
        let coordinator: CoordinatorServer
        do {
            coordinator = try await CoordinatorServer.start(
                config, store: store.store, logger: logger,
                lifecycle: CoordinatorLifecycle(signals: signals,
                                                services: [SignalLog(signals: signals, logger: logger), store],
                                                shutdownTimeout: settings.shutdownTimeout))
        } catch {
            await store.close()
            throw error
        }
        logger.info("swift-dtm coordinator started", metadata: [
            "grpc": "\(config.host):\(coordinator.grpcPort)", "http": "\(config.host):\(coordinator.httpPort)",
            "store": "\(store.description)", "owner": "\(owner)",
            "shutdown_timeout": "\(settings.shutdownTimeout)"])
        try await coordinator.waitUntilStopped()
        logger.info("stopped")
    }

    /// Every connection, branch call and store file takes a descriptor; a soft limit of 1024 (a
    /// common default) is reached by a busy coordinator long before its memory or CPU is. Like Go
    /// programs (DTM's included), raise the soft limit to the hard one at start.
    static func raiseOpenFileLimit(logger: Logger) {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0 else { return }
        let wanted = min(limit.rlim_max, 1 << 20)
        guard limit.rlim_cur < wanted else { return }
        let before = limit.rlim_cur
        limit.rlim_cur = wanted
        if setrlimit(resource, &limit) == 0 {
            logger.debug("open-file limit raised", metadata: ["from": "\(before)", "to": "\(wanted)"])
        } else {
            logger.warning("cannot raise the open-file limit; connections beyond it will be refused",
                           metadata: ["limit": "\(before)", "hard_limit": "\(limit.rlim_max)"])
        }
    }
}
