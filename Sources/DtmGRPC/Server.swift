@_exported import DtmHTTP2

/// A unary request as a handler sees it.
public struct GRPCRequest: Sendable {
    /// `/package.Service/Method`
    public var path: String
    public var metadata: Metadata
    /// The serialised request message (no gRPC prefix).
    public var message: [UInt8]
    /// From `grpc-timeout`; the server answers DEADLINE_EXCEEDED when it passes.
    public var timeout: Duration?
    /// When the call expires: `timeout` counted from the arrival of the request headers.
    public var deadline: ContinuousClock.Instant?

    /// `deadline` defaults to `timeout` from now.
    public init(path: String, metadata: Metadata = Metadata(), message: [UInt8], timeout: Duration? = nil,
                deadline: ContinuousClock.Instant? = nil) {
        self.path = path
        self.metadata = metadata
        self.message = message
        self.timeout = timeout
        self.deadline = deadline ?? timeout.map { ContinuousClock.now + $0 }
    }

    /// Throws DEADLINE_EXCEEDED once the deadline has passed: a handler calls this before it
    /// starts work the client can no longer be told about (e.g. a durable write).
    public func checkDeadline(now: ContinuousClock.Instant = .now) throws(RPCError) {
        if let deadline, now >= deadline {
            throw RPCError(.deadlineExceeded, "the call's deadline (grpc-timeout) passed before it was handled")
        }
    }
}

/// A successful unary response.
public struct GRPCResponse: Sendable, Equatable {
    public var message: [UInt8]
    /// Sent with the response headers.
    public var metadata: Metadata
    /// Sent with the trailers, next to `grpc-status: 0`.
    public var trailers: Metadata

    public init(message: [UInt8], metadata: Metadata = Metadata(), trailers: Metadata = Metadata()) {
        self.message = message
        self.metadata = metadata
        self.trailers = trailers
    }
}

/// How a method is served.
public enum GRPCHandler: Sendable {
    /// Runs inline on the connection's event loop: for cheap work that never blocks (e.g. NewGid).
    case sync(@Sendable (GRPCRequest) throws(RPCError) -> GRPCResponse)
    /// Runs in its own task; cancelled when the client resets the stream or the deadline passes.
    case async(@Sendable (GRPCRequest) async throws(RPCError) -> GRPCResponse)
    /// Server streaming, client streaming or bidirectional: starts as soon as the request
    /// headers arrive, reads request messages and writes response messages as they come, and
    /// returns the trailing metadata (or throws the status). Runs in its own task; cancelled
    /// when the client resets the stream, the connection closes or the deadline passes.
    case streaming(@Sendable (GRPCStreamingCall) async throws(RPCError) -> Metadata)
}

/// Maps `/package.Service/Method` paths to handlers.
public struct GRPCRouter: Sendable {
    private var routes: [String: GRPCHandler] = [:]

    public init() {}

    public mutating func register(_ path: String, _ handler: GRPCHandler) {
        routes[path] = handler
    }

    public mutating func register(service: String, method: String, _ handler: GRPCHandler) {
        register("/\(service)/\(method)", handler)
    }

    public func handler(for path: String) -> GRPCHandler? { routes[path] }

    public var paths: [String] { routes.keys.sorted() }
}

