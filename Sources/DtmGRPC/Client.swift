/// A finished client call: the response, or why there is none.
public struct GRPCCallCompletion: Sendable {
    public var streamID: Int32
    public var result: Result<GRPCResponse, RPCError>
    /// The server says it never processed the stream (GOAWAY past it, or REFUSED_STREAM): the
    /// call may safely be sent again on another connection.
    public var unprocessed = false
}

/// The gRPC client side of one HTTP/2 connection, in memory: start calls, feed received
/// bytes, collect completions, drain bytes to send. Not thread-safe; one event loop owns it.
public final class GRPCClientConnection {
    private struct Call {
        var responseHeaders: [HeaderField]?
        var buffer: [UInt8] = []
        /// A streaming call: response messages are cut out of `buffer` as they complete.
        var streaming = false
    }

    public let authority: String
    public let maxReceiveMessageSize: Int
    private let session: HTTP2Session
    private var calls: [Int32: Call] = [:]
    /// Response messages of streaming calls not taken yet (kept after the call completes).
    private var streamedMessages: [Int32: [[UInt8]]] = [:]
    /// Set when the server sent GOAWAY: no new calls go on this connection.
    public private(set) var isGoingAway = false

    public init(authority: String, maxReceiveMessageSize: Int = 4 << 20,
                settings: HTTP2Settings = HTTP2Settings()) throws(HTTP2Error) {
        self.authority = authority
        self.maxReceiveMessageSize = maxReceiveMessageSize
        self.session = try HTTP2Session(role: .client, settings: settings)
    }

    /// True when nghttp2 has nothing left to read or write: the session is over (GOAWAY).
    public var isFinished: Bool { !session.wantsRead && !session.wantsWrite }

    /// Calls waiting for their response.
    public var activeCalls: Int { calls.count }

    /// True while the peer's stream limit leaves room for another call.
    public var hasCapacity: Bool {
        !isGoingAway && UInt32(calls.count) < session.remoteMaxConcurrentStreams
    }

    /// Opens a stream for a unary call and queues its request. Returns the stream id that
    /// identifies the call in completions.
    public func startCall(path: String, message: [UInt8], metadata: Metadata = Metadata(),
                          timeout: Duration? = nil) throws(HTTP2Error) -> Int32 {
        let id = try session.submitRequest(headers: requestHeaders(path, metadata, timeout), body: Wire.frame(message))
        calls[id] = Call()
        return id
    }

    /// Opens a stream for a streaming call: request messages go with `send`, the request side
    /// ends with `closeSend`; response messages are collected for `takeMessages`, and the
    /// completion (a response with no message, or the status) comes from `receive`.
    public func startStreamingCall(path: String, metadata: Metadata = Metadata(),
                                   timeout: Duration? = nil) throws(HTTP2Error) -> Int32 {
        let id = try session.submitRequest(headers: requestHeaders(path, metadata, timeout), body: [], open: true)
        calls[id] = Call(streaming: true)
        return id
    }

    /// Queues one request message of a streaming call.
    public func send(streamID: Int32, _ message: [UInt8]) throws(HTTP2Error) {
        try session.appendBody(streamID: streamID, Wire.frame(message))
    }

    /// Ends the request side of a streaming call (END_STREAM after the queued messages).
    public func closeSend(streamID: Int32) throws(HTTP2Error) {
        try session.endBody(streamID: streamID, trailers: nil)
    }

    /// Response messages of a streaming call received since the last call.
    public func takeMessages(streamID: Int32) -> [[UInt8]] {
        streamedMessages.removeValue(forKey: streamID) ?? []
    }

    private func requestHeaders(_ path: String, _ metadata: Metadata, _ timeout: Duration?) -> [HeaderField] {
        var headers = [
            HeaderField(":method", "POST"),
            HeaderField(":scheme", "http"),
            HeaderField(":path", path),
            HeaderField(":authority", authority),
            HeaderField("content-type", Wire.contentType),
            HeaderField("te", "trailers"),
            HeaderField("user-agent", "swift-dtm"),
        ]
        if let timeout { headers.append(HeaderField("grpc-timeout", Wire.formatTimeout(timeout))) }
        headers += metadata.headerFields
        return headers
    }

