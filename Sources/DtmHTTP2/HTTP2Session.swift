import CNghttp2
#if canImport(Glibc)
import Glibc
#endif

/// Owns one `nghttp2_session` in memory mode: feed it the bytes read from the peer with
/// `receive`, take what it wants to send with `drainOutput`. No sockets, no threads.
///
/// Not thread-safe: use a session from one thread or event loop only. nghttp2 callbacks
/// only record events here; nothing re-enters `mem_recv`/`mem_send` from inside a callback.
public final class HTTP2Session {
    public enum Role: Sendable { case server, client }

    public let role: Role
    private let session: OpaquePointer
    private let state: SessionState

    /// Creates the session and queues our SETTINGS frame (a server's first frame; a client's
    /// first frame after the connection preface, which nghttp2 adds itself).
    public init(role: Role, settings: HTTP2Settings = HTTP2Settings()) throws(HTTP2Error) {
        self.role = role
        self.state = SessionState(maxHeaderListSize: Int(settings.maxHeaderListSize))

        var callbacks: OpaquePointer?
        try check(nghttp2_session_callbacks_new(&callbacks))
        guard let callbacks else { throw HTTP2Error.library(code: -901, message: "out of memory", fatal: true) }
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunkRecv)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)
        if HTTP2Session.traceFrames {
            nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSendTrace)
            nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, onFrameNotSendTrace)
        }

        var option: OpaquePointer?
        try check(nghttp2_option_new(&option))
        defer { nghttp2_option_del(option) }

        var created: OpaquePointer?
        let userData = Unmanaged.passUnretained(state).toOpaque()
        switch role {
        case .server: try check(nghttp2_session_server_new2(&created, callbacks, userData, option))
        case .client: try check(nghttp2_session_client_new2(&created, callbacks, userData, option))
        }
        guard let created else { throw HTTP2Error.library(code: -901, message: "out of memory", fatal: true) }
        self.session = created

        var iv = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: settings.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: settings.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: settings.maxHeaderListSize),
        ]
        if role == .client {
            iv.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        try check(nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), iv, iv.count))
        try check(nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0,
                                                        settings.connectionWindowSize))
    }

    deinit {
        nghttp2_session_del(session)
    }

    /// Parses bytes read from the peer and returns what happened, in order.
    /// A thrown error is fatal for the connection: send what `drainOutput` still has
    /// (nghttp2 queues a GOAWAY for protocol errors), then close.
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2Error) -> [HTTP2Event] {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count > 0 else {
            return []
        }
        let consumed = nghttp2_session_mem_recv(session, base, bytes.count)
        let events = state.takeEvents()
        if consumed < 0 { throw HTTP2Session.error(Int32(consumed)) }
        return events
    }

    /// Convenience for tests and small inputs.
    public func receive(_ bytes: [UInt8]) throws(HTTP2Error) -> [HTTP2Event] {
        try bytes.withUnsafeBytes { raw in Result { () throws(HTTP2Error) in try receive(raw) } }.get()
    }

    /// Hands every byte nghttp2 wants to send to `sink`, in order, until it has nothing left.
    /// The buffer passed to `sink` is only valid during the call.
    public func drainOutput(_ sink: (UnsafeRawBufferPointer) -> Void) throws(HTTP2Error) {
        while true {
            var chunk: UnsafePointer<UInt8>?
            let length = nghttp2_session_mem_send(session, &chunk)
            if length < 0 { throw HTTP2Session.error(Int32(length)) }
            guard length > 0, let chunk else { return }
            sink(UnsafeRawBufferPointer(start: chunk, count: length))
        }
    }

    /// Everything nghttp2 wants to send now, as one array.
    public func pendingOutput() throws(HTTP2Error) -> [UInt8] {
        var out: [UInt8] = []
        try drainOutput { out.append(contentsOf: $0) }
        return out
    }

    /// Server: answers a request. With `trailers`, the body is followed by a trailing HEADERS
    /// frame that ends the stream; with an empty body and no trailers, the HEADERS frame ends it.
    public func respond(streamID: Int32, headers: [HeaderField], body: [UInt8],
                        trailers: [HeaderField]?) throws(HTTP2Error) {
        if body.isEmpty && trailers == nil {
            try submitHeadersOnly(streamID: streamID, headers: headers)
            return
        }
        state.outgoing[streamID] = OutgoingBody(bytes: body, trailers: trailers)
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readBody)
        let rv = withNV(headers) { nghttp2_submit_response(session, streamID, $0, $1, &provider) }
        if rv != 0 {
            state.outgoing[streamID] = nil
            throw HTTP2Session.error(rv)
        }
    }

    /// Server: sends the response headers now and leaves the body open: it grows with
    /// `appendBody` and ends with `endBody`. While nothing is queued the stream's data source
    /// is deferred (no busy polling); `appendBody` resumes it.
    public func startResponse(streamID: Int32, headers: [HeaderField]) throws(HTTP2Error) {
        state.outgoing[streamID] = OutgoingBody(bytes: [], trailers: nil, open: true)
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readBody)
        let rv = withNV(headers) { nghttp2_submit_response(session, streamID, $0, $1, &provider) }
        if rv != 0 {
            state.outgoing[streamID] = nil
            throw HTTP2Session.error(rv)
        }
    }

    /// Queues more body bytes on a stream opened with `startResponse` or
    /// `submitRequest(open: true)`. nghttp2 pulls them as the peer's flow-control window allows;
    /// `unsentBodyBytes` tells how much still waits here.
    public func appendBody(streamID: Int32, _ bytes: [UInt8]) throws(HTTP2Error) {
        guard var body = state.outgoing[streamID], body.open else { throw HTTP2Error.invalidStream(streamID) }
        state.outgoing[streamID] = nil  // drop our reference so the append does not copy
        body.append(bytes)
        let deferred = body.deferred
        body.deferred = false
        state.outgoing[streamID] = body
        if deferred { _ = nghttp2_session_resume_data(session, streamID) }
    }

    /// Ends an open body: with `trailers` a trailing HEADERS frame ends the stream, without
    /// them the last DATA frame does.
    public func endBody(streamID: Int32, trailers: [HeaderField]?) throws(HTTP2Error) {
        guard var body = state.outgoing[streamID], body.open else { throw HTTP2Error.invalidStream(streamID) }
        body.open = false
        body.trailers = trailers
        let deferred = body.deferred
        body.deferred = false
        state.outgoing[streamID] = body
        if deferred { _ = nghttp2_session_resume_data(session, streamID) }
    }

    /// Body bytes queued on the stream that nghttp2 has not taken yet (flow control holds them).
    public func unsentBodyBytes(streamID: Int32) -> Int {
        state.outgoing[streamID].map { $0.bytes.count - $0.offset } ?? 0
    }

    /// Body bytes nghttp2 took from the stream since the last call (for writers' backpressure).
    public func takeSentBodyBytes(streamID: Int32) -> Int {
        guard var body = state.outgoing[streamID] else { return 0 }
        let sent = body.sent
        if sent > 0 {
            body.sent = 0
            state.outgoing[streamID] = body
        }
        return sent
    }

    /// Server: one HEADERS frame that ends the stream (e.g. a gRPC trailers-only response).
    public func submitHeadersOnly(streamID: Int32, headers: [HeaderField]) throws(HTTP2Error) {
        let rv = withNV(headers) { nghttp2_submit_response(session, streamID, $0, $1, nil) }
        if rv != 0 { throw HTTP2Session.error(rv) }
    }

    /// Client: opens a stream with `headers` and sends `body`, ending the stream after it.
    /// Returns the new stream's id.
    /// With `open`, the body stays open after `body` for `appendBody` / `endBody` (streaming).
    public func submitRequest(headers: [HeaderField], body: [UInt8], open: Bool = false) throws(HTTP2Error) -> Int32 {
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readBody)
        let streamID = withNV(headers) { nghttp2_submit_request(session, nil, $0, $1, &provider, nil) }
        if streamID < 0 { throw HTTP2Session.error(streamID) }
        // nghttp2 pulls the body only from mem_send, so it is in place before it is read.
        state.outgoing[streamID] = OutgoingBody(bytes: body, trailers: nil, open: open)
        return streamID
    }

    /// Sends RST_STREAM; the stream's pending output is dropped.
    public func resetStream(_ streamID: Int32, code: HTTP2ErrorCode) throws(HTTP2Error) {
        state.outgoing[streamID] = nil
        let rv = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, code.rawValue)
        if rv != 0 { throw HTTP2Session.error(rv) }
    }

    /// Server: first step of a graceful shutdown, a GOAWAY that tells the client to open no
    /// new streams while those in flight continue.
    public func shutdownNotice() throws(HTTP2Error) {
        let rv = nghttp2_submit_shutdown_notice(session)
        if rv != 0 { throw HTTP2Session.error(rv) }
    }

    /// Final GOAWAY naming the last stream we processed; the connection may close once
    /// `wantsRead` and `wantsWrite` are both false.
    /// `debugData` is opaque diagnostic text for the peer (RFC 9113 §6.8).
    public func goAway(code: HTTP2ErrorCode = .noError, debugData: [UInt8] = []) throws(HTTP2Error) {
        let last = nghttp2_session_get_last_proc_stream_id(session)
        let rv = debugData.withUnsafeBufferPointer {
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, code.rawValue,
                                  $0.baseAddress, $0.count)
        }
        if rv != 0 { throw HTTP2Session.error(rv) }
    }

    /// False once a GOAWAY was exchanged and no stream is left: the connection may close.
    public var wantsRead: Bool { nghttp2_session_want_read(session) != 0 }
    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    /// The peer's advertised SETTINGS_MAX_CONCURRENT_STREAMS.
    public var remoteMaxConcurrentStreams: UInt32 {
        nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
    }

    /// `DTM_HTTP2_TRACE=1` prints every frame sent (and every frame nghttp2 refused to send) to
    /// stderr: a debugging aid for protocol problems, off by default.
    static let traceFrames = getenv("DTM_HTTP2_TRACE").map { String(cString: $0) == "1" } ?? false

    private static func error(_ code: Int32) -> HTTP2Error {
        .library(code: code, message: String(cString: nghttp2_strerror(code)), fatal: nghttp2_is_fatal(code) != 0)
    }
}

