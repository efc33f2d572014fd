import DtmConfig
import DtmLogging
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
}
