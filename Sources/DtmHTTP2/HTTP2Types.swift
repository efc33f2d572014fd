/// One header field. Names arrive lowercase from nghttp2; pseudo-headers start with ":".
public struct HeaderField: Sendable, Equatable, Hashable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

extension Array where Element == HeaderField {
    /// The value of the first field called `name` (names are lowercase on the wire).
    public subscript(name: String) -> String? {
        first { $0.name == name }?.value
    }
}

/// Something the peer did, reported by `HTTP2Session.receive` after nghttp2 has parsed it.
public enum HTTP2Event: Sendable, Equatable {
    /// A complete header block: request headers (server), response headers or trailers (client).
    case headers(streamID: Int32, fields: [HeaderField], endStream: Bool)
    /// A header block whose decoded size (name + value + 32 per field, RFC 9113 §6.5.2) passed
    /// our SETTINGS_MAX_HEADER_LIST_SIZE; its fields were dropped as they were decoded. The
    /// stream is still open: answer it with an error (431 / RESOURCE_EXHAUSTED) or reset it.
    case headersTooLarge(streamID: Int32, listSize: Int, limit: Int, endStream: Bool)
    /// A chunk of a DATA frame's payload.
    case data(streamID: Int32, bytes: [UInt8])
    /// The peer ended its side of the stream with a DATA frame.
    case endStream(streamID: Int32)
    /// The stream is gone; `errorCode` is 0 when it ended normally, else the RST_STREAM code.
    case streamClosed(streamID: Int32, errorCode: UInt32)
    /// The peer is shutting the connection down; streams above `lastStreamID` were not processed.
    case goAway(lastStreamID: Int32, errorCode: UInt32)
}

/// HTTP/2 error codes used in RST_STREAM and GOAWAY (RFC 9113 §7).
public enum HTTP2ErrorCode: UInt32, Sendable {
    case noError = 0x0
    case protocolError = 0x1
    case internalError = 0x2
    case flowControlError = 0x3
    case refusedStream = 0x7
    case cancel = 0x8
    case enhanceYourCalm = 0xb
}

/// Why a session operation failed.
public enum HTTP2Error: Error, Equatable, Sendable, CustomStringConvertible {
    /// nghttp2 rejected a call or the peer's bytes; `fatal` means the connection must close.
    case library(code: Int32, message: String, fatal: Bool)
    /// A response or request was submitted for a stream that cannot take it.
    case invalidStream(Int32)

    public var description: String {
        switch self {
        case .library(let code, let message, let fatal):
            return "nghttp2 error \(code): \(message)\(fatal ? " (fatal)" : "")"
        case .invalidStream(let id):
            return "stream \(id) cannot take this frame"
        }
    }
}

/// What we advertise to the peer in our SETTINGS frame.
public struct HTTP2Settings: Sendable, Equatable {
    /// Streams the peer may open at once; nghttp2 refuses more (REFUSED_STREAM, or a connection
    /// error once the peer has acknowledged the setting).
    public var maxConcurrentStreams: UInt32
    /// Per-stream receive window.
    public var initialWindowSize: UInt32
    /// Connection-level receive window.
    public var connectionWindowSize: Int32
    /// Largest decoded header block accepted (RFC 9113 counting); larger ones are reported as
    /// `HTTP2Event.headersTooLarge` without keeping their fields.
    public var maxHeaderListSize: UInt32

    public init(maxConcurrentStreams: UInt32 = 100, initialWindowSize: UInt32 = 1 << 20,
                connectionWindowSize: Int32 = 16 << 20, maxHeaderListSize: UInt32 = 16 << 10) {
        self.maxConcurrentStreams = maxConcurrentStreams
        self.initialWindowSize = initialWindowSize
        self.connectionWindowSize = connectionWindowSize
        self.maxHeaderListSize = maxHeaderListSize
    }
}
