import DtmSync

/// What a streaming call's handler sees: the call's head, the request messages as they
/// arrive and a writer for response messages. The handler returns the trailing metadata sent
/// next to `grpc-status: 0`, or throws the status to end the call with.
public struct GRPCStreamingCall: Sendable {
    /// `/package.Service/Method`
    public var path: String
    public var metadata: Metadata
    /// From `grpc-timeout`; when it passes the call ends with DEADLINE_EXCEEDED and the
    /// handler's task is cancelled.
    public var timeout: Duration?
    public var deadline: ContinuousClock.Instant?
    /// Request messages in order; ends when the client half-closes, throws CANCELLED (or
    /// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) when the call ends early.
    public let requests: GRPCRequestStream
    /// Response messages; `send` waits while the client is not reading (flow control).
    public let responses: GRPCResponseWriter

    init(head: GRPCStreamHead, bridge: GRPCStreamBridge) {
        self.path = head.path
        self.metadata = head.metadata
        self.timeout = head.timeout
        self.deadline = head.deadline
        self.requests = GRPCRequestStream(bridge: bridge)
        self.responses = GRPCResponseWriter(bridge: bridge)
    }
}

/// The head of a streaming call, known as soon as its request headers arrive.
public struct GRPCStreamHead: Sendable {
    public var path: String
    public var metadata: Metadata
    public var timeout: Duration?
    public var deadline: ContinuousClock.Instant?
}

/// The request messages of a streaming call.
public struct GRPCRequestStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = RPCError
    let bridge: GRPCStreamBridge

    public struct AsyncIterator: AsyncIteratorProtocol {
        public typealias Element = [UInt8]
        public typealias Failure = RPCError
        let bridge: GRPCStreamBridge

        public mutating func next() async throws(RPCError) -> [UInt8]? {
            try await bridge.nextRequest()
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(RPCError) -> [UInt8]? {
            try await bridge.nextRequest()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bridge: bridge) }

    /// The next request message, nil once the client half-closed.
    public func next() async throws(RPCError) -> [UInt8]? { try await bridge.nextRequest() }
}

/// Sends response messages of a streaming call.
public struct GRPCResponseWriter: Sendable {
    let bridge: GRPCStreamBridge

    /// Queues `message`; returns once the bytes waiting for the client are under the
    /// stream's high-water mark. Throws the call's status once it ended (client reset,
    /// deadline, connection closed).
    public func send(_ message: [UInt8]) async throws(RPCError) {
        try await bridge.send(message)
    }
}

/// What a streaming handler asks the connection's owner to do, in order.
public enum GRPCStreamOutput: Sendable {
    case message([UInt8])
    case finish(Result<Metadata, RPCError>)
}

/// The meeting point of the event loop that owns a connection and the task running one
/// streaming handler. The loop delivers request messages (bounded: past `bufferLimit` bytes
/// the call is refused), reports response bytes the peer took, and closes it when the call
/// ends; the handler's task waits on it for requests and for room to write.
public final class GRPCStreamBridge: Sendable {
    private struct State {
        var requests: [[UInt8]] = []
        var requestHead = 0
        var bufferedRequestBytes = 0
        var inputEnded = false
        var closed: RPCError?
        var reader: CheckedContinuation<Result<[UInt8]?, RPCError>, Never>?
        /// Framed response bytes handed to the loop and not yet taken by nghttp2.
        var unsentResponseBytes = 0
        var writer: CheckedContinuation<Result<Void, RPCError>, Never>?
    }

    private let state = Locked(State())
    private let output: @Sendable (GRPCStreamOutput) -> Void
    /// Request bytes that may wait for the handler; more is refused with RESOURCE_EXHAUSTED.
    public let bufferLimit: Int
    /// A writer waits once this many response bytes wait for the peer, until half are gone.
    public let highWater: Int

    /// `output` runs on the handler's task; it must hand the output to the owning loop in order.
    public init(bufferLimit: Int, highWater: Int, output: @escaping @Sendable (GRPCStreamOutput) -> Void) {
        self.bufferLimit = bufferLimit
        self.highWater = highWater
        self.output = output
    }

