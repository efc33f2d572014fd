import DtmGRPC
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Settings of the outbound gRPC client.
public struct GRPCClientConfig: Sendable {
    /// Longest wait for a TCP connection; a call's own deadline cuts it shorter.
    public var connectTimeout: Duration
    public var maxReceiveMessageSize: Int
    /// A pooled connection with no call for this long is closed and leaves the pool.
    public var idleTimeout: Duration
    /// Trust and client certificate of calls made with `tls: true`.
    public var tls: ClientTLSConfig

    public init(connectTimeout: Duration = .seconds(3), maxReceiveMessageSize: Int = 4 << 20,
                idleTimeout: Duration = .seconds(120), tls: ClientTLSConfig = ClientTLSConfig()) {
        self.connectTimeout = connectTimeout
        self.maxReceiveMessageSize = maxReceiveMessageSize
        self.idleTimeout = idleTimeout
        self.tls = tls
    }
}

/// Unary gRPC calls to any `host:port`, multiplexed over one pooled HTTP/2 connection per
/// authority, or per authority and event loop for calls made on one of the group's loops (a
/// pass of the coordinator runs there): such a call is written, answered and resumed on the
/// caller's own thread. A connection that fails, receives GOAWAY or stays idle is replaced on the
/// next call.
public final class GRPCClient: Sendable {
    private let group: EventLoopGroup
    /// The group's loops, by identity: a call made on one uses that loop's connection.
    private let loops: Set<ObjectIdentifier>
    private let config: GRPCClientConfig
    private let logger: Logger
    private let pool = NIOLockedValueBox<[PoolKey: PoolEntry]>([:])
    private let nextID = NIOLockedValueBox(0)
    /// Built on the first TLS call, from `config.tls`.
    private let tlsContext = NIOLockedValueBox<NIOSSLContext?>(nil)

    public init(group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                config: GRPCClientConfig = GRPCClientConfig(),
                logger: Logger = Logger(label: "dtm.grpc.client")) {
        self.group = group
        self.config = config
        self.logger = logger
        loops = Set(group.makeIterator().map { ObjectIdentifier($0) })
    }

    /// Calls `path` (`/package.Service/Method`) on `target` (`host:port`) with a serialised
    /// request message and returns the serialised response. One deadline, `timeout` from now,
    /// covers connecting, sending and the whole response. Connection failures surface as
    /// UNAVAILABLE, an expired `timeout` as DEADLINE_EXCEEDED, task cancellation as CANCELLED.
    /// With `tls`, the connection is TLS (ALPN `h2`) verified against `config.tls`, pooled apart
    /// from plaintext connections to the same target; a failed handshake is UNAVAILABLE.
    public func unary(target: String, path: String, message: [UInt8], metadata: Metadata = Metadata(),
                      timeout: Duration? = nil, tls: Bool = false) async throws(RPCError) -> GRPCResponse {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        // A pooled connection may retire (idle, GOAWAY) between the pool handing it out and the
        // call reaching it; the call was not sent, so it goes once more on a fresh connection.
        var attempts = 0
        while true {
            attempts += 1
            let here = MultiThreadedEventLoopGroup.currentEventLoop.flatMap { loops.contains(ObjectIdentifier($0)) ? $0 : nil }
            let connection = try await self.connection(to: Endpoint(target: target, tls: tls, loop: here),
                                                       deadline: deadline)
            do throws(CallFailure) {
                return try await call(on: connection, target: target, path: path, message: message,
                                      metadata: metadata, deadline: deadline)
            } catch {
                switch error {
                case .retired where attempts < 2:
                    continue
                case .retired(let reason):
                    throw RPCError(.unavailable, "connection to \(target) closed or refused the call twice before processing it"
                                   + (reason.map { " (\($0.message))" } ?? ""))
                case .failed(let error):
                    throw error
                }
            }
        }
    }

    private enum CallFailure: Error {
        /// The connection was closing when the call reached it; nothing was sent. With the
        /// connection's error, if it failed with one.
        case retired(RPCError?)
        case failed(RPCError)
    }