/// Limits of the gRPC server and of each of its connections.
public struct GRPCServerConfig: Sendable {
    /// Larger request messages get RESOURCE_EXHAUSTED (gRPC's default is 4 MiB).
    public var maxReceiveMessageSize: Int
    /// Bytes of unfinished requests one connection may buffer before new data is refused.
    public var maxBufferedBytesPerConnection: Int
    /// Concurrent streams per connection and the header list limit are advertised and
    /// enforced from here.
    public var http2: HTTP2Settings
    /// Open connections the server accepts; one more is answered GOAWAY(ENHANCE_YOUR_CALM)
    /// and closed (clients see UNAVAILABLE).
    public var maxConnections: Int
    /// Handlers running at once over all connections; a call beyond it is answered
    /// RESOURCE_EXHAUSTED with a `grpc-retry-pushback-ms` hint.
    public var maxConcurrentCalls: Int
    /// A connection with no open stream for this long is closed gracefully (GOAWAY); nil never.
    public var idleTimeout: Duration?
    /// A request must arrive completely (headers to END_STREAM) within this; a slower one is
    /// answered RESOURCE_EXHAUSTED and its buffer freed.
    public var requestReceiveTimeout: Duration
    /// Streaming calls: request bytes that may wait for a handler that reads slower than the
    /// client writes; past it the call ends with RESOURCE_EXHAUSTED.
    public var maxBufferedRequestBytesPerStream: Int
    /// Streaming calls: response bytes that may wait for a client that reads slower than the
    /// handler writes before the handler's `send` waits (HTTP/2 flow control holds the rest).
    public var streamWriteHighWater: Int
    /// Runs unary async handlers on their connection's event loop thread instead of Swift's
    /// global executor: no thread wake-up between the request's bytes, the handler and its
    /// answer. Only for handlers that never block a thread (the coordinator's own); code that
    /// may block (a branch service's business logic) keeps the default.
    public var handlersOnEventLoop = false

    public init(maxReceiveMessageSize: Int = 4 << 20, maxBufferedBytesPerConnection: Int = 64 << 20,
                http2: HTTP2Settings = HTTP2Settings(), maxConnections: Int = 1024,
                maxConcurrentCalls: Int = 4096, idleTimeout: Duration? = .seconds(300),
                requestReceiveTimeout: Duration = .seconds(30),
                maxBufferedRequestBytesPerStream: Int = 4 << 20, streamWriteHighWater: Int = 256 << 10) {
        self.maxBufferedRequestBytesPerStream = maxBufferedRequestBytesPerStream
        self.streamWriteHighWater = streamWriteHighWater
        self.maxReceiveMessageSize = maxReceiveMessageSize
        self.maxBufferedBytesPerConnection = maxBufferedBytesPerConnection
        self.http2 = http2
        self.maxConnections = maxConnections
        self.maxConcurrentCalls = maxConcurrentCalls
        self.idleTimeout = idleTimeout
        self.requestReceiveTimeout = requestReceiveTimeout
    }
}

/// What the transport must do after `receive`.
public enum GRPCServerAction: Sendable {
    /// Run `handler` for the request on `streamID`, then call `complete`.
    /// With a timeout, call `expire` when it passes.
    case start(streamID: Int32, request: GRPCRequest, handler: GRPCHandler)
    /// The client reset the stream (or the connection dropped it): cancel the handler's work.
    /// For a streaming call also sent when the server ended it (deadline, bad request data).
    case cancel(streamID: Int32)
    /// Run the streaming `handler` now (its request messages follow as `.requestMessage`);
    /// its output goes to `sendMessage` / `finishStreaming`. With a deadline, call `expire`
    /// when it passes.
    case startStreaming(streamID: Int32, head: GRPCStreamHead,
                        handler: @Sendable (GRPCStreamingCall) async throws(RPCError) -> Metadata)
    /// A complete request message of a streaming call.
    case requestMessage(streamID: Int32, message: [UInt8])
    /// The client half-closed a streaming call: no more request messages.
    case endOfRequests(streamID: Int32)
}

/// The gRPC server side of one HTTP/2 connection, in memory: bytes in, actions out, bytes to send.
///
/// Not thread-safe; the transport calls it from one event loop. It never runs handlers itself,
/// so that the transport decides where they run and tests can complete them by hand.
public final class GRPCServerConnection {
    private enum StreamState {
        /// Receiving headers and DATA.
        /// `since`: when its headers arrived.
        case receiving(headers: [HeaderField], buffer: [UInt8], deadline: ContinuousClock.Instant?,
                       since: ContinuousClock.Instant)
        /// Answered early with an error; further DATA is dropped.
        case rejected
        /// Handler running; waiting for `complete` or `expire`.
        case dispatched
        /// Streaming handler running: request DATA is cut into messages as it comes.
        /// `partial`: bytes of a message not complete yet; `responding`: headers were sent.
        case streaming(partial: [UInt8], responding: Bool)
    }

