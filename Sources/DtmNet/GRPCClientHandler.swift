import DtmGRPC
import Logging
import NIOCore

/// Glue between one outbound TCP connection and its `GRPCClientConnection`; lives on the
/// channel's event loop, where every call starts, finishes and times out.
/// A call reached a connection that is closing, or the server said it never processed it
/// (GOAWAY, REFUSED_STREAM): it may go once more on another connection.
struct ConnectionRetired: Error {
    /// Why the connection failed, when it failed with an error (a refused TLS handshake, say):
    /// named if the call cannot go elsewhere either.
    var reason: RPCError? = nil
}

final class GRPCClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<GRPCResponse>
        /// When the call fails with DEADLINE_EXCEEDED (see `sweep`), and the timeout it names then.
        var deadline: (at: NIODeadline, timeout: Duration)?
        var path: String
    }

    private let connection: GRPCClientConnection
    private let logger: Logger
    private let onUnusable: @Sendable () -> Void
    private var pending: [Int32: Pending] = [:]
    private var context: ChannelHandlerContext?
    private var reportedUnusable = false
    /// Why the connection failed (a TLS handshake refused, say), for calls that reach it after.
    private var failure: RPCError?
    private let idleTimeout: Duration
    /// With no call in flight: when the connection retires as idle (see `armIdleTimer`).
    private var idleDeadline: NIODeadline?
    /// One timer per connection for both the calls' deadlines and the idle timeout (a timer
    /// per call, plus re-arming the idle one at each call, was about 12 allocations per saga):
    /// it fires at the earliest of them, or earlier, and `sweep` arms it again.
    private var sweepTimer: Scheduled<Void>?
    private var sweepAt: NIODeadline?
    /// Bytes were read since the last read-complete: what they cause (WINDOW_UPDATE, SETTINGS
    /// ACK, PING ACK) goes out in one write when the read burst ends.
    private var readSinceFlush = false

    init(authority: String, config: GRPCClientConfig, logger: Logger,
         onUnusable: @escaping @Sendable () -> Void) throws {
        self.connection = try GRPCClientConnection(authority: authority,
                                                   maxReceiveMessageSize: config.maxReceiveMessageSize)
        self.logger = logger
        self.onUnusable = onUnusable
        self.idleTimeout = config.idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive {
            flush()
            armIdleTimer(atLeast: Self.firstCallGrace)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        // The connection preface and our SETTINGS go first.
        flush()
        armIdleTimer(atLeast: Self.firstCallGrace)
        context.fireChannelActive()
    }

    /// Starts the calls handed over together (see `CallOutbox`), then writes all their
    /// requests with one flush.
    func start(_ batch: [CallOutbox.Start]) {
        for call in batch {
            let id = start(path: call.path, message: call.message, metadata: call.metadata,
                           timeout: call.deadline.map { max($0 - ContinuousClock.now, .zero) }, promise: call.promise)
            if let id { call.handle.withLockedValue { $0 = id } }
        }
        flush()
    }

    /// Starts a call; its result completes `promise`. Returns the stream id, nil if it failed to
    /// start. A connection that is closing (or failed) fails the promise with `ConnectionRetired`,
    /// carrying the connection's error if it had one. The request is written by the next flush
    /// (`start(_:)` flushes after its batch).
    func start(path: String, message: [UInt8], metadata: Metadata, timeout: Duration?,
               promise: EventLoopPromise<GRPCResponse>) -> Int32? {
        guard let context, context.channel.isActive, !connection.isGoingAway, !reportedUnusable, failure == nil else {
            promise.fail(ConnectionRetired(reason: failure))
            return nil
        }
        idleDeadline = nil
        let id: Int32
        do {
            id = try connection.startCall(path: path, message: message, metadata: metadata, timeout: timeout)
        } catch {
            promise.fail(RPCError(.unavailable, "cannot start call to \(connection.authority)\(path): \(error)"))
            return nil
        }
        let deadline = timeout.map { (at: NIODeadline.now() + .nanoseconds(Int64(clamping: $0.nanoseconds)), timeout: $0) }
        pending[id] = Pending(promise: promise, deadline: deadline, path: path)
        if let deadline { armSweep(at: deadline.at) }
        return id
    }

    /// Makes sure the sweep runs no later than `deadline`. Calls mostly share one timeout, so a
    /// new call's deadline is later than the armed one and nothing is scheduled.
    private func armSweep(at deadline: NIODeadline) {
        if let sweepAt, sweepAt <= deadline { return }
        guard let context else { return }
        sweepTimer?.cancel()
        sweepAt = deadline
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sweepTimer = context.eventLoop.scheduleTask(deadline: deadline) { bound.value.sweep() }
    }

    /// Fails the calls whose deadline passed, retires the connection if it stayed idle long
    /// enough, and arms the timer for whatever comes next.
    private func sweep() {
        sweepTimer = nil
        sweepAt = nil
        let now = NIODeadline.now()
        var next: NIODeadline?
        var expired: [(id: Int32, timeout: Duration, path: String)] = []
        for (id, call) in pending {
            guard let deadline = call.deadline else { continue }
            if deadline.at <= now {
                expired.append((id, deadline.timeout, call.path))
            } else {
                next = min(next ?? deadline.at, deadline.at)
            }
        }
        for call in expired {
            cancel(call.id, RPCError(.deadlineExceeded, "deadline of \(call.timeout) exceeded calling \(call.path)"))
        }
        if let idleDeadline, pending.isEmpty {
            if idleDeadline <= now {
                self.idleDeadline = nil
                logger.debug("closing idle client connection", metadata: ["target": "\(connection.authority)"])
                markUnusable()
                context?.close(promise: nil)
                return
            }
            next = min(next ?? idleDeadline, idleDeadline)
        }
        if let next { armSweep(at: next) }
    }

    /// Abandons a call (deadline or caller cancellation): resets its stream, fails its promise.
    func cancel(_ id: Int32, _ error: RPCError) {
        if let completion = connection.cancel(streamID: id, with: error) { complete(completion) }
        flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            let completions = try buffer.withUnsafeReadableBytes { bytes throws(HTTP2Error) in
                try connection.receive(bytes)
            }
            completions.forEach(complete)
        } catch {
            logger.debug("closing client connection after HTTP/2 error", metadata: ["error": "\(error)"])
            failAll(RPCError(.unavailable, "HTTP/2 error on connection to \(connection.authority): \(error)"))
            flush()
            context.close(promise: nil)
            return
        }
        if connection.isGoingAway { markUnusable() }
        readSinceFlush = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if readSinceFlush {
            readSinceFlush = false
            flush()
            if connection.isFinished {
                // nghttp2 ended the session (e.g. after a protocol error it answered with GOAWAY):
                // nothing more can happen on this connection.
                failAll(RPCError(.unavailable, "HTTP/2 session with \(connection.authority) ended"))
                context.close(promise: nil)
            }
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        sweepTimer?.cancel()
        sweepTimer = nil
        sweepAt = nil
        idleDeadline = nil
        failAll(RPCError(.unavailable, "connection to \(connection.authority) closed"))
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("client connection error", metadata: ["error": "\(error)"])
        // Calls fail with the reason (a failed TLS handshake names the certificate problem),
        // also those that reach the connection after it failed.
        let failure = RPCError(.unavailable, "connection to \(connection.authority) failed: \(error)")
        self.failure = failure
        failAll(failure)
        context.close(promise: nil)
    }

    private func complete(_ completion: GRPCCallCompletion) {
        guard let call = pending.removeValue(forKey: completion.streamID) else { return }
        if completion.unprocessed {
            // Never processed by the server: the caller may send it again elsewhere.
            call.promise.fail(ConnectionRetired())
        } else {
            call.promise.completeWith(completion.result.mapError { $0 as Error })
        }
        if connection.isGoingAway && pending.isEmpty { context?.close(promise: nil) }
        armIdleTimer()
    }

    /// A new connection is not idle before the call it was opened for had time to arrive: on a
    /// busy machine a short idle timeout would otherwise retire it first.
    static let firstCallGrace = Duration.seconds(10)

    /// With no call in flight, the connection retires after `idleTimeout` (or `minimum`, if
    /// longer): it leaves the pool first, so no new call is handed to it, then closes.
    private func armIdleTimer(atLeast minimum: Duration = .zero) {
        // `start` clears the idle deadline, so after a call it is set with the plain idle timeout.
        guard pending.isEmpty, idleDeadline == nil, context != nil else { return }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(clamping: max(idleTimeout, minimum).nanoseconds))
        idleDeadline = deadline
        armSweep(at: deadline)
    }

    private func failAll(_ error: RPCError) {
        markUnusable()
        connection.failAll(error).forEach(complete)
        for (_, call) in pending {
            call.promise.fail(error)
        }
        pending = [:]
    }

    private func markUnusable() {
        guard !reportedUnusable else { return }
        reportedUnusable = true
        onUnusable()
    }

    private func flush() {
        guard let context else { return }
        do {
            try context.writeAndFlush(drainingFrom: connection.drainOutput)
        } catch {
            failAll(RPCError(.unavailable, "HTTP/2 send failed on \(connection.authority): \(error)"))
            context.close(promise: nil)
        }
    }
}