    private func call(on connection: ClientConnection, target: String, path: String, message: [UInt8],
                      metadata: Metadata, deadline: ContinuousClock.Instant?) async throws(CallFailure) -> GRPCResponse {
        let promise = connection.eventLoop.makePromise(of: GRPCResponse.self)
        let handle = CallOutbox.Handle(nil)
        connection.send(CallOutbox.Start(path: path, message: message, metadata: metadata, deadline: deadline,
                                         promise: promise, handle: handle))
        do {
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                connection.eventLoop.execute {
                    if let id = handle.withLockedValue({ $0 }) {
                        connection.handler.value.cancel(id, RPCError(.cancelled, "call cancelled by the caller"))
                    } else {
                        promise.fail(RPCError(.cancelled, "call cancelled by the caller"))
                    }
                }
            }
        } catch let retired as ConnectionRetired {
            throw CallFailure.retired(retired.reason)
        } catch let error as RPCError {
            throw CallFailure.failed(error)
        } catch {
            throw CallFailure.failed(RPCError(.unavailable, "call to \(target)\(path) failed: \(error)"))
        }
    }

    /// The pooled connection for `target`, waiting at most until `deadline` (and not past
    /// task cancellation) for it to connect.
    private func connection(to endpoint: Endpoint, deadline: ContinuousClock.Instant?) async throws(RPCError)
        -> ClientConnection {
        let target = endpoint.target
        // The common case: the pooled connection is up, and nothing needs waiting for.
        if let ready = pool.withLockedValue({ $0[endpoint.poolKey]?.ready }) { return ready }
        let future = connection(to: endpoint)
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
    private func connection(to endpoint: Endpoint) -> EventLoopFuture<ClientConnection> {
        let target = endpoint.poolKey
        return pool.withLockedValue { pool in
            if let entry = pool[target] { return entry.future }
            let id = nextID.withLockedValue { id in
                id += 1
                return id
            }
            let remove: @Sendable () -> Void = { [pool = self.pool] in
                pool.withLockedValue { if $0[target]?.id == id { $0[target] = nil } }
            }
            let future = connect(to: endpoint, onUnusable: remove)
            future.whenFailure { _ in remove() }
            future.whenSuccess { [pool = self.pool] connection in
                pool.withLockedValue { if $0[target]?.id == id { $0[target]?.ready = connection } }
            }
            pool[target] = PoolEntry(id: id, future: future)
            return future
        }
    }

    private func connect(to endpoint: Endpoint, onUnusable: @escaping @Sendable () -> Void)
        -> EventLoopFuture<ClientConnection> {
        let loop = endpoint.loop ?? group.next()
        let target = endpoint.target
        guard let (host, port) = splitHostPort(target) else {
            return loop.makeFailedFuture(RPCError(.invalidArgument, "target '\(target)' is not host:port"))
        }
        let ssl: NIOSSLContext?
        do throws(RPCError) {
            ssl = endpoint.tls ? try sslContext() : nil
        } catch {
            return loop.makeFailedFuture(error)
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
                    if let ssl {
                        // SNI and the name check use the host name; an IP address is checked
                        // against the certificate's IP addresses instead.
                        let name = host.isIPAddress ? nil : host
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: ssl, serverHostname: name))
                    }
                    let handler = try GRPCClientHandler(authority: target, config: config, logger: logger,
                                                        onUnusable: onUnusable)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: GRPCClientHandler.self)
                logger.debug("connected", metadata: ["target": "\(target)"])
                return ClientConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop),
                                        outbox: CallOutbox())
            }
    }
}

extension GRPCClient {
    /// The TLS context of `config.tls`, built once.
    private func sslContext() throws(RPCError) -> NIOSSLContext {
        let config = self.config.tls
        let result: Result<NIOSSLContext, TLSSetupError> = tlsContext.withLockedValue { context in
            if let context { return .success(context) }
            do throws(TLSSetupError) {
                let made = try config.makeContext(applicationProtocols: ["h2"])
                context = made
                return .success(made)
            } catch {
                return .failure(error)
            }
        }
        do {
            return try result.get()
        } catch {
            throw RPCError(.unavailable, "TLS client settings: \(error)")
        }
    }
}

/// Where a pooled connection goes.
private struct Endpoint {
    var target: String
    var tls: Bool
    /// The caller's event loop, when it runs on one of the group's: the connection lives there.
    var loop: EventLoop?
    var poolKey: PoolKey { PoolKey(target: target, tls: tls, loop: loop.map { ObjectIdentifier($0) }) }
}

/// TLS and plaintext connections to one target are pooled apart, and so are the connections of
/// each event loop.
private struct PoolKey: Hashable {
    var target: String
    var tls: Bool
    var loop: ObjectIdentifier?
}

private struct PoolEntry {
    var id: Int
    var future: EventLoopFuture<ClientConnection>
    /// The connection once `future` succeeded: calls take it without waiting on the future.
    var ready: ClientConnection? = nil
}

/// One pooled connection: the channel and its handler (touched on the channel's loop only).
struct ClientConnection: Sendable {
    let channel: Channel
    let handler: NIOLoopBound<GRPCClientHandler>
    let outbox: CallOutbox
    var eventLoop: EventLoop { channel.eventLoop }

    /// Hands a call to the connection's event loop. Calls made while the loop is busy travel
    /// together: one hop to the loop and one socket write for the whole batch.
    func send(_ call: CallOutbox.Start) {
        guard outbox.post(call) else { return }
        let handler = self.handler
        let outbox = self.outbox
        eventLoop.execute { handler.value.start(outbox.take()) }
    }
}

/// Calls on their way from callers' tasks to a connection's event loop.
final class CallOutbox: Sendable {
    struct Start: Sendable {
        var path: String
        var message: [UInt8]
        var metadata: Metadata
        var deadline: ContinuousClock.Instant?
        var promise: EventLoopPromise<GRPCResponse>
        var handle: Handle
    }

    /// The stream id of a started call, for its caller's cancellation.
    typealias Handle = NIOLockedValueBox<Int32?>

    private let queue = NIOLockedValueBox<[Start]>([])

    /// Queues a call; true when the queue was empty, so the caller must hop to the loop to `take`.
    func post(_ call: Start) -> Bool {
        queue.withLockedValue { queue in
            queue.append(call)
            return queue.count == 1
        }
    }

    func take() -> [Start] {
        queue.withLockedValue { queue in
            defer { queue = [] }
            return queue
        }
    }
}

extension String {
    /// An IPv4 or IPv6 address rather than a host name.
    var isIPAddress: Bool { (try? SocketAddress(ipAddress: self, port: 0)) != nil }
}

/// `host:port` or `[v6]:port`.
func splitHostPort(_ target: String) -> (String, Int)? {
    guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]),
          port > 0, port < 65536 else { return nil }
    var host = String(target[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return host.isEmpty ? nil : (host, port)
}