private func check(_ rv: Int32) throws(HTTP2Error) {
    if rv != 0 {
        throw HTTP2Error.library(code: rv, message: String(cString: nghttp2_strerror(rv)), fatal: true)
    }
}

/// A body (and optional trailers) waiting for nghttp2 to pull it through `readBody`.
private struct OutgoingBody {
    var bytes: [UInt8]
    var offset = 0
    var trailers: [HeaderField]?
    /// More bytes may follow (a streaming body): running dry defers instead of ending.
    var open = false
    /// `readBody` returned NGHTTP2_ERR_DEFERRED: new bytes must resume the stream.
    var deferred = false
    /// Bytes taken by nghttp2 since `takeSentBodyBytes` last asked.
    var sent = 0

    mutating func append(_ more: [UInt8]) {
        if offset == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            offset = 0
        } else if offset > 64 << 10 && offset > bytes.count / 2 {
            bytes.removeFirst(offset)
            offset = 0
        }
        bytes.append(contentsOf: more)
    }
}

/// What the C callbacks write to; read by the owning session after each nghttp2 call.
private final class SessionState {
    var events: [HTTP2Event] = []
    var headerBlocks: [Int32: HeaderBlock] = [:]
    var outgoing: [Int32: OutgoingBody] = [:]
    /// Our advertised SETTINGS_MAX_HEADER_LIST_SIZE, enforced per header block as it is decoded.
    let maxHeaderListSize: Int

