import DtmEngine
import DtmNet
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Limits of the HTTP JSON API server.
public struct HTTPServerLimits: Sendable {
    /// Requests handled at once; one more is answered 503 with `Retry-After`.
    public var maxConcurrentRequests: Int
    /// A keep-alive connection with no request for this long is closed; nil never.
    public var idleTimeout: Duration?

    public init(maxConcurrentRequests: Int = 4096, idleTimeout: Duration? = .seconds(300)) {
        self.maxConcurrentRequests = maxConcurrentRequests
        self.idleTimeout = idleTimeout
    }
}

/// The HTTP API served by Hummingbird (HTTP/1.1), startable in process on port 0.
final class HTTPAPIServer: Sendable {
    /// The bound port.
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, Never>

    private init(port: Int, group: ServiceGroup, task: Task<Void, Never>) {
        self.port = port
        self.group = group
        self.task = task
    }

    /// Binds and starts serving; returns once the socket listens (throws if it cannot bind).
    /// With `tls`, HTTP/1.1 over TLS (ALPN `http/1.1`), each connection with the context current
    /// when it connects.
    static func start(host: String, port: Int, router: Router<BasicRequestContext>,
                      limits: HTTPServerLimits = HTTPServerLimits(), tls: ServerTLS? = nil,
                      logger: Logger) async throws -> HTTPAPIServer {
        let (ready, readiness) = AsyncStream.makeStream(of: Result<Int, any Error>.self)
        let app = try application(host: host, port: port, router: router, limits: limits, tls: tls, logger: logger,
                                  onServerRunning: { readiness.yield(.success($0)) })
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let task = Task {
            do {
                try await group.run()
                readiness.yield(.failure(HTTPServerStopped()))
            } catch {
                readiness.yield(.failure(error))
            }
            readiness.finish()
        }
        var iterator = ready.makeAsyncIterator()
        switch await iterator.next() ?? .failure(HTTPServerStopped()) {
        case .success(let bound):
            return HTTPAPIServer(port: bound, group: group, task: task)
        case .failure(let error):
            await task.value
            throw error
        }
    }

    /// The HTTP server as a service (Hummingbird's `Application`): binds when it runs, reports the
    /// bound port to `onServerRunning`, and on graceful shutdown stops accepting and lets requests
    /// in flight finish.
    /// With `tls`, HTTP/1.1 over TLS (ALPN `http/1.1`), each connection with the context current
    /// when it connects.
    static func application(host: String, port: Int, router: Router<BasicRequestContext>,
                            limits: HTTPServerLimits, tls: ServerTLS? = nil, logger: Logger,
                            onServerRunning: @escaping @Sendable (Int) async -> Void) throws -> any Service {
        let routes = router.buildResponder()
        // Requests in flight across all connections; past the limit a request is refused at once
        // with 503 and Retry-After instead of queueing.
        let admission = AdmissionGate(limit: limits.maxConcurrentRequests)
        let refusal = #"{"message":"server is at its limit of \#(admission.limit) requests in flight; retry later"}"#
        let responder = CallbackResponder<BasicRequestContext> { request, context in
            guard let permit = admission.enter() else {
                return Response(status: .serviceUnavailable,
                                headers: [.retryAfter: "1", .contentType: "application/json; charset=utf-8"],
                                body: ResponseBody(byteBuffer: ByteBuffer(string: refusal)))
            }
            defer { withExtendedLifetime(permit) {} }
            return try await routes.respond(to: request, context: context)
        }
        let idle = limits.idleTimeout.map { TimeAmount.nanoseconds($0.saturatingNanoseconds) }
        let http1 = HTTP1Channel.Configuration(idleTimeout: idle)
        let server: HTTPServerBuilder
        if let tls {
            _ = try tls.context(applicationProtocols: ["http/1.1"])
            server = HTTPServerBuilder { responder in
                ReloadingTLSChannel(base: HTTP1Channel(responder: responder, configuration: http1), tls: tls)
            }
        } else {
            server = .http1(configuration: http1)
        }
        return Application(
            responder: responder, server: server,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port)),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    /// Stops accepting connections and lets requests in flight finish, for at most `gracePeriod`.
    func shutdown(gracePeriod: Duration) async {
        await group.triggerGracefulShutdown()
        let task = self.task
        let deadline = Task {
            try? await Task.sleep(for: gracePeriod)
            task.cancel()
        }
        await task.value
        deadline.cancel()
    }
}

struct HTTPServerStopped: Error, CustomStringConvertible {
    var description: String { "the HTTP server stopped before it listened" }
}


/// Hummingbird's TLS channel, except that each connection takes the context `tls` holds when it
/// connects, so a reloaded certificate applies to new connections without a restart.
struct ReloadingTLSChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let tls: ServerTLS

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let context = try tls.context(applicationProtocols: ["http/1.1"])
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