    public let router: GRPCRouter
    public let config: GRPCServerConfig
    private let session: HTTP2Session
    private var streams: [Int32: StreamState] = [:]
    private var bufferedBytes = 0
    private let now: @Sendable () -> ContinuousClock.Instant
    public private(set) var isShuttingDown = false

    /// `now` is the clock deadlines are read from (tests move it by hand).
    public init(router: GRPCRouter, config: GRPCServerConfig = GRPCServerConfig(),
                now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) throws(HTTP2Error) {
        self.router = router
        self.config = config
        self.now = now
        self.session = try HTTP2Session(role: .server, settings: config.http2)
    }

    /// Streams the connection is tracking (receiving, answered early, or running a handler).
    /// Zero means the connection is idle.
    public var openStreams: Int { streams.count }

    /// Bytes of request messages buffered for streams still receiving.
    public var bufferedRequestBytes: Int { bufferedBytes }

    /// Streams whose handler has not answered yet.
    public var inFlight: Int {
        streams.values.reduce(0) {
            switch $1 {
            case .dispatched, .streaming: $0 + 1
            case .receiving, .rejected: $0
            }
        }
    }

    /// Feeds bytes read from the socket. A thrown error is fatal: flush `drainOutput`, close.
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2Error) -> [GRPCServerAction] {
        var actions: [GRPCServerAction] = []
        for event in try session.receive(bytes) {
            handle(event, into: &actions)
        }
        return actions
    }

    public func receive(_ bytes: [UInt8]) throws(HTTP2Error) -> [GRPCServerAction] {
        try bytes.withUnsafeBytes { raw in Result { () throws(HTTP2Error) in try receive(raw) } }.get()
    }

    /// Answers a dispatched call. Ignored when the stream is gone (reset, expired).
    public func complete(streamID: Int32, result: Result<GRPCResponse, RPCError>) {
        guard case .dispatched = streams[streamID] else { return }
        streams[streamID] = nil
        switch result {
        case .success(let response):
            // The common answer carries no metadata: its header lists are built once.
            let headers = response.metadata.isEmpty ? Self.responseHeaders : Self.responseHeaders + response.metadata.headerFields
            let trailers = response.trailers.isEmpty ? Self.okTrailers : Self.okTrailers + response.trailers.headerFields
            do {
                try session.respond(streamID: streamID, headers: headers, body: Wire.frame(response.message),
                                    trailers: trailers)
            } catch {
                // Refused (e.g. a metadata value HTTP/2 forbids): end the stream rather than
                // leave the caller waiting for its deadline.
                try? session.resetStream(streamID, code: .internalError)
            }
        case .failure(let error):
            sendError(streamID: streamID, error)
        }
    }

    /// The call's deadline passed: answers DEADLINE_EXCEEDED if it is still unanswered.
    /// Returns true when it was, so the transport cancels the handler.
    @discardableResult
    public func expire(streamID: Int32) -> Bool {
        let error = RPCError(.deadlineExceeded, "deadline exceeded before the handler answered")
        switch streams[streamID] {
        case .dispatched?:
            streams[streamID] = nil
            sendError(streamID: streamID, error)
            return true
        case .streaming?:
            finishStreaming(streamID: streamID, result: .failure(error))
            return true
        default:
            return false
        }
    }

    // MARK: - Streaming calls

    /// Sends one response message of a streaming call (response headers go first, once).
    /// False when the call is over (reset, expired, finished): the handler's output is dropped.
    @discardableResult
    public func sendMessage(streamID: Int32, _ message: [UInt8]) -> Bool {
        guard case .streaming(let partial, let responding) = streams[streamID] else { return false }
        do throws(HTTP2Error) {
            if !responding {
                try session.startResponse(streamID: streamID, headers: Self.responseHeaders)
                streams[streamID] = .streaming(partial: partial, responding: true)
            }
            try session.appendBody(streamID: streamID, Wire.frame(message))
            return true
        } catch {
            dropStreaming(streamID)
            try? session.resetStream(streamID, code: .internalError)
            return false
        }
    }

    /// Ends a streaming call with its status: trailers after the messages sent, or a
    /// trailers-only response when none was. Ignored when the call is already over.
    public func finishStreaming(streamID: Int32, result: Result<Metadata, RPCError>) {
        guard case .streaming(_, let responding) = streams[streamID] else { return }
        dropStreaming(streamID)
        guard responding else {
            switch result {
            case .success(let trailers):
                // No message: headers, then the status in trailers (a trailers-only OK is legal
                // too, but clients print the initial metadata separately).
                do throws(HTTP2Error) {
                    try session.startResponse(streamID: streamID, headers: Self.responseHeaders)
                    try session.endBody(streamID: streamID, trailers: [HeaderField("grpc-status", "0")] + trailers.headerFields)
                } catch {
                    try? session.resetStream(streamID, code: .internalError)
                }
            case .failure(let error):
                sendError(streamID: streamID, error)
            }
            return
        }
        let trailers: [HeaderField]
        switch result {
        case .success(let metadata):
            trailers = [HeaderField("grpc-status", "0")] + metadata.headerFields
        case .failure(let error):
            trailers = Self.statusFields(error)
        }
        do throws(HTTP2Error) {
            try session.endBody(streamID: streamID, trailers: trailers)
        } catch {
            try? session.resetStream(streamID, code: .internalError)
        }
    }

    /// Response bytes of a streaming call that nghttp2 took since the last call (the
    /// transport passes them to the call's `GRPCStreamBridge.didSend`).
    public func takeSentBytes(streamID: Int32) -> Int {
        session.takeSentBodyBytes(streamID: streamID)
    }

    /// Response bytes of a streaming call still waiting for the peer's flow-control window.
    public func unsentBytes(streamID: Int32) -> Int {
        session.unsentBodyBytes(streamID: streamID)
    }

    /// The call is over on our side: further request DATA is dropped, the partial buffer freed.
    private func dropStreaming(_ id: Int32) {
        if case .streaming(let partial, _) = streams[id] { bufferedBytes -= partial.count }
        streams[id] = .rejected
    }

    private static let responseHeaders = [HeaderField(":status", "200"), HeaderField("content-type", Wire.contentType)]

    /// Streams whose request has not fully arrived `limit` after its headers (a peer that
    /// trickles or stalls) are answered RESOURCE_EXHAUSTED and their buffers freed, so a slow
    /// peer cannot hold memory or streams. Returns how many were cut off.
    @discardableResult
    public func cutOffSlowRequests(limit: Duration) -> Int {
        let cutoff = now() - limit
        var slow: [Int32] = []
        for (id, state) in streams {
            if case .receiving(_, let buffer, _, let since) = state, since <= cutoff {
                bufferedBytes -= buffer.count
                slow.append(id)
            }
        }
        for id in slow.sorted() {
            streams[id] = .rejected
            sendError(streamID: id, RPCError(.resourceExhausted, "request did not arrive completely within \(limit)"))
        }
        return slow.count
    }

    /// True while some request is still arriving (the transport then checks `cutOffSlowRequests`).
    public var hasIncompleteRequests: Bool {
        streams.values.contains { if case .receiving = $0 { true } else { false } }
    }

    /// Everything to write to the socket now.
    public func drainOutput(_ sink: (UnsafeRawBufferPointer) -> Void) throws(HTTP2Error) {
        try session.drainOutput(sink)
    }

    public func pendingOutput() throws(HTTP2Error) -> [UInt8] {
        try session.pendingOutput()
    }

    /// Graceful shutdown, step 1: a GOAWAY notice; requests already sent may still arrive.
    public func beginShutdown() {
        guard !isShuttingDown else { return }
        isShuttingDown = true
        try? session.shutdownNotice()
    }

    /// Refuses the whole connection before any stream: GOAWAY naming no processed stream,
    /// ENHANCE_YOUR_CALM and `reason` as debug data. Close once `drainOutput` is written.
    public func refuse(reason: String) {
        isShuttingDown = true
        try? session.goAway(code: .enhanceYourCalm, debugData: Array(reason.utf8))
    }

    /// Graceful shutdown, step 2 (about one round trip later): the final GOAWAY. Calls in
    /// flight finish; the connection may close when `canClose` turns true.
    public func finishShutdown() {
        isShuttingDown = true
        try? session.goAway(code: .noError)
    }

    /// True when nghttp2 has nothing more to read or write (after GOAWAY and the last stream).
    public var canClose: Bool { !session.wantsRead && !session.wantsWrite }

    // MARK: - Events

    private func handle(_ event: HTTP2Event, into actions: inout [GRPCServerAction]) {
        switch event {
        case .headers(let id, let fields, let endStream):
            if streams[id] != nil {
                // Trailers from a client: unary requests end here.
                if endStream { finishRequest(id, into: &actions) }
                return
            }
            let handler: GRPCHandler
            switch validate(fields) {
            case .success(let found): handler = found
            case .failure(let rejection):
                streams[id] = .rejected
                sendError(streamID: id, rejection.error, httpStatus: rejection.httpStatus)
                return
            }
            if case .streaming(let body) = handler {
                startStreaming(id, fields, body, endStream: endStream, into: &actions)
            } else {
                let arrival = now()
                let deadline = fields["grpc-timeout"].flatMap(Wire.parseTimeout).map { arrival + $0 }
                streams[id] = .receiving(headers: fields, buffer: [], deadline: deadline, since: arrival)
                if endStream { finishRequest(id, into: &actions) }
            }
        case .headersTooLarge(let id, let listSize, let limit, _):
            switch streams[id] {
            case .receiving(_, let buffer, _, _)?: bufferedBytes -= buffer.count
            case .dispatched?, .rejected?: return
            case .streaming?:
                // Oversized trailers of a streaming request: the call ends, its handler too.
                finishStreaming(streamID: id, result: .failure(RPCError(.resourceExhausted,
                    "trailer list of \(listSize == .max ? "unbounded" : String(listSize)) bytes exceeds the limit of \(limit) bytes")))
                actions.append(.cancel(streamID: id))
                return
            case nil: break
            }
            streams[id] = .rejected
            sendError(streamID: id, RPCError(.resourceExhausted,
                "header list of \(listSize == .max ? "unbounded" : String(listSize)) bytes exceeds the limit of \(limit) bytes (SETTINGS_MAX_HEADER_LIST_SIZE)"))
        case .data(let id, let bytes):
            receiveData(id, bytes, into: &actions)
        case .endStream(let id):
            finishRequest(id, into: &actions)
        case .streamClosed(let id, _):
            switch streams.removeValue(forKey: id) {
            case .receiving(_, let buffer, _, _)?: bufferedBytes -= buffer.count
            case .dispatched?: actions.append(.cancel(streamID: id))
            case .streaming(let partial, _)?:
                bufferedBytes -= partial.count
                actions.append(.cancel(streamID: id))
            case .rejected?, nil: break
            }
        case .goAway:
            break
        }
    }

    /// A request the server refuses before running anything, and the HTTP status to say it with.
    private struct Rejection: Error {
        var error: RPCError
        var httpStatus: String

        init(_ error: RPCError, _ httpStatus: String) {
            self.error = error
            self.httpStatus = httpStatus
        }
    }

    /// The handler for a request's headers, or why it is refused.
    private func validate(_ fields: [HeaderField]) -> Result<GRPCHandler, Rejection> {
        guard fields[":method"] == "POST" else {
            return .failure(Rejection(RPCError(.internal, "gRPC requires method POST, got \(fields[":method"] ?? "none")"), "405"))
        }
        guard Wire.isGRPCContentType(fields["content-type"]) else {
            return .failure(Rejection(RPCError(.internal, "invalid gRPC request content-type '\(fields["content-type"] ?? "")'"), "415"))
        }
        if let encoding = fields["grpc-encoding"], encoding != "identity" {
            return .failure(Rejection(RPCError(.unimplemented, "grpc-encoding '\(encoding)' is not supported; use identity"), "200"))
        }
        if let timeout = fields["grpc-timeout"], Wire.parseTimeout(timeout) == nil {
            return .failure(Rejection(RPCError(.internal, "malformed grpc-timeout '\(timeout)'"), "200"))
        }
        let path = fields[":path"] ?? ""
        guard let handler = router.handler(for: path) else {
            return .failure(Rejection(RPCError(.unimplemented, "unknown method \(path)"), "200"))
        }
        return .success(handler)
    }

    private func receiveData(_ id: Int32, _ bytes: [UInt8], into actions: inout [GRPCServerAction]) {
        guard case .receiving(let headers, var buffer, let deadline, let since) = streams[id] else {
            // Unary requests, the common case, cost one lookup; streams a second.
            if case .streaming = streams[id] { receiveStreamingData(id, bytes, into: &actions) }
            return
        }
        // The 5-byte prefix tells the size up front: refuse before buffering a huge message.
        let declared = buffer.count < 5
            ? (buffer.isEmpty ? Wire.declaredLength(bytes) : Wire.declaredLength(buffer + bytes.prefix(5 - buffer.count)))
            : nil
        let limit = config.maxReceiveMessageSize
        var refusal: String?
        if let declared, declared > limit {
            refusal = "message of \(declared) bytes exceeds the maximum of \(limit) bytes"
        } else if buffer.count + bytes.count > limit + 5 {
            refusal = "request data exceeds the maximum message size of \(limit) bytes"
        } else if bufferedBytes + bytes.count > config.maxBufferedBytesPerConnection {
            refusal = "connection has too many unfinished request bytes"
        }
        if let refusal {
            bufferedBytes -= buffer.count
            streams[id] = .rejected
            // Further DATA on this stream is dropped unbuffered. No RST_STREAM: nghttp2 would
            // send it ahead of the queued response HEADERS, and the client would never see why.
            sendError(streamID: id, RPCError(.resourceExhausted, refusal))
            return
        }
        streams[id] = .rejected  // drop our reference so the append below does not copy the buffer
        if buffer.isEmpty {
            buffer = bytes  // the usual unary request: one DATA chunk, kept as it came
        } else {
            buffer.append(contentsOf: bytes)
        }
        bufferedBytes += bytes.count
        streams[id] = .receiving(headers: headers, buffer: buffer, deadline: deadline, since: since)
    }

    private func startStreaming(_ id: Int32, _ fields: [HeaderField],
                                _ handler: @escaping @Sendable (GRPCStreamingCall) async throws(RPCError) -> Metadata,
                                endStream: Bool, into actions: inout [GRPCServerAction]) {
        let metadata: Metadata
        do throws(RPCError) {
            metadata = try Metadata(headers: fields)
        } catch {
            streams[id] = .rejected
            sendError(streamID: id, error)
            return
        }
        let timeout = fields["grpc-timeout"].flatMap(Wire.parseTimeout)
        streams[id] = .streaming(partial: [], responding: false)
        actions.append(.startStreaming(
            streamID: id,
            head: GRPCStreamHead(path: fields[":path"] ?? "", metadata: metadata, timeout: timeout,
                                 deadline: timeout.map { now() + $0 }),
            handler: handler))
        if endStream { actions.append(.endOfRequests(streamID: id)) }
    }

    /// The client half-closed a streaming call: fine between messages, an error inside one.
    private func endRequests(_ id: Int32, partial: [UInt8], into actions: inout [GRPCServerAction]) {
        if partial.isEmpty {
            actions.append(.endOfRequests(streamID: id))
        } else {
            finishStreaming(streamID: id, result: .failure(RPCError(.internal,
                "request stream ended inside a message (\(partial.count) bytes of it arrived)")))
            actions.append(.cancel(streamID: id))
        }
    }

    /// Cuts a streaming call's DATA into messages; a bad prefix or an oversized message ends
    /// the call (and its handler) with the status a unary call would get.
    private func receiveStreamingData(_ id: Int32, _ bytes: [UInt8], into actions: inout [GRPCServerAction]) {
        guard case .streaming(var partial, let responding) = streams[id] else { return }
        streams[id] = .rejected  // drop our reference so the append below does not copy the buffer
        bufferedBytes -= partial.count
        partial.append(contentsOf: bytes)
        var start = 0
        var failure: RPCError?
        while partial.count - start >= 5 {
            if partial[start] != 0 {
                failure = RPCError(.internal, "message has the compressed flag set but no grpc-encoding was negotiated")
                break
            }
            let length = Int(partial[start + 1]) << 24 | Int(partial[start + 2]) << 16
                | Int(partial[start + 3]) << 8 | Int(partial[start + 4])
            if length > config.maxReceiveMessageSize {
                failure = RPCError(.resourceExhausted,
                    "message of \(length) bytes exceeds the maximum of \(config.maxReceiveMessageSize) bytes")
                break
            }
            guard partial.count - start >= 5 + length else { break }
            actions.append(.requestMessage(streamID: id, message: Array(partial[(start + 5)..<(start + 5 + length)])))
            start += 5 + length
        }
        if failure == nil && bufferedBytes + partial.count - start > config.maxBufferedBytesPerConnection {
            failure = RPCError(.resourceExhausted, "connection has too many unfinished request bytes")
        }
        if start > 0 { partial.removeFirst(start) }
        streams[id] = .streaming(partial: partial, responding: responding)
        bufferedBytes += partial.count
        if let failure {
            finishStreaming(streamID: id, result: .failure(failure))
            actions.append(.cancel(streamID: id))
        }
    }

    private func finishRequest(_ id: Int32, into actions: inout [GRPCServerAction]) {
        guard case .receiving(let headers, let buffer, let deadline, _) = streams[id] else {
            if case .streaming(let partial, _) = streams[id] { endRequests(id, partial: partial, into: &actions) }
            return
        }
        bufferedBytes -= buffer.count
        if let deadline, now() >= deadline {
            // Nothing was started, so nothing happens: the client is told so plainly.
            streams[id] = .rejected
            sendError(streamID: id, RPCError(.deadlineExceeded, "the call's deadline (grpc-timeout) passed before its request arrived"))
            return
        }
        let path = headers[":path"] ?? ""
        guard let handler = router.handler(for: path) else { return }
        // Drop the stream's reference to the buffer first: the message is cut out of it in place.
        streams[id] = .dispatched
        let message: [UInt8]
        let metadata: Metadata
        do throws(RPCError) {
            message = try Wire.unaryMessage(from: consume buffer, maxSize: config.maxReceiveMessageSize).get()
            metadata = try Metadata(headers: headers)
        } catch {
            streams[id] = .rejected
            sendError(streamID: id, error)
            return
        }
        let timeout = headers["grpc-timeout"].flatMap(Wire.parseTimeout)
        actions.append(.start(streamID: id,
                              request: GRPCRequest(path: path, metadata: metadata, message: message, timeout: timeout,
                                                   deadline: deadline),
                              handler: handler))
    }

    private static let okTrailers = [HeaderField("grpc-status", "0")]

    /// `grpc-status`, `grpc-message` and the error's metadata.
    private static func statusFields(_ error: RPCError) -> [HeaderField] {
        var fields = [HeaderField("grpc-status", String(error.code.rawValue))]
        if !error.message.isEmpty {
            fields.append(HeaderField("grpc-message", Wire.percentEncode(error.message)))
        }
        return fields + error.metadata.headerFields
    }

    /// A trailers-only response: one HEADERS frame with the status, ending the stream.
    private func sendError(streamID: Int32, _ error: RPCError, httpStatus: String = "200") {
        let fields = [HeaderField(":status", httpStatus), HeaderField("content-type", Wire.contentType)]
            + Self.statusFields(error)
        do {
            try session.submitHeadersOnly(streamID: streamID, headers: fields)
        } catch {
            try? session.resetStream(streamID, code: .internalError)
        }
    }
}
