import DtmGRPC
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Settings of the outbound gRPC client.
public struct GRPCClientConfig: Sendable {
    public var connectTimeout: Duration
    public var maxReceiveMessageSize: Int

    public init(connectTimeout: Duration = .seconds(3), maxReceiveMessageSize: Int = 4 << 20) {
        self.connectTimeout = connectTimeout
        self.maxReceiveMessageSize = maxReceiveMessageSize
    }
}

/// Unary gRPC calls to any `host:port`, multiplexed over one pooled HTTP/2 connection per
/// authority. A connection that fails or receives GOAWAY is replaced on the next call.
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
    /// request message and returns the serialised response. Connection failures surface as
    /// UNAVAILABLE, an expired `timeout` as DEADLINE_EXCEEDED, task cancellation as CANCELLED.
    public func unary(target: String, path: String, message: [UInt8], metadata: Metadata = Metadata(),
                      timeout: Duration? = nil) async throws(RPCError) -> GRPCResponse {
        let connection: ClientConnection
        do {
            connection = try await self.connection(to: target).get()
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(.unavailable, "cannot connect to \(target): \(error)")
        }
        let promise = connection.eventLoop.makePromise(of: GRPCResponse.self)
        let callID = NIOLockedValueBox<Int32?>(nil)
        connection.eventLoop.execute {
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
                    }
                }
            }
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(.unavailable, "call to \(target)\(path) failed: \(error)")
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
            // The handler must be in the pipeline before the first read: added after `connect`
            // it could miss the server's SETTINGS, and nghttp2 then ends the session.
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        GRPCClientHandler(authority: target, config: config, logger: logger, onUnusable: onUnusable))
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