    init(maxHeaderListSize: Int) {
        self.maxHeaderListSize = maxHeaderListSize
    }

    func takeEvents() -> [HTTP2Event] {
        defer { events = [] }
        return events
    }

    /// Appends an event; the first of a batch reserves room for a typical batch (a unary call
    /// is four or five events), instead of the array growing 1, 2, 4, 8 each time.
    func record(_ event: HTTP2Event) {
        if events.capacity == 0 { events.reserveCapacity(8) }
        events.append(event)
    }

    static func from(_ userData: UnsafeMutableRawPointer?) -> SessionState? {
        guard let userData else { return nil }
        return Unmanaged<SessionState>.fromOpaque(userData).takeUnretainedValue()
    }
}

/// A header block being decoded. HPACK lets a few wire bytes name a large table entry again
/// and again, so the decoded size is counted as it grows (RFC 9113 §6.5.2: name + value + 32
/// per field) and the fields are dropped once it passes the limit: an oversized block costs
/// nothing more than its count.
private struct HeaderBlock {
    var fields: [HeaderField] = []
    var listSize = 0
    var tooLarge = false

    mutating func add(name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>, limit: Int) {
        let (size, overflow) = listSize.addingReportingOverflow(name.count &+ value.count &+ 32)
        listSize = overflow ? .max : size
        guard listSize <= limit else {
            // Keep decoding (the HPACK table must stay in step with the peer) but keep nothing.
            tooLarge = true
            fields = []
            return
        }
        // A gRPC request or response head has 4-8 fields: one allocation, not four growths.
        if fields.capacity == 0 { fields.reserveCapacity(8) }
        fields.append(HeaderField(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
    }
}

/// Calls `body` with an nghttp2 name/value array for `fields`; the array and the strings
/// it points to live only during the call (nghttp2 copies them). Both live in scoped temporary
/// storage (on the stack when small): a header block costs no heap allocation here.
private func withNV<R>(_ fields: [HeaderField], _ body: (UnsafePointer<nghttp2_nv>?, Int) -> R) -> R {
    var size = 1
    for field in fields { size += field.name.utf8.count + field.value.utf8.count }
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: size) { storage in
        withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(fields.count, 1)) { nva in
            guard let base = storage.baseAddress, let entries = nva.baseAddress else { return body(nil, 0) }
            var offset = 0
            func copy(_ text: String) -> (UnsafeMutablePointer<UInt8>, Int) {
                let start = base + offset
                let copied = text.utf8.withContiguousStorageIfAvailable { source in
                    if let from = source.baseAddress { start.update(from: from, count: source.count) }
                    return source.count
                }
                if let copied {
                    offset += copied
                } else {
                    for byte in text.utf8 {
                        base[offset] = byte
                        offset += 1
                    }
                }
                return (start, base + offset - start)
            }
            for (index, field) in fields.enumerated() {
                let (name, nameLength) = copy(field.name)
                let (value, valueLength) = copy(field.value)
                (entries + index).initialize(to: nghttp2_nv(name: name, value: value, namelen: nameLength,
                                                            valuelen: valueLength,
                                                            flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
            }
            base[offset] = 0
            return body(UnsafePointer(entries), fields.count)
        }
    }
}

// MARK: - C callbacks: record events only, never call back into nghttp2 (except the
// documented nghttp2_submit_trailer from a data source read callback).

private let onBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
    guard let frame, let state = SessionState.from(userData) else { return 0 }
    state.headerBlocks[frame.pointee.hd.stream_id] = HeaderBlock()
    return 0
}

private let onHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
    guard let frame, let state = SessionState.from(userData) else { return 0 }
    state.headerBlocks[frame.pointee.hd.stream_id, default: HeaderBlock()].add(
        name: UnsafeBufferPointer(start: name, count: nameLength),
        value: UnsafeBufferPointer(start: value, count: valueLength), limit: state.maxHeaderListSize)
    return 0
}

