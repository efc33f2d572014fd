import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
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
    static func start(host: String, port: Int, router: Router<BasicRequestContext>,
                      limits: HTTPServerLimits = HTTPServerLimits(), logger: Logger) async throws -> HTTPAPIServer {
        let (ready, readiness) = AsyncStream.makeStream(of: Result<Int, any Error>.self)
        let routes = router.buildResponder()
        let admission = RequestAdmission(limit: limits.maxConcurrentRequests)
        let responder = CallbackResponder<BasicRequestContext> { request, context in
            guard admission.tryEnter() else { return admission.refusal }
            defer { admission.leave() }
            return try await routes.respond(to: request, context: context)
        }
        let idle = limits.idleTimeout.map { TimeAmount.nanoseconds($0.saturatingNanoseconds) }
        let app = Application(
            responder: responder, server: .http1(configuration: .init(idleTimeout: idle)),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port)),
            onServerRunning: { channel in readiness.yield(.success(channel.localAddress?.port ?? port)) },
            logger: logger)
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

/// Requests in flight across all HTTP connections; past the limit a request is refused at once
/// with 503 and `Retry-After` instead of queueing.
final class RequestAdmission: Sendable {
    let limit: Int
    private let running = NIOLockedValueBox(0)

    init(limit: Int) {
        self.limit = limit
    }

    func tryEnter() -> Bool {
        running.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() {
        running.withLockedValue { $0 -= 1 }
    }

    var refusal: Response {
        Response(status: .serviceUnavailable,
                 headers: [.retryAfter: "1", .contentType: "application/json; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string:
                    #"{"message":"server is at its limit of \#(limit) requests in flight; retry later"}"#)))
    }
}
