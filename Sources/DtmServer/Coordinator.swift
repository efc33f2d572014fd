import DtmGRPC
import DtmNet
import Logging

/// Settings of a coordinator process; defaults are DTM's.
public struct CoordinatorConfig: Sendable {
    public var host: String
    /// DTM's default gRPC port; 0 picks a free port (tests).
    public var grpcPort: Int
    public var grpc: GRPCServerConfig

    public init(host: String = "0.0.0.0", grpcPort: Int = 36790, grpc: GRPCServerConfig = GRPCServerConfig()) {
        self.host = host
        self.grpcPort = grpcPort
        self.grpc = grpc
    }
}

/// A running coordinator: everything `dtm` starts, startable in process by tests.
public final class Coordinator: Sendable {
    public let config: CoordinatorConfig
    private let grpcServer: GRPCServer
    private let logger: Logger

    /// The bound gRPC port (differs from `config.grpcPort` when that is 0).
    public var grpcPort: Int { grpcServer.port }

    private init(config: CoordinatorConfig, grpcServer: GRPCServer, logger: Logger) {
        self.config = config
        self.grpcServer = grpcServer
        self.logger = logger
    }

    public static func start(_ config: CoordinatorConfig = CoordinatorConfig(),
                             logger: Logger = Logger(label: "dtm")) async throws -> Coordinator {
        var router = GRPCRouter()
        DtmGRPCService(logger: logger).register(on: &router)
        let server = try await GRPCServer.start(host: config.host, port: config.grpcPort, router: router,
                                                config: config.grpc, logger: logger)
        return Coordinator(config: config, grpcServer: server, logger: logger)
    }

    /// Graceful stop: no new calls, calls in flight finish (up to `gracePeriod`).
    public func shutdown(gracePeriod: Duration = .seconds(5)) async {
        logger.info("shutting down")
        await grpcServer.shutdown(gracePeriod: gracePeriod)
    }
}
