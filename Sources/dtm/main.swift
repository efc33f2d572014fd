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
            tuneAllocator()
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
        if let tunables = getenv("GLIBC_TUNABLES") { logger.debug("allocator: GLIBC_TUNABLES=\(String(cString: tunables))") }
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

    /// glibc's allocator keeps at most 7 freed blocks of each size per thread before it falls back
    /// to its slower shared bins (with consolidation); a saga frees dozens of same-sized blocks
    /// at a time (branch rows, call records, HTTP/2 frames), so with that default about a tenth of
    /// the event loop's time went to malloc's slow paths. glibc reads its tunables only when a
    /// process starts, so `dtm` sets `glibc.malloc.tcache_count` (128) and executes itself again
    /// (same pid, arguments and environment otherwise) before anything else runs. A
    /// `tcache_count` already in `GLIBC_TUNABLES` wins (`glibc.malloc.tcache_count=7` is glibc's
    /// default); when the exec fails, `dtm` carries on with the allocator as it is.
    static func tuneAllocator() {
        #if os(Linux)
        let variable = "GLIBC_TUNABLES"
        let current = getenv(variable).map { String(cString: $0) } ?? ""
        guard !current.contains("glibc.malloc.tcache_count") else { return }
        let setting = "glibc.malloc.tcache_count=128"
        guard setenv(variable, current.isEmpty ? setting : current + ":" + setting, 1) == 0 else { return }
        // The file itself, not /proc/self/exe: the process name (ps, top, pgrep) comes from it.
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &path, Int(PATH_MAX))
        guard length > 0 else { return }
        execv(path, CommandLine.unsafeArgv)
        #endif
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
