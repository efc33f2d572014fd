import DtmGRPC
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// A gRPC server on TCP: NIO accepts connections and moves their bytes in and out of one
/// `GRPCServerConnection` (nghttp2 in memory mode) per connection.
public final class GRPCServer: Sendable {
    private let serverChannel: Channel
    private let connections: NIOLockedValueBox<[ObjectIdentifier: Channel]>
    private let logger: Logger

    /// The port the server listens on (useful after binding port 0).
    public let port: Int
    public let host: String

    private init(serverChannel: Channel, connections: NIOLockedValueBox<[ObjectIdentifier: Channel]>,
                 logger: Logger, host: String) {
        self.serverChannel = serverChannel
        self.connections = connections
        self.logger = logger
        self.host = host
        self.port = serverChannel.localAddress?.port ?? 0
    }

    /// Binds and starts serving `router`. Port 0 picks a free port (see `port`). With `tls`, every
    /// connection starts with a TLS handshake (ALPN `h2`, the context current when it connects)
    /// and the HTTP/2 session sees the decrypted bytes.
    public static func start(host: String = "0.0.0.0", port: Int, router: GRPCRouter,
                             config: GRPCServerConfig = GRPCServerConfig(), tls: ServerTLS? = nil,
                             group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             logger: Logger = Logger(label: "dtm.grpc.server")) async throws -> GRPCServer {
        if let tls { _ = try tls.context(applicationProtocols: ["h2"]) }
        let connections = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
        let calls = CallAdmission(limit: config.maxConcurrentCalls)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                let admitted = connections.withLockedValue { open in
                    guard open.count < config.maxConnections else { return false }
                    open[ObjectIdentifier(channel)] = channel
                    return true
                }
                if admitted {
                    channel.closeFuture.whenComplete { _ in
                        _ = connections.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                    }
                } else {
                    logger.warning("refusing connection: at the limit of open connections",
                                   metadata: ["limit": "\(config.maxConnections)"])
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let context = try tls.context(applicationProtocols: ["h2"])
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    }
                    let handler = try GRPCServerHandler(
                        router: router, config: config, calls: calls, logger: logger,
                        refusal: admitted ? nil : "server is at its limit of \(config.maxConnections) connections")
                    try channel.pipeline.syncOperations.addHandlers([BackPressureHandler(), handler])
                }
            }
            .bind(host: host, port: port).get()
        let server = GRPCServer(serverChannel: channel, connections: connections, logger: logger, host: host)
        logger.info("gRPC server listening", metadata: ["address": "\(host):\(server.port)", "tls": "\(tls != nil)"])
        return server
    }

    /// Number of open client connections.
    public var connectionCount: Int { connections.withLockedValue { $0.count } }

    /// Stops accepting, sends GOAWAY on every connection, lets calls in flight finish for up
    /// to `gracePeriod` (less when the calling task is cancelled: then at once), then closes
    /// whatever is left.
    public func shutdown(gracePeriod: Duration = .seconds(5)) async {
        try? await serverChannel.close()
        let open = connections.withLockedValue { Array($0.values) }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(GRPCServerHandler.GracefulShutdown())
        }
        // Done when every connection has closed, the grace period is over, or the task is cancelled.
        let loop = serverChannel.eventLoop
        let done = loop.makePromise(of: Void.self)
        let completed = NIOLockedValueBox(false)
        @Sendable func finish() {
            if completed.withLockedValue({ was in defer { was = true }; return !was }) { done.succeed() }
        }
        EventLoopFuture.andAllComplete(open.map(\.closeFuture), on: loop).whenComplete { _ in finish() }
        let timer = loop.scheduleTask(in: .nanoseconds(gracePeriod.nanoseconds)) { finish() }
        await withTaskCancellationHandler {
            try? await done.futureResult.get()
        } onCancel: {
            finish()
        }
        timer.cancel()
        let left = connections.withLockedValue { Array($0.values) }
        for channel in left { try? await channel.close() }
        logger.info("gRPC server stopped", metadata: ["forced": "\(left.count)"])
    }
}

