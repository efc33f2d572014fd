import ArgumentParser
import Dispatch
import DtmServer
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

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard (0...65535).contains(grpcPort) else { throw ValidationError("--grpc-port must be 0...65535") }
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
        let coordinator = try await Coordinator.start(CoordinatorConfig(host: host, grpcPort: grpcPort), logger: logger)
        logger.info("swift-dtm coordinator started", metadata: ["grpc": "\(host):\(coordinator.grpcPort)"])
        let signal = await Self.waitForTerminationSignal()
        logger.info("received \(signal), stopping")
        await coordinator.shutdown()
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