    /// Starts `handler` in its own task; its result is handed to `output` as `.finish`.
    public func run(_ handler: @escaping @Sendable (GRPCStreamingCall) async throws(RPCError) -> Metadata,
                    head: GRPCStreamHead) -> Task<Void, Never> {
        let call = GRPCStreamingCall(head: head, bridge: self)
        return Task {
            let result: Result<Metadata, RPCError>
            do throws(RPCError) {
                result = .success(try await handler(call))
            } catch {
                result = .failure(error)
            }
            if !self.isClosed { self.output(.finish(result)) }
        }
    }

    // MARK: Loop side

    /// A request message arrived. False when the handler is too far behind: the owner ends
    /// the call with RESOURCE_EXHAUSTED.
    public func deliver(_ message: [UInt8]) -> Bool {
        let (accepted, reader) = state.withLock { state -> (Bool, CheckedContinuation<Result<[UInt8]?, RPCError>, Never>?) in
            guard state.closed == nil else { return (true, nil) }
            if let reader = state.reader {
                state.reader = nil
                return (true, reader)
            }
            guard state.bufferedRequestBytes + message.count <= bufferLimit else { return (false, nil) }
            state.requests.append(message)
            state.bufferedRequestBytes += message.count
            return (true, nil)
        }
        reader?.resume(returning: .success(message))
        return accepted
    }

    /// The client half-closed: after the buffered messages the request stream ends.
    public func finishRequests() {
        let reader = state.withLock { state in
            state.inputEnded = true
            guard state.requestHead == state.requests.count else { return nil as CheckedContinuation<Result<[UInt8]?, RPCError>, Never>? }
            defer { state.reader = nil }
            return state.reader
        }
        reader?.resume(returning: .success(nil))
    }

    /// nghttp2 took `count` response bytes of this stream.
    public func didSend(_ count: Int) {
        guard count > 0 else { return }
        let writer = state.withLock { state -> CheckedContinuation<Result<Void, RPCError>, Never>? in
            state.unsentResponseBytes -= count
            guard state.unsentResponseBytes <= highWater / 2, let writer = state.writer else { return nil }
            state.writer = nil
            return writer
        }
        writer?.resume(returning: .success(()))
    }

    /// The call ended without the handler (reset, deadline, connection gone, refused input):
    /// waiting readers and writers get `error`; later output is dropped.
    public func close(_ error: RPCError) {
        let (reader, writer) = state.withLock { state in
            if state.closed == nil { state.closed = error }
            defer { state.reader = nil; state.writer = nil }
            return (state.reader, state.writer)
        }
        reader?.resume(returning: .failure(error))
        writer?.resume(returning: .failure(error))
    }

    public var isClosed: Bool { state.withLock { $0.closed != nil } }

    // MARK: Handler side

    func nextRequest() async throws(RPCError) -> [UInt8]? {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<[UInt8]?, RPCError>, Never>) in
            let ready = state.withLock { state -> Result<[UInt8]?, RPCError>? in
                if state.requestHead < state.requests.count {
                    let message = state.requests[state.requestHead]
                    state.requestHead += 1
                    state.bufferedRequestBytes -= message.count
                    if state.requestHead == state.requests.count {
                        state.requests.removeAll(keepingCapacity: true)
                        state.requestHead = 0
                    }
                    return .success(message)
                }
                if let closed = state.closed { return .failure(closed) }
                if state.inputEnded { return .success(nil) }
                state.reader = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        return try result.get()
    }

    func send(_ message: [UInt8]) async throws(RPCError) {
        let framed = message.count + 5
        let admitted = state.withLock { state -> Result<Void, RPCError> in
            if let closed = state.closed { return .failure(closed) }
            state.unsentResponseBytes += framed
            return .success(())
        }
        try admitted.get()
        output(.message(message))
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Void, RPCError>, Never>) in
            let ready = state.withLock { state -> Result<Void, RPCError>? in
                if let closed = state.closed { return .failure(closed) }
                if state.unsentResponseBytes <= highWater { return .success(()) }
                state.writer = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        try result.get()
    }
}
