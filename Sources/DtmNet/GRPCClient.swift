import DtmGRPC
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Settings of the outbound gRPC client.
public struct GRPCClientConfig: Sendable {
    /// Longest wait for a TCP connection; a call's own deadline cuts it shorter.
    public var connectTimeout: Duration
    public var maxReceiveMessageSize: Int
    /// A pooled connection with no call for this long is closed and leaves the pool.
    public var idleTimeout: Duration

    public init(connectTimeout: Duration = .seconds(3), maxReceiveMessageSize: Int = 4 << 20,
                idleTimeout: Duration = .seconds(120)) {
        self.connectTimeout = connectTimeout
        self.maxReceiveMessageSize = maxReceiveMessageSize
        self.idleTimeout = idleTimeout
    }
}

/// Unary gRPC calls to any `host:port`, multiplexed over one pooled HTTP/2 connection per
/// authority. A connection that fails, receives GOAWAY or stays idle is replaced on the next call.
public final class GRPCClient: Sendable {
    private let group: EventLoopGroup
    private let config: GRPCClientConfig
    private let logger: Logger
    private let pool = NIOLockedValueBox<[String: PoolEntry]>([:])
    private let nextID = NIOLockedValueBox(0)

    public init(group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                config: GRPCClientConfig = GRPCClientConfig(),
                logger: Logger = Logger(label: "dtm.grpc.client")) {
        self.group = group
        self.config = config
        self.logger = logger
    }

    /// Calls `path` (`/package.Service/Method`) on `target` (`host:port`) with a serialised
    /// request message and returns the serialised response. One deadline, `timeout` from now,
    /// covers connecting, sending and the whole response. Connection failures surface as
    /// UNAVAILABLE, an expired `timeout` as DEADLINE_EXCEEDED, task cancellation as CANCELLED.
    public func unary(target: String, path: String, message: [UInt8], metadata: Metadata = Metadata(),
                      timeout: Duration? = nil) async throws(RPCError) -> GRPCResponse {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        // A pooled connection may retire (idle, GOAWAY) between the pool handing it out and the
        // call reaching it; the call was not sent, so it goes once more on a fresh connection.
        var attempts = 0
        while true {
            attempts += 1
            let connection = try await self.connection(to: target, deadline: deadline)
            do throws(CallFailure) {
                return try await call(on: connection, target: target, path: path, message: message,
                                      metadata: metadata, deadline: deadline)
            } catch {
                switch error {
                case .retired where attempts < 2:
                    continue
                case .retired:
                    throw RPCError(.unavailable, "connection to \(target) closed or refused the call twice before processing it")
                case .failed(let error):
                    throw error
                }
            }
        }
    }

    private enum CallFailure: Error {
        /// The connection was closing when the call reached it; nothing was sent.
        case retired
        case failed(RPCError)
    }

    private func call(on connection: ClientConnection, target: String, path: String, message: [UInt8],
                      metadata: Metadata, deadline: ContinuousClock.Instant?) async throws(CallFailure) -> GRPCResponse {
        let promise = connection.eventLoop.makePromise(of: GRPCResponse.self)
        let callID = NIOLockedValueBox<Int32?>(nil)
        connection.eventLoop.execute {
            let timeout = deadline.map { max($0 - ContinuousClock.now, .zero) }
            callID.withLockedValue { $0 = connection.handler.value.start(
                path: path, message: message, metadata: metadata, timeout: timeout, promise: promise) }
        }
        do {
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                connection.eventLoop.execute {
                    if let id = callID.withLockedValue({ $0 }) {
                        connection.handler.value.cancel(id, RPCError(.cancelled, "call cancelled by the caller"))
                    } else {
                        promise.fail(RPCError(.cancelled, "call cancelled by the caller"))
                    }
                }
            }
        } catch is ConnectionRetired {
            throw CallFailure.retired
        } catch let error as RPCError {
            throw CallFailure.failed(error)
        } catch {
            throw CallFailure.failed(RPCError(.unavailable, "call to \(target)\(path) failed: \(error)"))
        }
    }

    /// The pooled connection for `target`, waiting at most until `deadline` (and not past
    /// task cancellation) for it to connect.
    private func connection(to target: String, deadline: ContinuousClock.Instant?) async throws(RPCError)
        -> ClientConnection {
        let future = connection(to: target)
        let promise = future.eventLoop.makePromise(of: ClientConnection.self)
        future.cascade(to: promise)
        let timer = deadline.map { deadline in
            future.eventLoop.scheduleTask(in: .nanoseconds(max(deadline - ContinuousClock.now, .zero).nanoseconds)) {
                promise.fail(RPCError(.deadlineExceeded, "deadline exceeded while connecting to \(target)"))
            }
        }
        defer { timer?.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                promise.fail(RPCError(.cancelled, "call cancelled by the caller while connecting to \(target)"))
            }
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(.unavailable, "cannot connect to \(target): \(error)")
        }
    }

    /// Closes every pooled connection.
    public func shutdown() async {
        let entries = pool.withLockedValue { pool in
            defer { pool = [:] }
            return Array(pool.values)
        }
        for entry in entries {
            if let connection = try? await entry.future.get() { try? await connection.channel.close() }
        }
    }

    /// The pooled connection for `target`, connecting when there is none. A connection leaves
    /// the pool when it fails, closes or receives GOAWAY, so the next call reconnects.
    private func connection(to target: String) -> EventLoopFuture<ClientConnection> {
        pool.withLockedValue { pool in
            if let entry = pool[target] { return entry.future }
            let id = nextID.withLockedValue { id in
                id += 1
                return id
            }
            let remove: @Sendable () -> Void = { [pool = self.pool] in
                pool.withLockedValue { if $0[target]?.id == id { $0[target] = nil } }
            }
            let future = connect(to: target, onUnusable: remove)
            future.whenFailure { _ in remove() }
            pool[target] = PoolEntry(id: id, future: future)
            return future
        }
    }

    private func connect(to target: String, onUnusable: @escaping @Sendable () -> Void)
        -> EventLoopFuture<ClientConnection> {
        let loop = group.next()
        guard let (host, port) = splitHostPort(target) else {
            return loop.makeFailedFuture(RPCError(.invalidArgument, "target '\(target)' is not host:port"))
        }
        let config = self.config
        let logger = self.logger
        return ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(Int64(clamping: config.connectTimeout.nanoseconds)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // The handler must be in the pipeline before the channel is active: bytes read
            // before it is there would be lost, and the server's SETTINGS with them.
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try GRPCClientHandler(authority: target, config: config, logger: logger,
                                                        onUnusable: onUnusable)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: GRPCClientHandler.self)
                logger.debug("connected", metadata: ["target": "\(target)"])
                return ClientConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
            }
    }
}

private struct PoolEntry {
    var id: Int
    var future: EventLoopFuture<ClientConnection>
}

/// One pooled connection: the channel and its handler (touched on the channel's loop only).
struct ClientConnection: Sendable {
    let channel: Channel
    let handler: NIOLoopBound<GRPCClientHandler>
    var eventLoop: EventLoop { channel.eventLoop }
}

/// `host:port` or `[v6]:port`.
func splitHostPort(_ target: String) -> (String, Int)? {
    guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]),
          port > 0, port < 65536 else { return nil }
    var host = String(target[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return host.isEmpty ? nil : (host, port)
}
