import Hummingbird
import Logging
import ServiceLifecycle

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
                      logger: Logger) async throws -> HTTPAPIServer {
        let (ready, readiness) = AsyncStream.makeStream(of: Result<Int, any Error>.self)
        let app = Application(
            router: router, configuration: ApplicationConfiguration(address: .hostname(host, port: port)),
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