    /// Gives up on a call (deadline, caller cancelled): resets its stream and returns the
    /// completion to deliver, or nil when the call already finished.
    public func cancel(streamID: Int32, with error: RPCError) -> GRPCCallCompletion? {
        guard calls.removeValue(forKey: streamID) != nil else { return nil }
        try? session.resetStream(streamID, code: .cancel)
        return GRPCCallCompletion(streamID: streamID, result: .failure(error))
    }

    /// The connection is gone: every open call fails with `error`.
    public func failAll(_ error: RPCError) -> [GRPCCallCompletion] {
        defer { calls = [:] }
        return calls.keys.sorted().map { GRPCCallCompletion(streamID: $0, result: .failure(error)) }
    }

    /// Feeds bytes read from the socket; returns the calls that finished.
    /// A thrown error is fatal for the connection (then use `failAll`).
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2Error) -> [GRPCCallCompletion] {
        var completions: [GRPCCallCompletion] = []
        for event in try session.receive(bytes) {
            handle(event, into: &completions)
        }
        return completions
    }

    public func receive(_ bytes: [UInt8]) throws(HTTP2Error) -> [GRPCCallCompletion] {
        try bytes.withUnsafeBytes { raw in Result { () throws(HTTP2Error) in try receive(raw) } }.get()
    }

    public func drainOutput(_ sink: (UnsafeRawBufferPointer) -> Void) throws(HTTP2Error) {
        try session.drainOutput(sink)
    }

    public func pendingOutput() throws(HTTP2Error) -> [UInt8] {
        try session.pendingOutput()
    }

    private func handle(_ event: HTTP2Event, into completions: inout [GRPCCallCompletion]) {
        switch event {
        case .headers(let id, let fields, let endStream):
            guard var call = calls[id] else { return }
            if call.responseHeaders == nil {
                if let error = Self.checkResponseHeaders(fields) {
                    finish(id, .failure(error), into: &completions)
                    try? session.resetStream(id, code: .cancel)
                    return
                }
                call.responseHeaders = fields
                calls[id] = call
                // Trailers-only: the status is in this same block.
                if endStream { finish(id, result(call: call, trailers: fields), into: &completions) }
            } else {
                finish(id, result(call: call, trailers: fields), into: &completions)
            }
        case .headersTooLarge(let id, let listSize, let limit, _):
            guard calls[id] != nil else { return }
            finish(id, .failure(RPCError(.resourceExhausted,
                "response header list of \(listSize) bytes exceeds the limit of \(limit) bytes")), into: &completions)
            try? session.resetStream(id, code: .cancel)
        case .data(let id, let bytes):
            guard var call = calls[id] else { return }
            calls[id] = nil  // drop our reference so the append does not copy the buffer
            call.buffer.append(contentsOf: bytes)
            if call.streaming { cutMessages(&call, id) }
            if call.buffer.count > maxReceiveMessageSize + 5 {
                finish(id, .failure(RPCError(.resourceExhausted,
                    "response exceeds the maximum message size of \(maxReceiveMessageSize) bytes")),
                    into: &completions, alreadyRemoved: true)
                try? session.resetStream(id, code: .cancel)
                return
            }
            calls[id] = call
        case .endStream(let id):
            // DATA with END_STREAM and no trailers: the server never sent a status.
            finish(id, .failure(RPCError(.internal, "stream ended without grpc-status trailers")), into: &completions)
        case .streamClosed(let id, let code):
            guard calls[id] != nil else { return }
            let refused = HTTP2ErrorCode(rawValue: code) == .refusedStream
            let error: RPCError = switch HTTP2ErrorCode(rawValue: code) {
            case .cancel?: RPCError(.cancelled, "stream reset by the server (CANCEL)")
            case .refusedStream?: RPCError(.unavailable, "stream refused by the server")
            case .enhanceYourCalm?: RPCError(.resourceExhausted, "server asked to slow down (ENHANCE_YOUR_CALM)")
            default: RPCError(.internal, "stream closed by the server with HTTP/2 error \(code)")
            }
            finish(id, .failure(error), into: &completions, unprocessed: refused)
        case .goAway(let lastStreamID, _):
            isGoingAway = true
            // Streams the server never processed can safely be retried elsewhere.
            for id in calls.keys.sorted() where id > lastStreamID {
                finish(id, .failure(RPCError(.unavailable, "server is going away (GOAWAY)")), into: &completions,
                       unprocessed: true)
            }
        }
    }

    /// Moves the complete messages at the front of a streaming call's buffer to `streamedMessages`.
    private func cutMessages(_ call: inout Call, _ id: Int32) {
        var start = 0
        while let length = Wire.declaredLength(Array(call.buffer[start..<min(start + 5, call.buffer.count)])),
              call.buffer.count - start >= 5 + length {
            streamedMessages[id, default: []].append(Array(call.buffer[(start + 5)..<(start + 5 + length)]))
            start += 5 + length
        }
        if start > 0 { call.buffer.removeFirst(start) }
    }

    private func finish(_ id: Int32, _ result: Result<GRPCResponse, RPCError>,
                        into completions: inout [GRPCCallCompletion], alreadyRemoved: Bool = false,
                        unprocessed: Bool = false) {
        guard alreadyRemoved || calls.removeValue(forKey: id) != nil else { return }
        completions.append(GRPCCallCompletion(streamID: id, result: result, unprocessed: unprocessed))
    }

    private static func checkResponseHeaders(_ fields: [HeaderField]) -> RPCError? {
        let status = fields[":status"].flatMap { Int($0) } ?? 0
        if status != 200 {
            // Some servers put a real gRPC status next to a non-200 HTTP status; prefer it.
            if let code = fields["grpc-status"].flatMap({ Int($0) }).flatMap(GRPCStatusCode.init(rawValue:)), code != .ok {
                return RPCError(code, fields["grpc-message"].map(Wire.percentDecode) ?? "HTTP status \(status)")
            }
            return RPCError(GRPCStatusCode(httpStatus: status), "unexpected HTTP status \(status)")
        }
        if !Wire.isGRPCContentType(fields["content-type"]) {
            return RPCError(.unknown, "response content-type '\(fields["content-type"] ?? "")' is not gRPC")
        }
        return nil
    }

    private func result(call: Call, trailers: [HeaderField]) -> Result<GRPCResponse, RPCError> {
        guard let rawStatus = trailers["grpc-status"] else {
            return .failure(RPCError(.internal, "response trailers carry no grpc-status"))
        }
        guard let code = Int(rawStatus).flatMap(GRPCStatusCode.init(rawValue:)) else {
            return .failure(RPCError(.unknown, "invalid grpc-status '\(rawStatus)'"))
        }
        let trailing: Metadata
        let initial: Metadata
        do throws(RPCError) {
            trailing = try Metadata(headers: trailers)
            initial = try Metadata(headers: call.responseHeaders ?? [])
        } catch {
            return .failure(error)
        }
        guard code == .ok else {
            let message = trailers["grpc-message"].map(Wire.percentDecode) ?? ""
            return .failure(RPCError(code, message, metadata: trailing))
        }
        if call.streaming {
            guard call.buffer.isEmpty else {
                return .failure(RPCError(.internal, "stream ended inside a response message"))
            }
            return .success(GRPCResponse(message: [], metadata: initial, trailers: trailing))
        }
        return Wire.unaryMessage(from: call.buffer, maxSize: maxReceiveMessageSize).map {
            GRPCResponse(message: $0, metadata: initial, trailers: trailing)
        }
    }
}