private let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
    guard let frame, let state = SessionState.from(userData) else { return 0 }
    let header = frame.pointee.hd
    let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
    switch Int(header.type) {
    case Int(NGHTTP2_HEADERS.rawValue):
        let block = state.headerBlocks.removeValue(forKey: header.stream_id) ?? HeaderBlock()
        if block.tooLarge {
            state.record(.headersTooLarge(streamID: header.stream_id, listSize: block.listSize,
                                                 limit: state.maxHeaderListSize, endStream: endStream))
        } else {
            state.record(.headers(streamID: header.stream_id, fields: block.fields, endStream: endStream))
        }
    case Int(NGHTTP2_DATA.rawValue):
        if endStream { state.record(.endStream(streamID: header.stream_id)) }
    case Int(NGHTTP2_GOAWAY.rawValue):
        let goaway = frame.pointee.goaway
        state.record(.goAway(lastStreamID: goaway.last_stream_id, errorCode: goaway.error_code))
    default:
        break
    }
    return 0
}

private let onDataChunkRecv: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
    guard let state = SessionState.from(userData) else { return 0 }
    state.record(.data(streamID: streamID, bytes: Array(UnsafeBufferPointer(start: data, count: length))))
    return 0
}

private let onStreamClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
    guard let state = SessionState.from(userData) else { return 0 }
    state.outgoing[streamID] = nil
    state.headerBlocks[streamID] = nil
    state.record(.streamClosed(streamID: streamID, errorCode: errorCode))
    return 0
}

private func traceLine(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

private let onFrameSendTrace: nghttp2_on_frame_send_callback = { session, frame, _ in
    guard let frame else { return 0 }
    let header = frame.pointee.hd
    let role = nghttp2_session_check_server_session(session) != 0 ? "server" : "client"
    traceLine("h2 \(role) sent type=\(header.type) stream=\(header.stream_id) length=\(header.length) flags=\(header.flags)")
    return 0
}

private let onFrameNotSendTrace: nghttp2_on_frame_not_send_callback = { session, frame, errorCode, _ in
    guard let frame else { return 0 }
    let header = frame.pointee.hd
    let role = nghttp2_session_check_server_session(session) != 0 ? "server" : "client"
    traceLine("h2 \(role) NOT sent type=\(header.type) stream=\(header.stream_id) error=\(errorCode)")
    return 0
}

private let readBody: nghttp2_data_source_read_callback = { session, streamID, buffer, length, flags, _, userData in
    guard let state = SessionState.from(userData), let flags else {
        return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue)
    }
    guard var body = state.outgoing[streamID] else {
        flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
        return 0
    }
    let count = min(length, body.bytes.count - body.offset)
    if count > 0, let buffer {
        body.bytes.withUnsafeBufferPointer { source in
            if let start = source.baseAddress { buffer.update(from: start + body.offset, count: count) }
        }
    }
    if count == 0 && body.open {
        body.deferred = true
        state.outgoing[streamID] = body
        return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    }
    body.offset += count
    guard body.offset == body.bytes.count, !body.open else {
        if body.open { body.sent += count }
        state.outgoing[streamID] = body
        return count
    }
    state.outgoing[streamID] = nil
    flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
    if let trailers = body.trailers {
        flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
        let rv = withNV(trailers) { nghttp2_submit_trailer(session, streamID, $0, $1) }
        if rv != 0 { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
    }
    return count
}