/// Glue between one TCP connection and its `GRPCServerConnection`. Lives on the channel's
/// event loop: nghttp2 and all stream bookkeeping are touched from that loop only.
final class GRPCServerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct GracefulShutdown: Sendable {}

    private struct Running {
        var task: Task<Void, Never>?
        var timer: Scheduled<Void>?
        /// Set for a streaming call.
        var bridge: GRPCStreamBridge?
    }

    private let connection: GRPCServerConnection
    private let logger: Logger
    private let calls: CallAdmission
    private let idleTimeout: Duration?
    /// `GRPCServerConfig.handlersOnEventLoop`: unary async handlers run on this connection's loop.
    private let handlersOnEventLoop: Bool
    private var executor: EventLoopTaskExecutor?
    /// Set for a connection over the server's limit: it is told why and closed.
    private let refusal: String?
    private var running: [Int32: Running] = [:]
    /// The streaming calls of `running`: only they need sent bytes reported after a flush.
    private var streaming: [Int32: GRPCStreamBridge] = [:]
    private let streamBufferLimit: Int
    private let streamWriteHighWater: Int
    private var context: ChannelHandlerContext?
    private var idleTimer: Scheduled<Void>?
    /// Whether a stream was ever opened: until then the idle timeout is at least the grace.
    private var servedAStream = false
    /// Whether the armed idle timer still gives the first request its grace.
    private var idleTimerIsGrace = false
    private let requestReceiveTimeout: Duration
    private var slowRequestTimer: Scheduled<Void>?
    /// Bytes were read since the last read-complete: their output (responses of inline
    /// handlers, SETTINGS ACK, WINDOW_UPDATE) goes out in one write when the read burst ends.
    private var readSinceFlush = false
    /// A flush is queued on the event loop: output produced outside a read (answers of
    /// async handlers, expiries, streaming output) is written once per loop tick, not per call.
    private var flushScheduled = false
    /// Answers of async handlers, handed over from their tasks in batches: one event-loop hop
    /// and one write for all the answers that arrived while the loop was busy.
    private let answers = AnswerInbox()

    init(router: GRPCRouter, config: GRPCServerConfig, calls: CallAdmission, logger: Logger,
         refusal: String? = nil) throws {
        self.connection = try GRPCServerConnection(router: router, config: config)
        self.calls = calls
        self.logger = logger
        self.idleTimeout = config.idleTimeout
        self.handlersOnEventLoop = config.handlersOnEventLoop
        self.requestReceiveTimeout = config.requestReceiveTimeout
        self.streamBufferLimit = config.maxBufferedRequestBytesPerStream
        self.streamWriteHighWater = config.streamWriteHighWater
        self.refusal = refusal
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { activate(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    private func activate(_ context: ChannelHandlerContext) {
        if let refusal {
            // SETTINGS then GOAWAY(ENHANCE_YOUR_CALM), then close once they are written.
            connection.refuse(reason: refusal)
            var buffer = context.channel.allocator.buffer(capacity: 128)
            try? connection.drainOutput { buffer.writeBytes($0) }
            let channel = context.channel
            context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in channel.close(promise: nil) }
            // Over TLS the write waits for a handshake that may never come.
            context.eventLoop.scheduleTask(in: .nanoseconds(Self.firstRequestGrace.nanoseconds)) {
                channel.close(promise: nil)
            }
            return
        }
        // Our SETTINGS go first.
        flush(context)
        updateIdleTimer(context)
    }

    /// A new connection is not idle before its first request had time to arrive: on a busy
    /// machine a short idle timeout would otherwise close it first.
    static let firstRequestGrace = Duration.seconds(10)

    /// While a request is still arriving, checks every half receive timeout for requests that
    /// took too long.
    private func updateSlowRequestTimer(_ context: ChannelHandlerContext) {
        guard slowRequestTimer == nil, connection.hasIncompleteRequests else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        slowRequestTimer = context.eventLoop.scheduleTask(in: .nanoseconds(requestReceiveTimeout.nanoseconds / 2)) {
            let handler = bound.value
            handler.slowRequestTimer = nil
            guard let context = handler.context else { return }
            if handler.connection.cutOffSlowRequests(limit: handler.requestReceiveTimeout) > 0 {
                handler.flush(context)
            }
            handler.updateSlowRequestTimer(context)
        }
    }

    /// Arms the idle timer while the connection has no stream, disarms it when one opens.
    private func updateIdleTimer(_ context: ChannelHandlerContext) {
        guard let idleTimeout, !connection.isShuttingDown else { return }
        let idle = connection.openStreams == 0 && running.isEmpty
        if !idle { servedAStream = true }
        // Reads before the first request (the preface, SETTINGS) keep the grace.
        let minimum = servedAStream ? .zero : Self.firstRequestGrace
        let grace = minimum > idleTimeout
        if !idle || (idleTimerIsGrace && !grace) {
            // A request came: the grace is over; the idle timeout counts from the last stream.
            idleTimer?.cancel()
            idleTimer = nil
            if !idle { return }
        }
        guard idleTimer == nil else { return }
        idleTimerIsGrace = grace
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: .nanoseconds(max(idleTimeout, minimum).nanoseconds)) {
            let handler = bound.value
            handler.idleTimer = nil
            guard let context = handler.context, handler.connection.openStreams == 0, handler.running.isEmpty else {
                return
            }
            handler.logger.debug("closing idle connection")
            handler.shutDownGracefully(context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let actions: [GRPCServerAction]
        do {
            actions = try buffer.withUnsafeReadableBytes { bytes throws(HTTP2Error) in try connection.receive(bytes) }
        } catch {
            logger.debug("closing connection after HTTP/2 error", metadata: ["error": "\(error)"])
            flush(context)
            context.close(promise: nil)
            return
        }
        if !actions.isEmpty || connection.openStreams > 0 { servedAStream = true }
        for action in actions { run(action, context: context) }
        readSinceFlush = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if readSinceFlush {
            readSinceFlush = false
            flush(context)
            if connection.canClose {
                // nghttp2 ended the session (GOAWAY exchanged, no stream left): close the socket.
                context.close(promise: nil)
                return
            }
            updateIdleTimer(context)
            updateSlowRequestTimer(context)
        }
        context.fireChannelReadComplete()
    }

    /// Writes the session's output once the tasks already queued on the loop have run, so
    /// that everything they produce shares one socket write.
    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let handler = bound.value
            handler.flushScheduled = false
            guard let context = handler.context else { return }
            handler.flush(context)
            handler.updateIdleTimer(context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is GracefulShutdown else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        shutDownGracefully(context)
    }

    private func shutDownGracefully(_ context: ChannelHandlerContext) {
        guard !connection.isShuttingDown else { return }
        idleTimer?.cancel()
        idleTimer = nil
        connection.beginShutdown()
        flush(context)
        // One round trip for requests already on the wire, then the final GOAWAY.
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(100)) {
            // Streaming calls (health watches) may never end on their own: they end now, and
            // their clients reconnect elsewhere.
            for id in bound.value.streaming.keys.sorted() {
                bound.value.connection.finishStreaming(streamID: id, result: .failure(
                    RPCError(.unavailable, "the server is shutting down")))
                bound.value.stop(id, RPCError(.unavailable, "the server is shutting down"))
            }
            bound.value.connection.finishShutdown()
            if let context = bound.value.context { bound.value.flush(context) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        slowRequestTimer?.cancel()
        slowRequestTimer = nil
        for (_, call) in running {
            call.bridge?.close(RPCError(.cancelled, "the connection closed"))
            call.task?.cancel()
            call.timer?.cancel()
            if call.task != nil { calls.leave() }
        }
        running = [:]
        streaming = [:]
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func run(_ action: GRPCServerAction, context: ChannelHandlerContext) {
        switch action {
        case .start(let id, let request, .sync(let handler)):
            connection.complete(streamID: id, result: Result { () throws(RPCError) in try handler(request) })
        case .start(let id, _, .streaming):
            // The connection starts streaming handlers with `.startStreaming`.
            connection.complete(streamID: id, result: .failure(RPCError(.internal, "streaming handler started as unary")))
        case .start(let id, let request, .async(let handler)):
            guard calls.tryEnter() else {
                connection.complete(streamID: id, result: .failure(overloaded()))
                return
            }
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            var call = Running()
            let answers = self.answers
            if handlersOnEventLoop && executor == nil { executor = EventLoopTaskExecutor.of(loop) }
            call.task = Task(executorPreference: executor) {
                let result: Result<GRPCResponse, RPCError>
                do throws(RPCError) {
                    result = .success(try await handler(request))
                } catch {
                    result = .failure(error)
                }
                if answers.post(id, result) {
                    loop.execute { bound.value.takeAnswers() }
                }
            }
            if let deadline = request.deadline {
                let remaining = max(deadline - ContinuousClock.now, .zero)
                call.timer = loop.scheduleTask(in: .nanoseconds(remaining.nanoseconds)) {
                    bound.value.expire(id)
                }
            }
            running[id] = call
        case .startStreaming(let id, let head, let handler):
            guard calls.tryEnter() else {
                connection.finishStreaming(streamID: id, result: .failure(overloaded()))
                return
            }
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            let bridge = GRPCStreamBridge(bufferLimit: streamBufferLimit, highWater: streamWriteHighWater) { output in
                loop.execute { bound.value.apply(id, output) }
            }
            var call = Running(bridge: bridge)
            call.task = bridge.run(handler, head: head)
            if let deadline = head.deadline {
                let remaining = max(deadline - ContinuousClock.now, .zero)
                call.timer = loop.scheduleTask(in: .nanoseconds(remaining.nanoseconds)) {
                    bound.value.expire(id)
                }
            }
            running[id] = call
            streaming[id] = bridge
        case .requestMessage(let id, let message):
            guard let bridge = running[id]?.bridge else { return }
            if !bridge.deliver(message) {
                connection.finishStreaming(streamID: id, result: .failure(RPCError(.resourceExhausted,
                    "the handler is more than \(streamBufferLimit) bytes of request messages behind")))
                stop(id, RPCError(.resourceExhausted, "request messages arrived faster than they were read"))
            }
        case .endOfRequests(let id):
            running[id]?.bridge?.finishRequests()
        case .cancel(let id):
            stop(id, RPCError(.cancelled, "the client cancelled the call"))
        }
    }

    private func overloaded() -> RPCError {
        var pushback = Metadata()
        pushback.add("grpc-retry-pushback-ms", "1000")
        return RPCError(.resourceExhausted, "server is at its limit of \(calls.limit) calls in flight; retry later",
                        metadata: pushback)
    }

    /// Ends a running call's work without an answer from it (the stream is already over).
    private func stop(_ id: Int32, _ reason: RPCError) {
        guard let call = running.removeValue(forKey: id) else { return }
        if let bridge = call.bridge {
            bridge.close(reason)
            streaming[id] = nil
        }
        call.task?.cancel()
        call.timer?.cancel()
        calls.leave()
    }

    /// Output of a streaming handler, in the order it wrote it.
    private func apply(_ id: Int32, _ output: GRPCStreamOutput) {
        guard let call = running[id], let bridge = call.bridge else { return }
        switch output {
        case .message(let message):
            if !connection.sendMessage(streamID: id, message) {
                stop(id, RPCError(.cancelled, "the call is over"))
            }
        case .finish(let result):
            running[id] = nil
            streaming[id] = nil
            call.timer?.cancel()
            calls.leave()
            bridge.close(RPCError(.cancelled, "the call finished"))
            connection.finishStreaming(streamID: id, result: result)
        }
        scheduleFlush()
    }

    /// Answers every call whose task finished since the last time, then writes them at once.
    private func takeAnswers() {
        for (id, result) in answers.take() { finish(id, result) }
        guard let context else { return }
        flush(context)
        updateIdleTimer(context)
    }

    private func finish(_ id: Int32, _ result: Result<GRPCResponse, RPCError>) {
        guard let call = running.removeValue(forKey: id) else { return }
        call.timer?.cancel()
        calls.leave()
        connection.complete(streamID: id, result: result)
    }

    private func expire(_ id: Int32) {
        guard let call = running.removeValue(forKey: id) else { return }
        if let bridge = call.bridge {
            bridge.close(RPCError(.deadlineExceeded, "the call's deadline passed"))
            streaming[id] = nil
        }
        if connection.expire(streamID: id) { call.task?.cancel() }
        calls.leave()
        scheduleFlush()
    }

    private func flush(_ context: ChannelHandlerContext) {
        do {
            try context.writeAndFlush(drainingFrom: connection.drainOutput)
        } catch {
            logger.debug("HTTP/2 send failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        // Writers waiting for the peer's flow-control window may go on.
        for (id, bridge) in streaming { bridge.didSend(connection.takeSentBytes(streamID: id)) }
        if connection.isShuttingDown && running.isEmpty && connection.canClose {
            context.close(promise: nil)
        }
    }
}

/// Answers of a connection's async handlers on their way from the handlers' tasks to the
/// connection's event loop. `post` tells the first poster of a batch to hop to the loop, which
/// takes the whole batch: one hop for many answers.
final class AnswerInbox: Sendable {
    private let queue = NIOLockedValueBox<[(Int32, Result<GRPCResponse, RPCError>)]>([])

    /// Queues an answer; true when the queue was empty, so the caller must schedule `take`.
    func post(_ id: Int32, _ result: Result<GRPCResponse, RPCError>) -> Bool {
        queue.withLockedValue { queue in
            queue.append((id, result))
            return queue.count == 1
        }
    }

    func take() -> [(Int32, Result<GRPCResponse, RPCError>)] {
        queue.withLockedValue { queue in
            defer { queue = [] }
            return queue
        }
    }
}

/// Handlers running at once across every connection of one server.
final class CallAdmission: Sendable {
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
}

extension Duration {
    /// Whole nanoseconds, saturating.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}

extension ChannelHandlerContext {
    /// Writes everything an nghttp2 session wants to send as one buffer, and flushes.
    func writeAndFlush(drainingFrom drain: ((UnsafeRawBufferPointer) -> Void) throws(HTTP2Error) -> Void)
        throws(HTTP2Error) {
        var buffer: ByteBuffer?
        try drain { bytes in
            if buffer == nil { buffer = channel.allocator.buffer(capacity: max(bytes.count, 1024)) }
            buffer?.writeBytes(bytes)
        }
        if let buffer { writeAndFlush(NIOAny(buffer), promise: nil) }
    }
}
